"""Which images should BatchNorm statistics be re-estimated on after pruning? Clean vs augmented training images.

The adapted CIFAR-10 (JPEG) networks were trained with pad-4 random crops and flips, so their running statistics
describe augmented images, while the env re-estimates them on clean ones (`take_tensors` reads training images
without augmentation). For the unpruned network and for reward_vs_finetune.py's policies (their schedules and
fine-tuned top-1 are read from its JSON) this scores each network on the env's val images after re-estimation
on N clean vs N augmented training images (seeded), and reports the Kendall tau of each against the policies'
top-1 after fine-tuning: the criterion the env reward is chosen by (issue #14).

    python scripts/bench_bn_recalib.py --json docs/benchmarks/bn_recalib_resnet20.json
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch
from plot_utils import cpu_model, write_json_atomic
from scipy.stats import kendalltau

from autocompress.config import load_config
from autocompress.data import load_data, take_tensors
from autocompress.envs.factory import build_evaluator
from autocompress.pruning.recalibrate import recalibrate_bn


def augmented(train: torch.utils.data.Dataset, n: int, seed: int) -> torch.Tensor:
    """`n` training images through the training augmentation, positions and crops seeded."""
    positions = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    torch.manual_seed(seed)
    return torch.stack([train[int(i)][0] for i in positions])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="experiments/resnet20-cifar10jpeg-macs50.yaml")
    p.add_argument("--policies", default="docs/benchmarks/reward_vs_finetune_resnet20.json")
    p.add_argument("--images", type=int, default=512, help="re-estimation images (the config's 4 x 128)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config)
    ev = build_evaluator(replace(cfg, env=replace(cfg.env, bn_recalib_batches=0, latency_mode="flops")))
    train = load_data(cfg.data).train
    images = {"clean": take_tensors(train, args.images, seed=args.seed)[0],
              "augmented": augmented(train, args.images, args.seed)}
    policies = [{"index": -1, "kind": "unpruned", "schedule": {}}] + json.loads(Path(args.policies).read_text())["policies"]
    rows = []
    for pol in policies:
        net = ev.compress(pol["schedule"])
        row = {"index": pol["index"], "kind": pol["kind"], "val_top1_no_recalib": ev.accuracy(net),
               "ft_test_top1": pol.get("ft_test_top1")}
        for name, x in images.items():
            m = copy.deepcopy(net)
            recalibrate_bn(m, x, cfg.env.bn_recalib_batch_size)
            row[f"val_top1_{name}"] = ev.accuracy(m)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    scored = [r for r in rows if r["ft_test_top1"] is not None]
    tau = {name: kendalltau([r[f"val_top1_{name}"] for r in scored], [r["ft_test_top1"] for r in scored])
           for name in images}
    result = {"kendall_tau_vs_ft_test_top1": {k: {"tau": float(t.statistic), "p": float(t.pvalue)} for k, t in tau.items()},
              "n_policies": len(scored), "images": args.images, "rows": rows, "config": args.config,
              "command": "python " + " ".join(sys.argv), "cpu": cpu_model(),
              "date": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    write_json_atomic(args.json, result)
    for k, t in tau.items():
        print(f"re-estimated on {k:<9} images: Kendall tau {t.statistic:.3f} (p {t.pvalue:.1e}) over {len(scored)} policies")
    print(f"unpruned: no re-estimation {rows[0]['val_top1_no_recalib']:.1f}, clean {rows[0]['val_top1_clean']:.1f}, "
          f"augmented {rows[0]['val_top1_augmented']:.1f} (val top-1)")


if __name__ == "__main__":
    main()
