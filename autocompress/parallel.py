"""Where a batch of schedules is scored: in this process, or on Ray workers.

A search is hundreds of independent "prune this schedule and score it" evaluations. With `backend: ray`
each worker holds its own `Evaluator`, built once from the unpruned network, the held-out tensors and the
latency table, which go to Ray's object store once; a batch is spread over the workers and the results come
back in the order the agent proposed them, so the search learns from them in a fixed order whatever the
number of workers. A worker that dies is restarted by Ray and its call is retried (no episode lost).

Measured latency is not timed on the workers: parallel evaluations would slow each other's timings down.
With `latency_mode: measured` the workers score accuracy only and this process times each new network
alone, one after the other, against the unpruned one (`Evaluator.evaluate(..., timing=...)`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from autocompress.config import AutocompressError, SearchConfig
from autocompress.envs.evaluator import Evaluator, check_inputs
from autocompress.envs.rewards import Outcome

Result = tuple[Outcome, dict[str, Any]]


class BackendError(AutocompressError):
    """A backend cannot start as configured; the message says what to install or change."""


class LocalBackend:
    """Scores schedules one after the other in this process (today's behaviour; workers must be 1)."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def evaluate(self, schedules: Sequence[Mapping[str, float]], steps_s: Sequence[float] = (),
                 precisions: Sequence[Mapping[str, str] | None] = ()) -> list[Result]:
        steps = list(steps_s) or [0.0] * len(schedules)
        precs = list(precisions) or [None] * len(schedules)
        return [self.evaluator.evaluate(s, t, p) for s, t, p in zip(schedules, steps, precs, strict=True)]

    def close(self) -> None:
        pass


class RayBackend:
    """Scores a batch on `workers` Ray actors; results merged into this process's evaluator cache."""

    def __init__(self, evaluator: Evaluator, cfg: SearchConfig) -> None:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # bind to 127.0.0.1, not the LAN
        try:
            import ray
        except ImportError:
            raise BackendError('search.backend "ray" needs Ray: pip install -e ".[ray]"') from None
        self.ray = ray
        self.evaluator = evaluator
        self._started = not ray.is_initialized()
        if self._started:
            try:
                ray.init(address=cfg.address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
            except Exception as exc:  # a wrong --address surfaces as ConnectionError, ValueError, ...
                raise BackendError(f"could not start or join Ray{f' at {cfg.address}' if cfg.address else ''} "
                                   f"({type(exc).__name__}: {str(exc)[:200]}); check search.address / --address."
                                   ) from None
        env_cfg = evaluator.cfg
        if env_cfg.latency_mode == "measured":  # timed here, alone; the workers only score accuracy (the
            # reward is computed here from the timed outcome, so a latency reward is not theirs to check)
            env_cfg = dataclasses.replace(env_cfg, latency_mode="flops", budget_kind="macs", reward="acc",
                                          reward_kwargs={}, eval_early_stop=0.0)  # no reward to stop on there
        # A worker whose construction fails would be restarted forever (max_restarts=-1): refuse here instead.
        check_inputs(evaluator.data, env_cfg, evaluator.lut)
        refs = [ray.put(x) for x in (evaluator.model, evaluator.data, evaluator.lut)]
        worker = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=-1)(_Worker)
        threads = torch.get_num_threads()
        self.workers = [worker.remote(*refs, env_cfg, threads) for _ in range(cfg.workers)]

    def evaluate(self, schedules: Sequence[Mapping[str, float]], steps_s: Sequence[float] = (),
                 precisions: Sequence[Mapping[str, str] | None] = ()) -> list[Result]:
        ev = self.evaluator
        steps = list(steps_s) or [0.0] * len(schedules)
        precs = list(precisions) or [None] * len(schedules)
        keys = [ev.network_key(s, p) for s, p in zip(schedules, precs, strict=True)]
        todo: dict[tuple[int, ...], int] = {}
        for i, key in enumerate(keys):
            if key not in ev.cache and key not in todo:
                todo[key] = i
        calls = [self.workers[n % len(self.workers)].evaluate.remote(dict(schedules[i]), steps[i], precs[i])
                 for n, i in enumerate(todo.values())]
        fresh: dict[int, Result] = {}
        for (key, i), (outcome, info) in zip(todo.items(), self.ray.get(calls), strict=True):
            if ev.meter is not None:
                outcome, info = ev.with_measured_latency(schedules[i], outcome, info, precs[i])
            ev.cache[key] = (outcome, info)
            fresh[i] = (outcome, info)
        # In proposal order; a repeat (in the batch or from before) comes from the cache, as it would locally.
        return [fresh[i] if i in fresh else ev.evaluate(s, t, p)
                for i, (s, t, p) in enumerate(zip(schedules, steps, precs, strict=True))]

    def close(self) -> None:
        for w in self.workers:
            self.ray.kill(w)
        self.workers = []
        if self._started:
            self.ray.shutdown()


class _Worker:
    """One Ray actor: an Evaluator built from the object store's copies."""

    def __init__(self, model: Any, data: Any, lut: Any, env_cfg: Any, threads: int) -> None:
        torch.set_num_threads(threads)  # the same arithmetic as the driver, so results match it exactly
        self.evaluator = Evaluator(model, data, env_cfg, lut=lut)

    def evaluate(self, schedule: dict[str, float], steps_s: float, precision: dict[str, str] | None = None) -> Result:
        outcome, info = self.evaluator.evaluate(schedule, steps_s, precision)
        return outcome, {**info, "worker_pid": os.getpid()}


BACKENDS = {"local": LocalBackend, "ray": RayBackend}


def make_backend(evaluator: Evaluator, cfg: SearchConfig) -> LocalBackend | RayBackend:
    """The configured backend (config `search.backend`, CLI --backend)."""
    if cfg.backend == "local":
        return LocalBackend(evaluator)
    return BACKENDS[cfg.backend](evaluator, cfg)
