"""The Evaluator alone: a schedule in, an Outcome out; built from a config, also in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_search import small_config

from autocompress.config import EnvConfig, dump_config
from autocompress.envs import EnvData
from autocompress.envs.factory import build_evaluator
from autocompress.pipeline import build

REPO = Path(__file__).resolve().parent.parent


def test_the_env_scores_episodes_through_its_evaluator(tmp_path):
    cfg = small_config(tmp_path / "run")
    env, _ = build(cfg, progress=False)
    env.reset(seed=0)
    terminated, info = False, {}
    while not terminated:
        _, reward, terminated, _, info = env.step(np.array([0.7], np.float32))
    outcome, again = env.evaluator.evaluate(info["schedule"])
    assert again["cached"] and again["top1"] == info["top1"] and env.reward_fn(outcome) == reward
    batch = env.evaluator.evaluate_batch([info["schedule"], {g: 0.0 for g in env.group_names}])
    assert batch[0][1]["top1"] == info["top1"] and batch[1][1]["macs_ratio"] == 1.0
    assert len(env.evaluator.cache) == 2


def test_an_evaluator_built_from_the_config_in_a_fresh_process_scores_the_same(tmp_path):
    cfg = small_config(tmp_path / "run")
    (tmp_path / "exp.yaml").write_text(dump_config(cfg))
    here = build_evaluator(tmp_path / "exp.yaml")  # pretrains once into the run folder; the worker reuses it
    schedule = {g.name: 0.5 for g in here.pruner.groups}
    code = ("import json, sys; from autocompress.envs.factory import build_evaluator; "
            f"e = build_evaluator({str(tmp_path / 'exp.yaml')!r}); "
            f"print(json.dumps(e.evaluate({json.dumps(schedule)})[1]['top1']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == here.evaluate(schedule)[1]["top1"]


@pytest.fixture(scope="module")
def digits_net():
    """A tiny CNN trained on the bundled digits (about 90% top-1), with its held-out and calibration images."""
    from autocompress.config import DataConfig, TrainConfig
    from autocompress.data import load_data, take_tensors
    from autocompress.models import get_model
    from autocompress.train import train

    bundle = load_data(DataConfig(name="digits", val_size=350))
    x, y = take_tensors(bundle.val, 350, seed=0)
    calib, _ = take_tensors(bundle.train, 64, seed=1)
    torch.manual_seed(0)
    model = get_model("tiny_cnn", in_channels=x.shape[1])
    train(model, bundle, TrainConfig(epochs=15, lr=0.05), progress=False)
    return model.eval(), EnvData(x, y, calib)


def test_early_stopping_skips_images_only_for_policies_that_cannot_win(digits_net):
    from autocompress.envs.evaluator import Evaluator

    model, data = digits_net
    plain = Evaluator(model, data, EnvConfig(max_ratio=0.9, eval_batch_size=25))
    early = Evaluator(model, data, EnvConfig(max_ratio=0.9, eval_batch_size=25, eval_early_stop=0.05))
    names = plain.pruner.group_names
    first = dict.fromkeys(names, 0.0)
    assert early.evaluate(first)[1]["top1"] == plain.evaluate(first)[1]["top1"] > 80  # nothing to beat yet
    assert early.evaluate(first)[1]["early_stopped"] is False
    bad = dict.fromkeys(names, 0.9)
    full, cut = plain.evaluate(bad)[1], early.evaluate(bad)[1]
    assert full["top1"] < 20 and cut["early_stopped"] and cut["val_images_scored"] < len(data.val_labels)
    scored = cut["val_images_scored"]  # its top-1 is the share right on the images it saw
    pruned = early.compress(bad)
    with torch.no_grad():
        right = (pruned(data.val_images[:scored]).argmax(1) == data.val_labels[:scored]).float().mean().item()
    assert cut["top1"] == pytest.approx(100 * right)
    # the best so far was scored in full
    assert early.evaluate(first)[1]["val_images_scored"] == len(data.val_labels)
