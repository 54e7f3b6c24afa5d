"""scripts/policy_clone_noise.py: methods are compared over cloning seeds (not episodes), and a folder that is not
a finished bench_rl_policy task is refused with a one-line reason."""

from __future__ import annotations

import pytest
from script_loader import load_script

from autocompress.config import ConfigError


def test_compare_uses_the_spread_over_cloning_seeds() -> None:
    qc = load_script("policy_clone_noise")
    cells = {"search": [{"return_mean": v} for v in (101.0, 103.0, 102.0)],
             "uniform": [{"return_mean": v} for v in (100.0, 104.0, 99.0)]}
    out = qc.compare(cells)
    assert out["search"]["per_seed"] == [101.0, 103.0, 102.0]
    assert out["search"]["mean_over_seeds"] == pytest.approx(102.0)
    assert out["search"]["sd_over_seeds"] == pytest.approx(1.0)  # sample sd over the three seeds
    assert out["search_minus_uniform"]["diff"] == pytest.approx(1.0)
    assert out["search_minus_uniform"]["search_ahead_in_seeds"] == 2
    assert 0.3 < out["search_minus_uniform"]["welch_p_over_seeds"] < 1.0  # a 1-point lead inside a 2.6 sd


def test_a_folder_without_schedules_is_refused(tmp_path) -> None:
    qc = load_script("policy_clone_noise")
    with pytest.raises(ConfigError, match="best_schedule.json"):
        qc.parse_args([str(tmp_path), "--work", str(tmp_path / "w"), "--json", str(tmp_path / "o.json")])
    with pytest.raises(ConfigError, match="distinct --clone-seeds"):
        qc.parse_args([str(tmp_path), "--clone-seeds", "1", "1", "--work", "w", "--json", "o.json"])
