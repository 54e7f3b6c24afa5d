"""Episodes per second of a ResNet-56 search with parallel evaluation (issue #16), and where an episode's time goes.

Every cell is the real search (`autocompress.search.Search`, DDPG, the same seed and `--episodes`) on one backend:

    local-b1      local backend, 1 worker, one episode per round (the loop without rounds, as before #16)
    local-b2      local backend, 1 worker, rounds of 2 episodes scored one after the other
    ray-w1        Ray, 1 worker on one node (rounds of 1)
    ray-w2        Ray, 2 workers on one node (rounds of 2)
    ray-2node-w2  Ray, 2 workers on a simulated 2-node cluster (ray.cluster_utils.Cluster: two nodes of 1 CPU)

Ray listens on 127.0.0.1 only (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, checked with ray.nodes()); each Ray cell
starts its own cluster and shuts it down. `latency_mode: flops` by default, so every cell of a round size plays
the same episodes whatever the load (the JSON says whether they did); `--measured` adds the same cells with
measured latency (timed in this process, one network at a time). The DDPG warm-up is cut to `--warmup` so that
the agent's update is timed in a short run.

Per episode, from the search's own history (`timing`: the Evaluator's steps_s, prune_s, recalib_s, eval_s,
latency_s; the search's update_s, round_propose_s and round_backend_s) and the time each episode finished:
transport = a round's backend seconds minus the slowest worker's evaluation seconds in it (minus the latency
timed here with measured latency); other = the rest of the round (logging, checkpoints). A finished cell is
kept in `--work/<cell>.json` and skipped on a rerun; the JSON is rebuilt from every finished cell. Ends with a
worked estimate of an `--target-episodes` search on `--nodes` nodes (Amdahl: the agent is serial).

    python scripts/bench_scaling.py --episodes 40 --work runs/scaling --json docs/benchmarks/scaling.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import shlex
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from plot_utils import cpu_model, run_script, write_json_atomic

from autocompress.config import ConfigError, ExperimentConfig, load_config
from autocompress.pipeline import build
from autocompress.quantize import cpu_int8_flags
from autocompress.search import Search, machine_description

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is first imported: bind to 127.0.0.1 only

PRIMARY = "experiments/resnet56-cifar10-flops50.yaml"
FALLBACK = "experiments/resnet56-cifar10jpeg-macs50.yaml"
PARTS = ("steps_s", "prune_s", "recalib_s", "eval_s", "latency_s", "quantize_s")
"""The Evaluator's per-episode timing (quantize_s only with INT8 choices)."""


@dataclass(frozen=True)
class Cell:
    """One backend setting; `nodes` 0 means no Ray (the search's own process)."""

    name: str
    backend: str
    workers: int
    batch: int
    nodes: int


CELLS = (
    Cell("local-b1", "local", 1, 1, 0),
    Cell("local-b2", "local", 1, 2, 0),
    Cell("ray-w1", "ray", 1, 1, 1),
    Cell("ray-w2", "ray", 2, 2, 1),
    Cell("ray-2node-w2", "ray", 2, 2, 2),
)


def default_config() -> str:
    """AMC's ResNet-56 setting on the CIFAR-10 subset if its data and weights are here, else the JPEG one."""
    cfg = load_config(PRIMARY)
    data = Path(cfg.data.root) / "cifar10-subset" / "cifar10_subset.npz"
    return PRIMARY if data.is_file() and Path(cfg.model.weights or "").is_file() else FALLBACK


def cell_config(base: ExperimentConfig, cell: Cell, mode: str, args: argparse.Namespace,
                run_dir: Path) -> ExperimentConfig:
    """The config of one cell: backend, workers and round size; the same episodes, seed and agent for all."""
    search = replace(base.search, agent="ddpg", episodes=args.episodes, seed=args.seed, out_dir=str(run_dir),
                     workers=cell.workers, batch_episodes=cell.batch, backend=cell.backend, address=None,
                     torch_threads=args.threads)
    return replace(base, search=search, env=replace(base.env, latency_mode=mode),
                   ddpg=replace(base.ddpg, warmup_episodes=args.warmup))


@contextlib.contextmanager
def ray_cluster(nodes: int, cpus: int) -> Iterator[dict[str, Any]]:
    """A Ray cluster of `nodes` loopback nodes (`cpus` CPUs in all), joined by this process; shut down after."""
    import ray
    from ray.cluster_utils import Cluster

    start = time.perf_counter()
    per_node = max(1, cpus // nodes)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": per_node})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=per_node)
        ray.init(address=cluster.address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        try:
            hosts = {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
            if hosts != {"127.0.0.1"} or len(ray.nodes()) != nodes:
                raise RuntimeError(f"Ray cluster not on loopback only or missing nodes: {ray.nodes()}")
            yield {"nodes": nodes, "cpus_per_node": per_node, "start_s": time.perf_counter() - start}
        finally:
            ray.shutdown()
    finally:
        cluster.shutdown()


def cluster_for(cell: Cell) -> contextlib.AbstractContextManager[dict[str, Any]]:
    """The cell's Ray cluster (one node: as many CPUs as cores, at least one per worker; several: 1 CPU each),
    or nothing for the local backend."""
    if not cell.nodes:
        return contextlib.nullcontext({})
    cpus = max(cell.workers, os.cpu_count() or 1) if cell.nodes == 1 else cell.nodes
    return ray_cluster(cell.nodes, cpus)


class TimedSearch(Search):
    """The real search; only notes when each episode finished (rounds' wall time)."""

    ends: list[float]

    def _after_episode(self, *args: Any, **kwargs: Any) -> None:
        super()._after_episode(*args, **kwargs)
        self.ends.append(time.perf_counter())


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip()]


def run_search(cfg: ExperimentConfig, env: Any, run_dir: Path, progress: bool) -> dict[str, Any]:
    """One fresh search (an unfinished one from an earlier sitting is removed: its timings would be split)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    env.evaluator.cache.clear()  # another cell's evaluations must not count as this one's
    search = TimedSearch(cfg, env, run_dir)
    search.ends = []
    start = time.perf_counter()
    try:
        result = search.run(progress=progress)
    finally:
        search.close()
    return {"start": start, "ends": search.ends, "run_s": time.perf_counter() - start, "best": result.best}


def run_cell(base: ExperimentConfig, env: Any, cell: Cell, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one cell (or read it, if finished); its record is written to --work/<name>.json."""
    name = cell.name if mode == "flops" else f"{cell.name}-{mode}"
    path = Path(args.work) / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    run_dir = Path(args.work) / name
    cfg = cell_config(base, cell, mode, args, run_dir)
    load_before = os.getloadavg()
    print(f"== {name}: {cell.backend}, {cell.workers} worker(s), rounds of {cell.batch}, "
          f"{max(cell.nodes, 1)} node(s), {mode}", file=sys.stderr)
    with cluster_for(cell) as cluster:
        run = run_search(cfg, env, run_dir, progress=not args.quiet)
    records = read_history(run_dir)
    stats = cell_stats(records, run, cell, mode, warmup=args.warmup)
    record = {"cell": name, "backend": cell.backend, "workers": cell.workers, "nodes": max(cell.nodes, 1),
              "batch_episodes": cell.batch, "latency_mode": mode, **stats,
              "cluster_start_s": cluster.get("start_s"), "run_s": run["run_s"],
              "rewards": [r["reward"] for r in records], "best_reward": run["best"].get("reward"),
              "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
              "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "run_dir": str(run_dir)}
    write_json_atomic(path, record)
    return record


def rounds_of(records: list[dict[str, Any]], batch: int) -> list[list[int]]:
    """Episode indices per round: rounds of `batch` from episode 0 (the last may be shorter)."""
    return [list(range(i, min(i + batch, len(records)))) for i in range(0, len(records), batch)]


WORK = ("prune_s", "recalib_s", "eval_s", "quantize_s")
"""What a worker does for an episode besides the latency (which is timed in this process with measured latency)."""


def worker_seconds(rec: dict[str, Any], with_latency: bool) -> float:
    """Seconds one episode's evaluation held its worker (0 when it came from the cache). Not total_s - steps_s:
    with measured latency on Ray, latency_s is this process's timing and total_s the worker's."""
    if rec.get("cached"):
        return 0.0
    t = rec["timing"]
    return sum(t.get(k, 0.0) for k in WORK) + (t.get("latency_s", 0.0) if with_latency else 0.0)


def round_breakdown(records: list[dict[str, Any]], idx: list[int], wall: float, driver_latency: bool) -> dict[str, float]:
    """One round's seconds split into proposing, the backend (workers + transport), updates and the rest."""
    recs = [records[i] for i in idx]
    t0 = recs[0]["timing"]
    update = sum(r["timing"].get("update_s", 0.0) for r in recs)
    busy: dict[Any, float] = {}
    for r in recs:
        key = r.get("worker_pid", "this process")
        busy[key] = busy.get(key, 0.0) + worker_seconds(r, with_latency=not driver_latency)
    here_latency = sum(r["timing"].get("latency_s", 0.0) for r in recs if not r.get("cached")) if driver_latency else 0.0
    if "round_backend_s" in t0:  # rounds (batch_episodes or a Ray backend)
        propose, backend = t0["round_propose_s"], t0["round_backend_s"]
        transport = backend - max(busy.values()) - here_latency
    else:  # the loop without rounds: the episode is evaluated inside the env's last step
        propose = sum(r["timing"].get("steps_s", 0.0) for r in recs if not r.get("cached"))
        backend, transport = sum(busy.values()) + here_latency, 0.0
    return {"size": len(idx), "wall_s": wall, "propose_s": propose, "backend_s": backend, "transport_s": transport,
            "update_s": update, "other_s": wall - propose - backend - update}


def median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def cell_stats(records: list[dict[str, Any]], run: dict[str, Any], cell: Cell, mode: str,
               warmup: int) -> dict[str, Any]:
    """Throughput and the per-episode medians of one cell (round medians after the first round, which also starts
    the Ray workers)."""
    driver_latency = mode == "measured" and cell.backend == "ray"
    ends, rounds = run["ends"], rounds_of(records, cell.batch)
    parts = []
    for idx in rounds:
        prev = ends[idx[0] - 1] if idx[0] else run["start"]
        parts.append(round_breakdown(records, idx, ends[idx[-1]] - prev, driver_latency))
    fresh = [r for r in records if not r.get("cached")]
    wall = ends[-1] - run["start"]
    first = len(rounds[0])
    steady = (len(records) - first) / (ends[-1] - ends[first - 1]) if len(records) > first else None
    steady_parts = parts[1:] or parts  # the first round also starts the Ray workers (first_round_s)
    per_episode = {k: [p[k] / p["size"] for p in steady_parts] for k in ("wall_s", "propose_s", "transport_s", "other_s")}
    work = [worker_seconds(r, with_latency=False) for r in fresh]
    breakdown = {k: median([r["timing"].get(k, 0.0) for r in fresh]) for k in PARTS if any(k in r["timing"] for r in fresh)}
    breakdown.update({
        "update_s": median([r["timing"].get("update_s", 0.0) for r in records[warmup:]]),
        "update_s_warmup": median([r["timing"].get("update_s", 0.0) for r in records[:warmup]]),
        "propose_s": median(per_episode["propose_s"]), "transport_s": median(per_episode["transport_s"]),
        "other_s": median(per_episode["other_s"]),
        # one evaluation without its latency part: prune, BN re-estimation, evaluation (and INT8 quantization)
        "worker_s": median(work), "worker_s_mean": float(np.mean(work)) if work else None,
        "worker_s_p90": float(np.percentile(work, 90)) if work else None,
    })
    return {"episodes": len(records), "cached_episodes": len(records) - len(fresh), "wall_s": wall,
            "episodes_per_s": len(records) / wall, "episode_s_median": median(per_episode["wall_s"]),
            "steady_episodes_per_s": steady, "first_round_s": parts[0]["wall_s"],
            "workers_seen": len({r.get("worker_pid") for r in fresh}), "breakdown_s": breakdown, "rounds": parts}


def estimate(one: dict[str, Any], dist: dict[str, Any], args: argparse.Namespace, warmup: int,
             driver_latency: bool) -> dict[str, Any]:
    """Wall time of a `target_episodes` search on `nodes` x `cores_per_node` workers, Amdahl-style.

    Parallel: the evaluations, one round of N at a time, each round as long as a slow episode (p90 of the
    1-worker cell). Serial, in this process: proposing each episode, its transport and the rest of the loop
    (measured on the distributed cell), the agent's update after every learning episode, and with measured
    latency the timing of each network here.
    """
    b1, bd = one["breakdown_s"], dist["breakdown_s"]
    n_workers = args.nodes * args.cores_per_node
    episodes = args.target_episodes
    rounds = math.ceil(episodes / n_workers)
    learning = max(0, episodes - warmup)
    measured_latency = b1.get("latency_s") or 0.0
    latency = measured_latency if driver_latency else 0.0  # serial, in the driver
    t_eval = b1["worker_s_p90"] + (0.0 if driver_latency else measured_latency)
    per_episode = bd["propose_s"] + max(bd["transport_s"], 0.0) + bd["other_s"] + latency
    update = b1["update_s"] or 0.0
    parallel, serial = rounds * t_eval, episodes * per_episode + learning * update
    mean_eval = b1["worker_s_mean"] + measured_latency  # one worker waits for no straggler
    one_worker = episodes * (mean_eval + b1["propose_s"] + b1["other_s"]) + learning * update
    total = parallel + serial
    serial_share = (episodes * (b1["propose_s"] + b1["other_s"] + latency) + learning * update) / one_worker
    formula = (
        f"T = ceil(E/N) * t_eval + E * (t_propose + t_transport + t_other{' + t_latency' if driver_latency else ''})"
        f" + (E - W) * t_update; E = {episodes} episodes, N = {args.nodes} nodes x {args.cores_per_node} cores = "
        f"{n_workers} workers (one single-threaded evaluator per core, rounds of N), W = {warmup} warm-up episodes "
        f"(no update); t_eval = {t_eval:.3f} s (p90 of one evaluation, cell {one['cell']}: a round waits for its "
        f"slowest worker), t_propose = {bd['propose_s']:.4f} s, t_transport = {max(bd['transport_s'], 0.0):.4f} s, "
        f"t_other = {bd['other_s']:.4f} s (cell {dist['cell']}, per episode, serial in the driver)"
        + (f", t_latency = {latency:.3f} s (timed in the driver, one network at a time)" if driver_latency else "")
        + f", t_update = {update:.3f} s (median agent update per learning episode, cell {one['cell']}). "
        f"T = {rounds} x {t_eval:.3f} + {episodes} x {per_episode:.4f} + {learning} x {update:.3f} = "
        f"{parallel:.0f} + {serial:.0f} = {total:.0f} s ({total / 60:.1f} min). One worker (E x (mean evaluation "
        f"{mean_eval:.3f} + t_propose + t_other) + (E - W) x t_update, cell {one['cell']}): {one_worker:.0f} s "
        f"({one_worker / 3600:.2f} h), speedup {one_worker / total:.1f}x; serial share of the 1-worker time "
        f"{serial_share:.1%}, so no number of workers beats {1 / serial_share:.1f}x (Amdahl)."
    )
    return {"formula": formula, "wall_s": total, "parallel_s": parallel, "serial_s": serial,
            "one_worker_s": one_worker, "speedup": one_worker / total, "serial_share": serial_share,
            "amdahl_limit": 1 / serial_share, "workers": n_workers, "nodes": args.nodes,
            "cores_per_node": args.cores_per_node, "episodes": episodes, "warmup_episodes": warmup}


ROW_KEYS = ("backend", "workers", "nodes", "episodes", "episodes_per_s", "episode_s_median")


def same_episodes(cells: list[dict[str, Any]]) -> dict[str, bool]:
    """Per latency mode and round size: did every cell play the same episodes (equal rewards, over the episodes
    all of them played)?"""
    groups: dict[str, list[list[float]]] = {}
    for c in cells:
        groups.setdefault(f"{c['latency_mode']}, rounds of {c['batch_episodes']}", []).append(c["rewards"])
    out = {}
    for key, runs in groups.items():
        n = min(len(r) for r in runs)
        if len(runs) > 1:
            out[key] = all(r[:n] == runs[0][:n] for r in runs)
    return out


def table(cells: list[dict[str, Any]]) -> str:
    """Markdown: throughput per cell, then the per-episode breakdown (medians, seconds)."""
    lines = ["| backend | workers | nodes | round | latency | episodes | wall s | episodes/s | steady ep/s "
             "| median s/episode |", "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for c in cells:
        steady = f"{c['steady_episodes_per_s']:.3f}" if c["steady_episodes_per_s"] else "-"
        lines.append(f"| {c['backend']} | {c['workers']} | {c['nodes']} | {c['batch_episodes']} | {c['latency_mode']} "
                     f"| {c['episodes']} | {c['wall_s']:.1f} | {c['episodes_per_s']:.3f} | {steady} "
                     f"| {c['episode_s_median']:.2f} |")
    cols = ("steps_s", "prune_s", "recalib_s", "eval_s", "latency_s", "update_s", "propose_s", "transport_s", "other_s")
    lines += ["", "| cell | " + " | ".join(c.removesuffix("_s") for c in cols) + " |",
              "|---|" + "---:|" * len(cols)]
    for c in cells:
        bd = c["breakdown_s"]
        lines.append(f"| {c['cell']} | " + " | ".join("-" if bd.get(k) is None else f"{bd[k]:.3f}" for k in cols) + " |")
    return "\n".join(lines)


def collect(work: Path) -> list[dict[str, Any]]:
    """Every finished cell under `work`, in CELLS order, flops before measured."""
    order = {c.name: i for i, c in enumerate(CELLS)}
    cells = [json.loads(p.read_text()) for p in work.glob("*.json")]
    cells = [c for c in cells if isinstance(c, dict) and "cell" in c]
    return sorted(cells, key=lambda c: (c["latency_mode"] != "flops", order.get(c["cell"].removesuffix("-measured"), 99)))


def pick(cells: list[dict[str, Any]], mode: str, names: tuple[str, ...]) -> dict[str, Any] | None:
    """The first of `names` finished in `mode`."""
    by_name = {c["cell"].removesuffix("-measured"): c for c in cells if c["latency_mode"] == mode}
    return next((by_name[n] for n in names if n in by_name), None)


def estimates(cells: list[dict[str, Any]], args: argparse.Namespace, warmup: int) -> dict[str, Any]:
    """The worked estimate per latency mode whose 1-worker and a Ray cell are finished."""
    out = {}
    for mode in ("flops", "measured"):
        one = pick(cells, mode, ("local-b1",))
        dist = pick(cells, mode, ("ray-2node-w2", "ray-w2", "ray-w1"))
        if one and dist and one["breakdown_s"].get("worker_s_p90") is not None:
            out[mode] = estimate(one, dist, args, warmup, driver_latency=mode == "measured")
    return out


def write_report(args: argparse.Namespace, base: ExperimentConfig, config_path: str) -> dict[str, Any]:
    cells = collect(Path(args.work))
    flops = [c for c in cells if c["latency_mode"] == "flops"]
    measured = [c for c in cells if c["latency_mode"] == "measured"]
    warmup = base.ddpg.warmup_episodes
    est = estimates(cells, args, warmup)
    result = {
        "rows": [{k: c[k] for k in ROW_KEYS} for c in (flops or measured)],
        "breakdown_s": {c["cell"]: c["breakdown_s"] for c in cells},
        **({"rows_measured": [{k: c[k] for k in ROW_KEYS} for c in measured]} if flops and measured else {}),
        "estimate": est.get("flops", est.get("measured", {})).get("formula"),
        "estimates": est,
        "same_episodes": same_episodes(cells),
        "details": [{k: v for k, v in c.items() if k != "rewards"} for c in cells],
        "config": config_path, "agent": "ddpg", "seed": args.seed, "search_warmup_episodes": args.warmup,
        "torch_threads": args.threads,
        "cpu": f"{cpu_model()} ({', '.join(cpu_int8_flags()) or 'no SIMD flags found'}), {os.cpu_count()} cores",
        "machine": machine_description(), "loadavg": list(os.getloadavg()),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    write_json_atomic(args.json, result)
    print(table(cells))
    for mode, e in est.items():
        print(f"\nestimate ({mode}): {e['formula']}")
    print(f"\nsame episodes per round size: {result['same_episodes']}")
    return result


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help=f"experiment YAML (default {PRIMARY}, or {FALLBACK} "
                   "where the CIFAR-10 subset or the ResNet-56 weights are missing)")
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=10, help="DDPG warm-up episodes in the cells (the agent's "
                   "update is timed after them); the estimate uses the config's own")
    p.add_argument("--threads", type=int, default=1, help="torch threads of this process and of each worker")
    p.add_argument("--cells", nargs="+", default=[c.name for c in CELLS], choices=[c.name for c in CELLS])
    p.add_argument("--measured", action="store_true", help="also run every cell with measured latency")
    p.add_argument("--nodes", type=int, default=16, help="cluster size of the estimate")
    p.add_argument("--cores-per-node", type=int, default=os.cpu_count() or 1,
                   help="workers per node in the estimate (default: this machine's cores)")
    p.add_argument("--target-episodes", type=int, default=800, help="episodes of the estimated search")
    p.add_argument("--work", default="runs/scaling", help="finished cells (<cell>.json) and their run folders")
    p.add_argument("--json", default="docs/benchmarks/scaling.json")
    p.add_argument("--report-only", action="store_true", help="run nothing: rebuild the JSON from finished cells")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args()
    if args.episodes < 2 or not 0 <= args.warmup < args.episodes:
        raise ConfigError("--episodes must be >= 2 and --warmup in [0, episodes) (the agent's update is timed "
                          "after the warm-up).")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    config_path = args.config or default_config()
    base = load_config(config_path)
    modes = ("flops", "measured") if args.measured else ("flops",)
    try:
        import ray  # noqa: F401
    except ImportError:
        print('Ray is not installed (pip install -e ".[ray]"): the Ray cells are skipped', file=sys.stderr)
        args.cells = [n for n in args.cells if n.startswith("local")]
    cells = [c for c in CELLS if c.name in args.cells]
    for mode in modes if not args.report_only else ():
        todo = [c for c in cells if not (Path(args.work) / f"{c.name if mode == 'flops' else f'{c.name}-{mode}'}.json").is_file()]
        if not todo:
            continue
        env, _ = build(replace(base, env=replace(base.env, latency_mode=mode)), progress=not args.quiet)
        for cell in todo:
            c = run_cell(base, env, cell, mode, args)
            print(f"{c['cell']}: {c['episodes']} episodes in {c['wall_s']:.1f} s, {c['episodes_per_s']:.3f} episodes/s, "
                  f"median {c['episode_s_median']:.2f} s/episode", file=sys.stderr)
    write_report(args, base, config_path)


if __name__ == "__main__":
    run_script(main)
