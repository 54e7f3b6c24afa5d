"""Agents that learn per-group prune ratios; they see only arrays and Gymnasium spaces.

`DDPGAgent` (continuous ratios, as AMC), `DQNAgent` (discrete ratio bins), and the baselines
`RandomAgent` (random search), `UniformAgent` (one fixed action) and `ScheduleAgent` (a fixed action
per step), all following `Agent`.
"""

from autocompress.agents.base import Agent, AgentError
from autocompress.agents.baselines import RandomAgent, ScheduleAgent, UniformAgent
from autocompress.agents.ddpg import DDPGAgent
from autocompress.agents.dqn import DQNAgent
from autocompress.agents.replay import Batch, ReplayBuffer

__all__ = [
    "Agent",
    "AgentError",
    "Batch",
    "DDPGAgent",
    "DQNAgent",
    "RandomAgent",
    "ReplayBuffer",
    "ScheduleAgent",
    "UniformAgent",
]
