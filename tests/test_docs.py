"""The code in the docs runs as written: each ``python`` block named here is executed in a
fresh interpreter (so a task it registers does not leak into the other tests)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def block_after(doc: str, heading: str) -> str:
    text = (ROOT / doc).read_text()
    return python_blocks_of(text[text.index(heading):])[0]


def python_blocks_of(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("doc, heading", [
    ("README.md", "## Using it as a library"),
    ("docs/architecture.md", "### Adding a task"),
    ("docs/architecture.md", "### Adding an experiment"),
])
def test_doc_snippet_runs(doc, heading, tmp_path):
    code = block_after(doc, heading)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
