"""The Evaluator alone: a schedule in, an Outcome out; built from a config, also in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from test_search import small_config

from autocompress.config import dump_config
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
