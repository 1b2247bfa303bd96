"""experiments/report.py (the run report) and experiments/harness.py (figure helpers)."""

import base64
import json
import math
import struct
import zlib

import numpy as np
import pytest

from experiments import harness, report
from experiments.claims import Claim, write_claims


def _png_1x1() -> bytes:
    """A valid 1×1 grey PNG, built by hand (no plotting library needed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))


def _make_run(root, name, run_id, claims, *, manifest=None, config=None, figure=True):
    d = root / name / run_id
    d.mkdir(parents=True)
    write_claims(claims, d / "claims.json")
    if manifest is not None:
        (d / "manifest.json").write_text(json.dumps(manifest))
    if config is not None:
        (d / "config.json").write_text(json.dumps(config))
    if figure:
        (d / "figure.png").write_bytes(_png_1x1())
    return d


def test_report_lists_every_run_with_its_claims_figure_and_command(tmp_path):
    ok = Claim("slope in range", "in [0.9, 1.1]", 1.01, "interval", True, "note a|b")
    bad = Claim("exponent", 2.0, 1.0, 0.1, False, "")
    _make_run(tmp_path, "fig-one", "abc123", [ok, bad],
              manifest={"experiment": "fig-one", "paper": "Somebody 2025, arXiv 1234.5678",
                        "command": "toyreason run fig-one --seed 0 --seeds 5",
                        "wall_s": 12.34, "status": "complete"},
              config={"seed": 0, "n_seeds": 5, "eta": 0.02})
    # An older / partial run: no manifest, no config, no figure, the older key names absent.
    _make_run(tmp_path / "nested", "fig-two", "def456", [ok], figure=False)
    md_path, html_path = report.build(tmp_path)
    assert (md_path, html_path) == (tmp_path / "report.md", tmp_path / "report.html")
    md, page = md_path.read_text(), html_path.read_text()

    assert "2 run(s); 2/3 claims hold." in md
    assert ("| fig-one | Somebody 2025, arXiv 1234.5678 | 1/2 | complete | 12.3 s "
            "| `fig-one/abc123` |") in md
    assert "`toyreason run fig-one --seed 0 --seeds 5`" in md
    assert "![fig-one](fig-one/abc123/figure.png)" in md
    assert "| exponent | 2 | 1 | 0.1 | NO |  |" in md
    assert "note a\\|b" in md  # a '|' in a note must not break the table
    assert '"eta": 0.02' in md
    # The partial run is named after its parent directory and reported as unknown.
    assert "| fig-two | unknown | 1/1 | unknown | unknown | `nested/fig-two/def456` |" in md

    # HTML: self-contained (the PNG inline as base64), failed claims marked, text escaped.
    assert "data:image/png;base64," + base64.b64encode(_png_1x1()).decode() in page
    assert 'src="fig-one' not in page and "http" not in page
    assert '<tr class="no"><td>exponent</td>' in page
    assert "Somebody 2025, arXiv 1234.5678" in page and "2/3 claims hold" in page


def test_report_reads_the_alternative_manifest_keys(tmp_path):
    _make_run(tmp_path, "dir-name", "x", [], figure=False,
              manifest={"name": "fig-three", "wall_time_s": 3.0, "reproduce": "toyreason run x"})
    md = report.build(tmp_path)[0].read_text()
    assert "## fig-three" in md and "3.0 s" in md and "`toyreason run x`" in md
    assert "No claims recorded." in md


def test_report_of_an_empty_directory_and_of_a_missing_one(tmp_path):
    md = report.build(tmp_path)[0].read_text()
    assert "0 run(s); 0/0 claims hold." in md
    (tmp_path / "broken" / "r").mkdir(parents=True)
    (tmp_path / "broken" / "r" / "claims.json").write_text("{not json")
    assert "1 run(s); 0/0 claims hold." in report.build(tmp_path)[0].read_text()
    with pytest.raises(FileNotFoundError):
        report.build(tmp_path / "nope")


def test_report_says_what_is_missing_and_why_a_run_failed(tmp_path):
    # an empty directory says that it holds no runs, not only "0 run(s)"
    assert "No runs found here" in report.build(tmp_path)[0].read_text()
    from helpers import FakeConfig, fake_module

    from experiments.runner import execute

    with pytest.raises(RuntimeError):
        execute(fake_module(fail_in_run=True), FakeConfig(value=2.0), tmp_path)
    # claims.json that parses but is not a list of claims is damaged, not "no claims",
    # and a claim whose verdict is not JSON true does not count as held
    _make_run(tmp_path, "fig", "list-of-numbers", [], figure=False)
    (tmp_path / "fig" / "list-of-numbers" / "claims.json").write_text("[1, 2]")
    d = _make_run(tmp_path, "fig", "string-verdict", [], figure=False)
    (d / "claims.json").write_text('[{"name": "c", "holds": "false"}]')
    md, page = (p.read_text() for p in report.build(tmp_path))
    assert "No runs found" not in md
    assert "- Status: failed" in md and "- Error: RuntimeError" in md
    assert "<li>Error: RuntimeError" in page
    assert "| `fig/list-of-numbers` |" in md and "damaged: claims.json is unreadable" in md
    assert "3 run(s); 0/1 claims hold." in md


# ----------------------------------------------------------------------- harness helpers
def test_report_says_which_runs_are_not_complete(tmp_path):
    """Runs written by the runner: a failed first run (a manifest, no claims yet), a completed
    run whose rerun failed, and a damaged claims.json are all named in the summary and their
    Status, never shown as runs with nothing to say."""
    from helpers import FakeConfig, fake_module

    from experiments.runner import execute

    execute(fake_module(), FakeConfig(value=1.0), tmp_path)
    with pytest.raises(RuntimeError):
        execute(fake_module(fail_in_run=True), FakeConfig(value=1.0), tmp_path)  # rerun
    with pytest.raises(RuntimeError):
        execute(fake_module(fail_in_run=True), FakeConfig(value=2.0), tmp_path)  # first run
    broken = execute(fake_module(), FakeConfig(value=3.0), tmp_path)
    (broken / "claims.json").write_text('{"broken')
    md = report.build(tmp_path)[0].read_text()
    assert "3 run(s); 1/1 claims hold. 2 run(s) not complete" in md
    assert "| complete (last rerun: failed) |" in md and "| failed |" in md
    assert "damaged: claims.json is unreadable" in md
    assert "- Error: last rerun: RuntimeError" in md  # the failed rerun says why


def test_sign_claim_reports_the_mean_and_decides_on_the_interval():
    """values 1, 2, 3: mean 2, t-interval 2 ± 4.303 * 1/sqrt(3) = [-0.48, 4.48]."""
    up = harness.sign_claim("rises", +1, [1.0, 2.0, 3.0], "n")
    assert up.measured == 2.0 and not up.holds and "lower end -0.4841" in up.tolerance
    down = harness.sign_claim("falls", -1, [-3.0, -3.1, -2.9], "n")
    assert down.measured == pytest.approx(-3.0) and down.holds


def test_seed_aggregate_t_interval():
    # (1, 2, 3): mean 2, s = 1, sem = 1/sqrt 3, t_{0.975, 2} = 4.3027: 2 ± 2.4841
    agg = harness.seed_aggregate([1.0, 2.0, 3.0])
    assert agg.mean == 2.0 and agg.n == 3
    assert (agg.lo, agg.hi) == (pytest.approx(2 - 2.48414, abs=1e-4),
                                pytest.approx(2 + 2.48414, abs=1e-4))
    # Per column over the seed axis; one seed has no interval.
    cols = harness.seed_aggregate(np.array([[0.0, 1.0], [2.0, 1.0]]))
    np.testing.assert_allclose(cols.mean, [1.0, 1.0])
    np.testing.assert_allclose(cols.hi - cols.lo, [2 * 12.7062, 0.0], rtol=1e-4)  # t_{.975,1}
    assert math.isnan(harness.seed_aggregate([5.0]).lo)


def test_linear_fit_hand_values():
    fit = harness.linear_fit([0, 1, 2], [1, 3, 5])  # y = 2x + 1 exactly
    assert (fit.slope, fit.intercept, fit.r2) == (pytest.approx(2), pytest.approx(1), 1.0)
    assert fit.slope_se == pytest.approx(0.0, abs=1e-12)
    # y = (0, 2, 1) on x = (0, 1, 2): slope 1/2, intercept 1/2, residuals (−1/2, 1, −1/2):
    # SSR = 3/2, SST = 2, R² = 1/4, se(slope) = sqrt(1.5/1/2) = sqrt(3)/2
    fit = harness.linear_fit([0, 1, 2], [0, 2, 1])
    assert (fit.slope, fit.intercept, fit.r2) == (pytest.approx(.5), pytest.approx(.5),
                                                  pytest.approx(.25))
    assert fit.slope_se == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(harness.linear_fit([1, 1], [0, 1]).slope)
    # Power law y = 3 x²: log-log slope 2.
    assert harness.loglog_fit([1, 2, 4], [3, 12, 48]).slope == pytest.approx(2.0)


def test_wrong_predictions():
    np.testing.assert_array_equal(harness.wrong_prediction([1.0, -2.0], "flip"), [-1.0, 2.0])
    np.testing.assert_array_equal(harness.wrong_prediction([1.0, -2.0], "double"), [2.0, -4.0])
    res = {"pred": np.array([1.0]), "meas": np.array([1.0])}
    bad = harness.corrupt(res, ["pred"], "flip")
    assert bad["pred"][0] == -1.0 and res["pred"][0] == 1.0 and bad["meas"] is res["meas"]
    with pytest.raises(ValueError):
        harness.wrong_prediction([1.0], "halve")


SAVE_A_FIGURE = """
import sys
from experiments import harness
fig, axes = harness.new_figure(2)
for ax in axes:
    ax.plot([0, 1, 2], [1.0, 0.5, 0.25], label="curve")
    ax.fill_between([0, 1, 2], [0.9, 0.4, 0.2], [1.1, 0.6, 0.3], alpha=0.2)
    ax.legend()
harness.save_figure(fig, sys.argv[1])
"""


def test_the_same_figure_saved_in_two_processes_gives_identical_files(tmp_path):
    # matplotlib salts SVG element ids at random per process unless told otherwise.
    import subprocess
    import sys

    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", SAVE_A_FIGURE, str(tmp_path / name)], check=True)
    for file in ("figure.svg", "figure.png"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_non_finite_numbers_are_written_as_strict_json(tmp_path):
    """README: in claims.json and metrics.json NaN and ±inf are the strings "nan", "inf",
    "-inf" (a claim measured on nothing, a diverged seed), so a strict parser reads both."""
    from toymodels import runs

    def strict(text):
        def refuse(constant):
            raise ValueError(f"non-standard JSON constant {constant}")
        return json.loads(text, parse_constant=refuse)

    write_claims([Claim("c", float("inf"), float("nan"), float("-inf"), False)],
                 tmp_path / "claims.json")
    (got,) = strict((tmp_path / "claims.json").read_text())
    assert (got["predicted"], got["measured"], got["tolerance"]) == ("inf", "nan", "-inf")
    runs.save_metrics(tmp_path, {"final": np.float64("nan"),
                                 "curve": np.array([[1.0, 2.0], [np.inf, np.nan]])})
    metrics = strict((tmp_path / "metrics.json").read_text())
    assert metrics["final"] == "nan" and metrics["curve"]["final_mean"] == "nan"
