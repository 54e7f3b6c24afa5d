"""Fuzz every input a user hands autocompress; each must end in a project error, never a traceback.

    python scripts/fuzz.py --cases 1000 [--seed 0] [--json docs/benchmarks/fuzz.json]

Classes of input: schedule JSON files, experiment YAML configs, CLI arguments, the env's `step()`
(continuous and discrete), search checkpoints (bit flips, truncation, planted pickles) and pruned-model
files. Each case is a valid input of a tiny real setup (tiny_cnn on scikit-learn's digits) with one
defect put in. Outcomes:
- `error`: a project error (AutocompressError; on the CLI exit 2 with a one-line message) - wanted;
- `ok`: accepted - fine only where the defect may leave the input valid (random bytes, a finite value
  clipped by the env); a case built to be invalid that is accepted counts as `silent`;
- `traceback`: any other exception (or a CLI run that printed one); `hang`: over `--timeout` seconds.
The last line is `fuzz: N cases, T tracebacks, H hangs, S silent`; the JSON lists every failing case.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import math
import os
import pickle
import random
import resource
import shlex
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from plot_utils import cpu_model

from autocompress import checkpoint
from autocompress.atomic import atomic_write
from autocompress.cli import main as cli_main
from autocompress.config import AutocompressError, ExperimentConfig, load_config
from autocompress.envs import DiscreteActions
from autocompress.export import load_pruned, save_pruned
from autocompress.pipeline import build
from autocompress.pruning import Schedule
from autocompress.pruning.schedule import check_fits
from autocompress.search import Search, make_agent

BASE_CONFIG = {
    "name": "fuzz",
    "model": {"name": "tiny_cnn"},
    "data": {"name": "digits", "val_size": 120, "batch_size": 64},
    "pretrain": {"epochs": 1, "lr": 0.05},
    "env": {"budget": 0.5, "val_images": 120, "latency_mode": "flops", "bn_recalib_batches": 1},
    "search": {"agent": "ddpg", "episodes": 3, "seed": 0, "checkpoint_every": 1},
    "ddpg": {"warmup_episodes": 1, "batch_size": 4},
    "dqn": {"warmup_episodes": 1, "batch_size": 4, "bins": 5},
    "finetune": {"epochs": 1, "lr": 0.01, "max_batches": 2},
}
BAD_NUMBERS: list[Any] = [float("nan"), float("inf"), float("-inf"), "0.5x", [], {}, None, True]


class Hang(Exception):
    """Raised by the alarm when a case runs past its time limit."""


@dataclass
class Case:
    kind: str
    name: str
    run: Callable[[], Any]
    must_fail: bool = True
    """Built to be invalid: accepting it is a silent failure."""


@dataclass
class Fixture:
    """The real objects every case starts from (built once)."""

    cfg: ExperimentConfig
    env: Any
    num_classes: int
    tmp: Path
    schedule: dict[str, Any]
    pruned_payload: dict[str, Any]
    checkpoint_bytes: bytes


def build_fixture(tmp: Path) -> Fixture:
    cfg = load_config({**BASE_CONFIG, "search": {**BASE_CONFIG["search"], "out_dir": str(tmp / "run")}})
    env, bundle = build(cfg, progress=False)
    with Search(cfg, env, tmp / "run") as search:
        search.run(progress=False)
    ratios = {g.name: 0.5 for g in env.pruner.groups}
    schedule = Schedule.from_pruner(env.pruner, ratios, cfg.model.name)
    pruned = env.evaluator.compress(ratios)
    save_pruned(tmp / "pruned.pt", pruned, schedule, cfg.model.name, bundle.num_classes, env.input_shape[0],
                env.input_shape)
    payload = torch.load(tmp / "pruned.pt", weights_only=True)
    (tmp / "schedule.json").write_text(schedule.to_json())
    (tmp / "empty").mkdir()
    return Fixture(cfg, env, bundle.num_classes, tmp, json.loads(schedule.to_json()), payload, (tmp / "run" / "checkpoint.pt").read_bytes())


# ----------------------------------------------------------------------------------------- generators
def _write(fx: Fixture, name: str, data: bytes | str) -> Path:
    path = fx.tmp / "cases" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def _bytes_mutations(rng: random.Random, good: bytes) -> list[tuple[str, bytes, bool]]:
    """Damage that may (rarely) leave a valid file: callers decide whether it must fail."""
    flipped = bytearray(good)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(flipped))
        flipped[i] ^= 1 << rng.randrange(8)
    return [("truncated", good[: rng.randrange(len(good))], False), ("bit_flips", bytes(flipped), False),
            ("random_bytes", rng.randbytes(rng.randint(0, 2048)), False), ("empty", b"", True),
            ("non_utf8", good[:10] + b"\xff\xfe\x80" + good[10:], True)]


def schedule_case(rng: random.Random, fx: Fixture) -> Case:
    data = json.loads(json.dumps(fx.schedule))
    g = rng.choice(data["groups"])
    choice = rng.randrange(14)
    must = True
    if choice == 0:
        bad = rng.choice([-0.1, 1.0, 1.5, *BAD_NUMBERS])
        g["prune_ratio"], name = bad, f"prune_ratio={bad!r}"
    elif choice == 1:
        contradicts = max(1, round(g["channels_before"] * (1 - g["prune_ratio"])) // 3)  # below any rounding
        bad = rng.choice([0, -1, g["channels_before"] + 1, "3", 2.5, None, contradicts])
        g["channels_after"], name = bad, f"channels_after={bad!r} (ratio {g['prune_ratio']})"
    elif choice == 2:
        key = rng.choice(sorted(g))
        del g[key]
        name = f"group key {key} missing"
    elif choice == 3:
        key = rng.choice(["model", "groups", "format", "version"])
        del data[key]
        name = f"top key {key} missing"
    elif choice == 4:
        (g if rng.random() < 0.5 else data)["surprise"] = 1
        name = "unknown key"
    elif choice == 5:
        g["name"], name = "no.such.layer", "unknown group name"
    elif choice == 6:
        data["groups"].append(dict(g))
        name = "duplicate group"
    elif choice == 7:
        data["groups"].remove(g)
        name = "a group missing" if data["groups"] else "no groups"
    elif choice == 8:
        data["model"]["structure_hash"], name = "0" * 16, "another model's structure hash"
    elif choice == 9:
        key, bad = rng.choice([("format", "other"), ("version", 99), ("version", "1"), ("groups", {}),
                               ("model", "tiny_cnn"), ("budget", [1]), ("metrics", "x")])
        data[key], name = bad, f"{key}={bad!r}"
    elif choice == 10:
        data, name = rng.choice([[], "schedule", 3, None, True]), "top level not an object"
    elif choice == 11:
        text = "[" * rng.choice([1000, 100_000]) + "]" * 10
        return Case("schedule", "deeply nested", lambda: _load_schedule(fx, _write(fx, "deep.json", text)))
    else:
        label, blob, must = rng.choice(_bytes_mutations(rng, json.dumps(fx.schedule).encode()))
        return Case("schedule", label, lambda: _load_schedule(fx, _write(fx, "bytes.json", blob)), must)
    text = json.dumps(data)
    return Case("schedule", name, lambda: _load_schedule(fx, _write(fx, "schedule.json", text)), must)


def _load_schedule(fx: Fixture, path: Path) -> None:
    check_fits(Schedule.load(path), fx.env.pruner)


def _leaves(d: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for k, v in d.items():
        out += _leaves(v, (*prefix, k)) if isinstance(v, dict) else [(*prefix, k)]
    return out


def _set(d: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for k in path[:-1]:
        d = d.setdefault(k, {})
    d[path[-1]] = value


KNOWN_BAD_VALUES = [
    (("search", "seed"), -1), (("search", "episodes"), 0), (("finetune", "lr"), -0.1),
    (("finetune", "momentum"), -0.5), (("finetune", "label_smoothing"), 2), (("ddpg", "replay_size"), 0),
    (("ddpg", "tau"), 2), (("ddpg", "batch_size"), 0), (("finetune", "max_batches"), 0),
    (("ddpg", "discount"), float("nan")), (("data", "batch_size"), 0), (("env", "budget"), 1.5),
    (("env", "max_ratio"), 1.0), (("dqn", "bins"), 1), (("search", "agent"), "bogus"),
    (("model", "name"), "no_such_model"), (("data", "name"), "no_such_data"), (("env", "reward"), "bogus"),
]


def config_case(rng: random.Random, fx: Fixture) -> Case:
    data = json.loads(json.dumps(BASE_CONFIG))
    choice = rng.randrange(9)
    must = True
    if choice == 0:
        path = rng.choice(_leaves(data))
        bad = rng.choice(BAD_NUMBERS if isinstance(_get(data, path), int | float) else [[], {}, 3.5])
        _set(data, path, bad)
        text, name = yaml.safe_dump(data), f"{'.'.join(path)}={bad!r}"
    elif choice == 1:
        path, bad = rng.choice(KNOWN_BAD_VALUES)
        _set(data, path, bad)
        text, name = yaml.safe_dump(data), f"{'.'.join(path)}={bad!r}"
    elif choice == 2:
        section = rng.choice([*(k for k, v in data.items() if isinstance(v, dict)), ""])
        (data[section] if section else data)["surprise_key"] = 1
        text, name = yaml.safe_dump(data), f"unknown key in {section or 'top level'}"
    elif choice == 3:
        path = rng.choice(_leaves(data))
        _set(data, path, rng.choice([-1, 0, 10**9, -(10**9), 1e-12]))
        text, name, must = yaml.safe_dump(data), f"{'.'.join(path)} extreme", False
    elif choice == 4:
        text, name = "search:\n  seed: 1\n  seed: 2\nmodel: {name: tiny_cnn}\n", "duplicate key"
    elif choice == 5:
        text = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
            f"{c}: &{c} [{','.join('*' + p for p in [chr(ord(c) - 1)] * 9)}]\n" for c in "bcdefghij")
        name = "alias bomb"
    elif choice == 6:
        text, name = "x: " + "[" * rng.choice([1000, 100_000]), "deeply nested"
    elif choice == 7:
        text, name = rng.choice(["- a\n- b\n", "just a string\n", "42\n", "{1: 2}\n", "model: [1\n"]), "not a mapping"
    else:
        label, blob, must = rng.choice(_bytes_mutations(rng, yaml.safe_dump(data).encode()))
        must = must and label != "empty"  # an empty config is all defaults
        return Case("config", label, lambda: _load_config(fx, _write(fx, "bytes.yaml", blob)), must)
    return Case("config", name, lambda: _load_config(fx, _write(fx, "config.yaml", text)), must)


def _get(d: dict[str, Any], path: tuple[str, ...]) -> Any:
    for k in path:
        d = d[k]
    return d


def _load_config(fx: Fixture, path: Path) -> None:
    """Load, then use what the search would use first (model name, agent with its hyper-parameters)."""
    cfg = load_config(path)
    from autocompress.data import load_data
    from autocompress.envs.rewards import get_reward
    from autocompress.models import get_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the capped val split's note
        load_data(cfg.data)
    get_reward(cfg.env.reward, cfg.env.reward_kwargs)
    get_model(cfg.model.name, num_classes=fx.num_classes, in_channels=fx.env.input_shape[0])
    agent, act_env = make_agent(replace(fx.cfg, search=cfg.search, ddpg=cfg.ddpg, dqn=cfg.dqn), fx.env)
    obs, _ = act_env.reset(seed=0)
    for _ in range(3):
        action = agent.act(obs, explore=True)
        nxt, reward, term, trunc, _ = act_env.step(action)
        agent.observe(obs, action, float(reward), nxt, bool(term))
        obs = nxt if not (term or trunc) else act_env.reset(seed=1)[0]
    agent.update()


def env_case(rng: random.Random, fx: Fixture) -> Case:
    discrete = rng.random() < 0.3
    env = DiscreteActions(fx.env, fx.cfg.dqn.bins) if discrete else fx.env
    kind = "env_discrete" if discrete else "env"
    if discrete:
        bad = rng.choice([-1, fx.cfg.dqn.bins, 2.5, "1", None, np.array([1, 2]), np.array([])])
        return Case(kind, f"action {bad!r}", lambda: _step(env, bad))
    choice = rng.randrange(4)
    if choice == 0:
        bad = rng.choice([np.array([]), np.zeros(3), np.zeros((1, 1, 2)), "0.5", None,
                          np.array([math.nan]), np.array([math.inf]), np.array([-math.inf])])
        return Case(kind, f"action {bad!r}", lambda: _step(env, bad))
    if choice == 1:
        return Case(kind, "step after termination", lambda: _step_after_end(env))
    if choice == 2:
        return Case(kind, "step before reset", lambda: _step_fresh(fx))
    value = rng.choice([5.0, -3.0, 1e30])
    return Case(kind, f"finite out-of-range action {value}", lambda: _step(env, np.array([value], np.float32)), False)


def _step(env: Any, action: Any) -> None:
    env.reset(seed=0)
    env.step(action)


def _step_after_end(env: Any) -> None:
    env.reset(seed=0)
    while True:
        *_, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            break
    env.step(env.action_space.sample())


def _step_fresh(fx: Fixture) -> None:
    from autocompress.envs import NetCompressEnv

    env = NetCompressEnv(fx.env.model, fx.env.data, fx.cfg.env, model_name="tiny_cnn")
    env.step(np.array([0.5], np.float32))


def checkpoint_case(rng: random.Random, fx: Fixture) -> Case:
    marker = fx.tmp / "planted-ran"
    choice = rng.randrange(3)
    if choice == 0:
        label, blob, _ = rng.choice(_bytes_mutations(rng, fx.checkpoint_bytes))
        return Case("checkpoint", label, lambda: _load_ckpt(_write(fx, "c.pt", blob), marker))
    if choice == 1:
        blob = _planted(rng, str(marker))
        return Case("checkpoint", "planted pickle", lambda: _load_ckpt(_write(fx, "c.pt", blob), marker))
    head = fx.checkpoint_bytes.split(b"\n", 2)
    header = json.loads(head[1])
    header[rng.choice(["version", "bytes", "sha256"])] = rng.choice([0, "x", None, 10**12])
    blob = head[0] + b"\n" + json.dumps(header).encode() + b"\n" + head[2]
    return Case("checkpoint", "header altered", lambda: _load_ckpt(_write(fx, "c.pt", blob), marker))


class _Planted:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def _planted(rng: random.Random, marker: str) -> bytes:
    obj = {"format": "autocompress.checkpoint", "agent": _Planted(marker)}
    if rng.random() < 0.5:
        return pickle.dumps(obj)
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _load_ckpt(path: Path, marker: Path) -> None:
    try:
        checkpoint.load(path)
    finally:
        if marker.exists():
            marker.unlink()
            raise RuntimeError("a planted pickle ran code")  # counted as a traceback: never acceptable


def pruned_case(rng: random.Random, fx: Fixture) -> Case:
    payload = dict(fx.pruned_payload)
    choice = rng.randrange(4)
    if choice == 0:
        key = rng.choice(sorted(payload))
        del payload[key]
        name = f"key {key} missing"
    elif choice == 1:
        key = rng.choice(sorted(payload))
        payload[key] = rng.choice([None, 3, "x", [], {}])
        name = f"{key}={payload[key]!r}"
    elif choice == 2:
        payload["model"] = {**payload["model"], rng.choice(sorted(payload["model"])): rng.choice([None, -1, "x", []])}
        name = "model spec altered"
    else:
        buf = io.BytesIO()
        torch.save(fx.pruned_payload, buf)
        label, blob, _ = rng.choice(_bytes_mutations(rng, buf.getvalue()))
        return Case("pruned_file", label, lambda: load_pruned(_write(fx, "p.pt", blob)), label in ("empty",))
    return Case("pruned_file", name, lambda: load_pruned(_save(fx, "p.pt", payload)))


def _save(fx: Fixture, name: str, payload: Any) -> Path:
    path = fx.tmp / "cases" / name
    atomic_write(path, lambda f: torch.save(payload, f))
    return path


def cli_case(rng: random.Random, fx: Fixture) -> Case:
    out = str(fx.tmp / "cases" / "cli-out.json")
    sched = str(fx.tmp / "schedule.json")
    argvs = [
        ["schedule", "uniform", "--model", "tiny_cnn", "--flops", rng.choice(["-1", "0", "1.5", "nan", "inf", "abc"]),
         "--out", out],
        ["schedule", "uniform", "--model", rng.choice(["bogus", "tv:bogus", "", "tv:"]), "--flops", "0.5", "--out", out],
        ["schedule", "uniform", "--model", "tiny_cnn", "--input-shape", rng.choice(["3,x", "0,8,8", "", "-1,8,8", "1,8",
                                                                                    "1,8,8,8,8"]),
         "--flops", "0.5", "--out", out],
        ["schedule", "uniform", "--model", "tiny_cnn", "--num-classes", rng.choice(["0", "-3", "x"]), "--flops", "0.5",
         "--out", out],
        ["apply", "--model", rng.choice(["tiny_cnn", "cifar10_resnet20"]), "--schedule",
         rng.choice([str(fx.tmp / "missing.json"), str(fx.tmp)]), "--out", str(fx.tmp / "cases" / "p2.pt")],
        ["export-schedule", str(fx.tmp / rng.choice(["missing", "cases"])), "--out", out],
        ["search", str(fx.tmp / "missing.yaml"), "--out", str(fx.tmp / "cases" / "run")],
        ["search", "--resume", str(fx.tmp / rng.choice(["missing", "pruned.pt", "empty"]))],
        ["search", "experiments/quickstart.yaml", "--episodes", rng.choice(["0", "-5", "x"]), "--out",
         str(fx.tmp / "cases" / "run-e")],
        ["train", "--model", "tiny_cnn", "--data", rng.choice(["digits", "bogus"]), "--epochs",
         rng.choice(["-1", "x"]), "--out", str(fx.tmp / "cases" / "train")],
        ["train", "--model", "tiny_cnn", "--data", "digits", "--lr", rng.choice(["-1", "nan", "0"]), "--out",
         str(fx.tmp / "cases" / "train")],
        ["evaluate", "--model", "tiny_cnn", "--data", "digits", "--weights",
         rng.choice([str(fx.tmp / "missing.pt"), str(fx.tmp / "schedule.json"), str(fx.tmp / "pruned.pt")])],
        ["finetune", "--model", "tiny_cnn", "--schedule", sched, "--data", "digits", "--epochs",
         rng.choice(["-2", "x"]), "--out", str(fx.tmp / "cases" / "ft")],
        ["lut", "build", "--model", rng.choice(["bogus", "tiny_cnn"]), "--runtime", "bogus", "--out", out],
        [rng.choice(["bogus", "--bogus", ""])],
    ]
    argv = rng.choice(argvs)
    return Case("cli", " ".join(argv), lambda: _cli(argv))


def _cli(argv: list[str]) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli_main(argv)
        except SystemExit as exc:  # argparse: usage + one error line, exit 2
            code = exc.code
    text = err.getvalue()
    # what counts is the error itself: argparse's usage lines and earlier notes are not part of it
    lines = [ln for ln in text.strip().splitlines()
             if ln.strip() and not ln.startswith(("usage:", " ", "note:", "warning:"))]
    if "Traceback" in text or (code not in (0, 2)):
        raise RuntimeError(f"exit {code}: {text.strip()[-300:]}")
    if code == 2:
        if len(lines) != 1:
            raise RuntimeError(f"exit 2 but {len(lines)} message lines: {text.strip()[-300:]}")
        raise AutocompressError(lines[0])


GENERATORS: dict[str, tuple[Callable[[random.Random, Fixture], Case], float]] = {
    "schedule": (schedule_case, 0.25), "config": (config_case, 0.25), "cli": (cli_case, 0.15),
    "env": (env_case, 0.15), "checkpoint": (checkpoint_case, 0.1), "pruned_file": (pruned_case, 0.1),
}


# ----------------------------------------------------------------------------------------- running
def run_case(case: Case, timeout: float) -> tuple[str, str]:
    """(outcome, detail) of one case, with a time limit."""
    def alarm(*_: Any) -> None:
        raise Hang

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        case.run()
        outcome, detail = ("silent", "accepted") if case.must_fail else ("ok", "")
    except Hang:
        outcome, detail = "hang", f"over {timeout:g} s"
    except AutocompressError as exc:
        msg = str(exc)
        outcome, detail = ("error", msg) if msg and "\n" not in msg else ("traceback", f"multi-line error: {msg!r}")
    except (Exception, RecursionError, MemoryError) as exc:  # noqa: BLE001 - classifying is the point
        outcome, detail = "traceback", "".join(traceback.format_exception_only(type(exc), exc)).strip()[-400:]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return outcome, detail


def make_cases(n: int, seed: int, fx: Fixture) -> list[Case]:
    rng = random.Random(seed)
    kinds = list(GENERATORS)
    weights = [GENERATORS[k][1] for k in kinds]
    picks = kinds + rng.choices(kinds, weights, k=max(0, n - len(kinds)))  # every class at least once
    return [GENERATORS[k][0](rng, fx) for k in picks[:n]]


def fuzz(n: int, seed: int, timeout: float, progress: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="autocompress-fuzz-") as tmp:
        fx = build_fixture(Path(tmp))
        cases = make_cases(n, seed, fx)
        counts: Counter[tuple[str, str]] = Counter()
        failures = []
        start = time.perf_counter()
        for i, case in enumerate(cases):
            outcome, detail = run_case(case, timeout)
            counts[(case.kind, outcome)] += 1
            if outcome in ("traceback", "hang", "silent"):
                failures.append({"kind": case.kind, "case": case.name, "outcome": outcome, "detail": detail})
            if progress and (i + 1) % 50 == 0:
                print(f"  {i + 1}/{len(cases)} cases, {len(failures)} failing", file=sys.stderr)
    total = Counter(o for (_, o) in counts.elements())
    by_kind: dict[str, dict[str, int]] = {}
    for (kind, outcome), c in sorted(counts.items()):
        by_kind.setdefault(kind, {})[outcome] = c
    return {"cases": len(cases), "tracebacks": total["traceback"], "hangs": total["hang"], "silent": total["silent"],
            "errors": total["error"], "accepted_valid": total["ok"], "by_kind": by_kind, "failures": failures,
            "seconds": time.perf_counter() - start}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=20.0, help="seconds before a case counts as a hang")
    p.add_argument("--memory-gb", type=float, default=8.0, help="address-space cap, so a memory bomb fails fast")
    p.add_argument("--json", default=None, help="write the result here")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    limit = int(args.memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    torch.set_num_threads(1)
    result = fuzz(args.cases, args.seed, args.timeout, progress=not args.quiet)
    result.update(command="python " + " ".join(shlex.quote(a) for a in sys.argv), cpu=cpu_model(),
                  date=dt.datetime.now().astimezone().isoformat(timespec="seconds"))
    for f in result["failures"][:40]:
        print(f"{f['outcome']:9} {f['kind']:12} {f['case'][:60]:60} {f['detail'][:150]}")
    for kind, outcomes in result["by_kind"].items():
        print(f"{kind:12} " + ", ".join(f"{k} {v}" for k, v in outcomes.items()))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"fuzz: {result['cases']} cases, {result['tracebacks']} tracebacks, {result['hangs']} hangs, "
          f"{result['silent']} silent")


if __name__ == "__main__":
    main()
