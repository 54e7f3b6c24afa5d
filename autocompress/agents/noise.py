"""Truncated-normal exploration noise (AMC): actions stay inside [low, high] without clipping mass to the edges."""

from __future__ import annotations

import numpy as np
import torch
from torch.special import ndtr, ndtri


def truncated_normal(
    mu: np.ndarray, sigma: float, rng: np.random.Generator, low: float = 0.0, high: float = 1.0
) -> np.ndarray:
    """Sample N(mu, sigma) truncated to [low, high] by inverse CDF with the caller's Generator."""
    mu = np.clip(np.asarray(mu, dtype=np.float64), low, high)
    if sigma <= 0:
        return mu
    a = ndtr(torch.from_numpy((low - mu) / sigma)).numpy()
    b = ndtr(torch.from_numpy((high - mu) / sigma)).numpy()
    u = a + rng.random(mu.shape) * (b - a)
    x = mu + sigma * ndtri(torch.from_numpy(np.clip(u, 1e-12, 1 - 1e-12))).numpy()
    return np.clip(x, low, high)


class TruncatedNormalNoise:
    """Noise whose sigma decays geometrically per episode once warm-up is over."""

    def __init__(self, sigma: float, decay: float, warmup_episodes: int) -> None:
        self.sigma0 = float(sigma)
        self.decay = float(decay)
        self.warmup_episodes = int(warmup_episodes)

    def sigma_at(self, episode: int) -> float:
        """Sigma for the `episode`-th episode (0-based); sigma0 until warm-up ends."""
        return self.sigma0 * self.decay ** max(0, episode - self.warmup_episodes)

    def __call__(self, mu: np.ndarray, episode: int, rng: np.random.Generator) -> np.ndarray:
        return truncated_normal(mu, self.sigma_at(episode), rng)
