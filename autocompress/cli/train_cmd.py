"""CLI: `train` (train or distil a zoo model on a dataset) and `evaluate` (accuracy of saved weights)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

from autocompress.config import DataConfig, ModelConfig, TrainConfig, default_data_root

FINAL_MODEL_NAME = "model.pth"


def _add_data_args(p: argparse.ArgumentParser, default_data: str | None) -> None:
    p.add_argument("--data", required=default_data is None, default=default_data,
                   help="digits, cifar10, cifar100, fashion_mnist, cifar10_subset, cifar10_jpeg, imagefolder")
    p.add_argument("--data-root", help="dataset folder (default $AUTOCOMPRESS_DATA_ROOT or ./data)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--val-size", type=int, default=5000,
                   help="images carved from train as the held-out val split (capped at 20%% of train)")
    p.add_argument("--image-size", type=int, help="imagefolder: resize + crop to this size (default: native size)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `train` and `evaluate` to `sub`."""
    t = sub.add_parser("train", help="train a model (optionally distilling from a teacher) and test it",
                       description="Train --model on --data with SGD + cosine LR; num_classes and input channels "
                                   "come from the dataset. Saves checkpoint.pt each epoch and model.pth at the end.")
    t.add_argument("--model", required=True, help="zoo name (`autocompress models`) or tv:<name>")
    _add_data_args(t, None)
    t.add_argument("--weights", help="start from these weights (state dict file)")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--teacher", help="teacher model name: distil from it (needs --teacher-weights)")
    t.add_argument("--teacher-weights", help="weights of the teacher")
    t.add_argument("--distill-alpha", type=float, default=0.5, help="weight of the distillation loss")
    t.add_argument("--distill-temperature", type=float, default=4.0)
    t.add_argument("--max-batches", type=int, help="cap batches per epoch (quick runs)")
    t.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast on the CPU: 1.5-3x faster on CPUs with AVX512-BF16 or AMX (off: fp32)")
    t.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights, augmentation and data order (runs repeat)")
    t.add_argument("--no-augment", action="store_true", help="no random crop / flip on the training split")
    t.add_argument("--out", help="output folder (default runs/<model>-<data>)")
    t.add_argument("--resume", action="store_true",
                   help="continue from <out>/checkpoint.pt where an interrupted run with the same --epochs stopped")
    t.add_argument("--json", action="store_true", help="print the result as one JSON object")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    t.set_defaults(func=_train, out_kind="folder")

    e = sub.add_parser("evaluate", help="top-1 / top-5 / loss of a model's weights on a data split",
                       description="Evaluate saved weights on the test, val (seeded, carved from train) or train "
                                   "split, without augmentation.")
    e.add_argument("--model", required=True, help="zoo name (`autocompress models`) or tv:<name>")
    e.add_argument("--weights", help="state dict file (omit only to score a random init)")
    _add_data_args(e, "digits")
    e.add_argument("--split", choices=["test", "val", "train"], default="test")
    e.add_argument("--json", action="store_true", help="print the result as one JSON object")
    e.set_defaults(func=_evaluate)


def _data_config(args: argparse.Namespace, augment: bool) -> DataConfig:
    return DataConfig(name=args.data, root=args.data_root or default_data_root(), val_size=args.val_size,
                      batch_size=args.batch_size, augment=augment, image_size=args.image_size)


def _load_data(cfg: DataConfig, notes: bool = True):  # noqa: ANN202 (DataBundle imported lazily)
    """load_data, with its warnings (e.g. a capped val split) as plain stderr lines when they concern the user."""
    from autocompress.data import load_data

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = load_data(cfg)
    for w in caught if notes else ():
        print(f"note: {w.message}", file=sys.stderr)
    return bundle


def _check_positive(**values: int | None) -> None:
    from autocompress.config import ConfigError

    for name, v in values.items():
        if v is not None and v < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {v}.")


def _write_json_atomic(obj: object, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, default=float)
    os.replace(tmp, path)


def _train(args: argparse.Namespace) -> int:
    import torch

    from autocompress.config import ConfigError, validate
    from autocompress.data import make_loader
    from autocompress.measure.accuracy import evaluate
    from autocompress.models import get_model
    from autocompress.train import save_atomic, train

    _check_positive(batch_size=args.batch_size, max_batches=args.max_batches)
    if args.teacher and not args.teacher_weights:
        raise ConfigError("--teacher needs --teacher-weights: distilling from an untrained teacher is pointless.")
    data_cfg = _data_config(args, augment=not args.no_augment)
    validate(data_cfg, "data")
    train_cfg = TrainConfig(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                            label_smoothing=args.label_smoothing, distill=args.teacher is not None,
                            distill_alpha=args.distill_alpha, distill_temperature=args.distill_temperature,
                            device=args.device, max_batches=args.max_batches, cpu_bf16=args.cpu_bf16,
                            seed=args.seed)
    validate(train_cfg, "train")  # before the data: a bad number fails in a second
    bundle = _load_data(data_cfg)
    c = bundle.input_shape[0]
    model_cfg = ModelConfig(name=args.model, num_classes=bundle.num_classes, in_channels=c, weights=args.weights)
    torch.manual_seed(args.seed)  # a model trained from scratch starts from the same weights
    model = get_model(model_cfg.name, model_cfg.num_classes, model_cfg.weights, model_cfg.in_channels)
    teacher = get_model(args.teacher, bundle.num_classes, args.teacher_weights, c) if args.teacher else None
    out = Path(args.out or f"runs/{args.model.replace(':', '_')}-{args.data}")
    out.mkdir(parents=True, exist_ok=True)
    history = train(model, bundle, train_cfg, teacher=teacher, out_dir=out, progress=not args.quiet,
                    resume=args.resume)
    model_path = save_atomic(model.cpu().state_dict(), out / FINAL_MODEL_NAME)
    test = evaluate(model, make_loader(bundle.test, args.batch_size), train_cfg.device)
    result = {"model": args.model, "data": args.data, "epochs": args.epochs, "weights": str(model_path),
              "test": asdict(test), "train_config": asdict(train_cfg), "history": history}
    _write_json_atomic(result, out / "result.json")
    if args.json:
        print(json.dumps(result, default=float))
    else:
        print(f"final test top-1 {test.top1:.2f}% (top-5 {test.top5:.2f}%, loss {test.loss:.4f}, n={test.n}); "
              f"weights saved to {model_path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from autocompress.data import make_loader
    from autocompress.measure.accuracy import evaluate
    from autocompress.models import get_model

    _check_positive(batch_size=args.batch_size)
    bundle = _load_data(_data_config(args, augment=False), notes=args.split == "val")
    if args.weights is None:
        print("warning: no --weights given; evaluating a randomly initialised model", file=sys.stderr)
    model = get_model(args.model, bundle.num_classes, args.weights, bundle.input_shape[0])
    split = getattr(bundle, args.split)
    res = evaluate(model, make_loader(split, args.batch_size), args.device)
    out = {**asdict(res), "model": args.model, "data": args.data, "split": args.split}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.model} on {args.data}/{args.split}: top-1 {res.top1:.2f}%, top-5 {res.top5:.2f}%, "
              f"loss {res.loss:.4f}, n={res.n}, {res.images_per_s:.0f} images/s")
    return 0
