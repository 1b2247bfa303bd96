"""The jit-compiled RL engine.

* ``advantages``: estimators by name (reinforce, rloo, grpo, dr_grpo) and reward scaling.
* ``objectives``: clipped surrogate, KL estimators (k1, k2, k3, exact), entropy, loss
  aggregations by name (token-mean, sequence-mean-token-mean, sequence-mean-token-sum-norm).
* ``exact``: exact expected reward, policy gradient, KL and pass@k for enumerable spaces.
* ``rollout``, ``step``, ``metrics``: one RL step as a pure function.
* ``config.RLConfig`` and ``train.make_train(config) -> train(key)``.
"""

from toymodels.rl import advantages, exact, objectives
from toymodels.rl.config import RLConfig

__all__ = ["RLConfig", "advantages", "exact", "objectives"]
