"""scripts/quality_capacity.py: the kept-parameter share comes from the real pruned network, and a report too
small to rank is refused with a one-line reason."""

from __future__ import annotations

import json

import pytest
import torch
from script_loader import load_script

from autocompress.config import AutocompressError
from autocompress.models import get_model
from autocompress.pruning import Pruner


@pytest.fixture(scope="module")
def pruner() -> Pruner:
    return Pruner(get_model("cifar10_resnet20"), torch.zeros(1, 3, 32, 32))


def test_param_share_matches_the_physically_pruned_network(pruner) -> None:
    qc = load_script("quality_capacity")
    ratios = {"layer1.0.conv1": 0.5, "layer3.2.conv1": 0.25}
    pruned = pruner.prune(ratios)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert qc.param_share(pruner, ratios) == pytest.approx(count(pruned) / count(get_model("cifar10_resnet20")))
    assert qc.param_share(pruner, {}) == 1.0


def _report(tmp_path, rows):
    path = tmp_path / "q.json"
    path.write_text(json.dumps({"details": rows}))
    return path


def test_rank_correlations_over_a_report(tmp_path, pruner) -> None:
    qc = load_script("quality_capacity")
    rows = [{"model": "cifar10_resnet20", "method": m, "seed": 0, "ft_epochs": 10, "macs_ratio": 0.5,
             "schedule": {"layer3.0.conv1": r}, "val_reward_top1": 60.0 + i, "top1_after_ft": 87.0 - i}
            for i, (m, r) in enumerate([("a", 0.1), ("b", 0.3), ("c", 0.6)])]
    res = qc.analyse(_report(tmp_path, rows), qc.report_rows(_report(tmp_path, rows), "cifar10_resnet20"), pruner)
    assert res["params_vs_after_ft"]["tau"] == pytest.approx(1.0)  # more kept, higher top-1, by construction
    assert res["reward_vs_after_ft"]["tau"] == pytest.approx(-1.0)
    with pytest.raises(AutocompressError, match="need >= 3"):
        qc.report_rows(_report(tmp_path, rows[:2]), "cifar10_resnet20")
