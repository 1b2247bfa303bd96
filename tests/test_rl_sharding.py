"""The same RL step data-parallel over a ``jax.sharding`` mesh (4 CPU devices forced with
XLA_FLAGS in a subprocess) equals the single-device step to float tolerance."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import jax, numpy as np
    from jax.sharding import AxisType
    from toymodels.config import ModelConfig
    from toymodels.model import init
    from toymodels.rl.config import RLConfig
    from toymodels.rl.train import make_train

    assert jax.device_count() == 4, jax.devices()
    model = init(ModelConfig(vocab_size=7, max_len=8, n_layers=1, n_heads=1, d_model=16,
                             d_mlp=0, init_scale=0.5), jax.random.key(0))
    config = RLConfig(task="seq/copy", task_config={"length": 3, "n_symbols": 4},
                      group_size=4, prompts_per_step=4, steps=2, chunk_size=2, lr=1e-2,
                      kl_coef=0.05, entropy_coef=0.01, n_seeds=2)
    single = make_train(config, init=model)()
    # Seeds over one mesh axis, each seed's completions over the other.
    mesh = jax.make_mesh((2, 2), ("seed", "batch"), axis_types=(AxisType.Auto,) * 2)
    sharded = make_train(config, init=model, mesh=mesh)()
    leaves = jax.tree.leaves(sharded[0])
    assert any(len(x.sharding.device_set) > 1 for x in leaves), "params not on the mesh"
    for name in single[1]:
        if name == "first_ratio_err":
            # max |log pi - log pi_old| is 0 up to rounding in both runs: its value *is* the
            # rounding of a reduction order (1e-7 vs 2e-6 seen), so only its size is compared.
            assert max(np.max(single[1][name]), np.max(sharded[1][name])) < 1e-5, name
            continue
        np.testing.assert_allclose(single[1][name], sharded[1][name], rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    paths = jax.tree_util.tree_leaves_with_path(single[0])
    for (path, a), b in zip(paths, jax.tree.leaves(sharded[0]), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if "b_QKV" in jax.tree_util.keystr(path):
            # The key bias adds q.b_k to every key's score, which softmax ignores: its exact
            # gradient is 0, and Adam (m / sqrt(v)) turns the float noise of a different
            # reduction order into lr-sized steps. Compare the query and value biases only.
            a, b = a[:, [0, 2]], b[:, [0, 2]]
        # Adam's step is lr * m / sqrt(v) (lr = 1e-2): a coordinate with a small gradient
        # turns reduction-order rounding into up to ~1e-5 after 2 steps (seen on one CPU);
        # a dropped shard changes the gradient's direction and moves parameters by O(lr),
        # 100x the tolerance (a uniformly mis-scaled gradient, which Adam cancels, is caught
        # by the grad-norm metric above at rtol 1e-5).
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4, err_msg=jax.tree_util.keystr(path))
    print("ok")
""")


def test_sharded_step_equals_single_device(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
