"""The compression environment, its reward registry and action wrappers.

Importing this package registers `autocompress/NetCompress-v0`, so that
`gymnasium.make("autocompress/NetCompress-v0", config="experiments/quickstart.yaml")` works.
"""

from __future__ import annotations

import gymnasium as gym

from autocompress.envs.evaluator import EnvData, Evaluator
from autocompress.envs.net_compress import NetCompressEnv
from autocompress.envs.rewards import REWARDS, Outcome, register
from autocompress.envs.wrappers import DiscreteActions

ENV_ID = "autocompress/NetCompress-v0"

if ENV_ID not in gym.registry:
    # Measured latency varies run to run; flops and lut modes are exactly reproducible per seed.
    gym.register(id=ENV_ID, entry_point="autocompress.envs.factory:build_env", nondeterministic=True)

__all__ = ["ENV_ID", "REWARDS", "DiscreteActions", "EnvData", "Evaluator", "NetCompressEnv", "Outcome", "register"]
