"""Scorers (issue #17): top-1 or a policy's episodic return, behaviour cloning, and a policy compressed end to end.

Real Gymnasium tasks (CartPole-v1, Pendulum-v1), real networks; the "trained" CartPole policy is made by hand
(push the cart the way the pole falls: sign of 3 * angle + angular velocity), which balances for the full 500
steps, so no test waits for RL training.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from autocompress.config import SCORERS as CONFIG_SCORERS
from autocompress.config import (
    AutocompressError,
    ConfigError,
    EnvConfig,
    LatencyConfig,
    RLTaskConfig,
    TrainConfig,
    load_config,
)
from autocompress.envs.factory import build_env_and_data
from autocompress.export import load_pruned
from autocompress.measure.latency import LatencyMeter
from autocompress.measure.rollouts import (
    TaskError,
    collect_observations,
    network_policy,
    random_policy,
    run_episodes,
    task_spec,
)
from autocompress.measure.scorers import SCORERS, EpisodicReturnScorer, get_scorer
from autocompress.models import get_model
from autocompress.pruning import Pruner
from autocompress.rl_finetune import action_agreement, behaviour_clone

CARTPOLE = RLTaskConfig(env_id="CartPole-v1", episodes=5, bc_observations=2000, bc_batch_size=128)


def hand_made_policy(noise: float = 0.01) -> nn.Sequential:
    """The zoo's 2 x 256 ReLU policy wired to push towards the side the pole falls to (plus small noise)."""
    torch.manual_seed(0)
    model = get_model("mlp_policy_relu", num_classes=2, in_channels=4)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, noise)
        lean = torch.tensor([0.0, 0.0, 3.0, 1.0])
        model[0].weight[:2] = torch.stack([lean, -lean])
        model[0].bias[:2] = 0.0
        model[2].weight[:2, :2] = torch.eye(2)
        model[2].bias[:2] = 0.0
        model[4].weight[:, :2] = torch.tensor([[0.0, 10.0], [10.0, 0.0]])  # left when leaning left
    return model.eval()


def policy_config(tmp_path: Path, **env: object) -> dict:
    weights = tmp_path / "policy.pth"
    torch.save(hand_made_policy().state_dict(), weights)
    task = {"env_id": "CartPole-v1", "episodes": 5, "test_episodes": 3, "bc_observations": 1000,
            "bc_batch_size": 128}
    return {"model": {"name": "mlp_policy_relu", "weights": str(weights)},
            "env": {"scorer": "episodic_return", "task": task, "val_images": 64, "budget": 0.5, **env},
            "search": {"out_dir": str(tmp_path / "run"), "episodes": 4, "agent": "random", "torch_threads": 1}}


def test_episodic_return_is_deterministic_and_far_above_random_for_a_good_policy() -> None:
    good = hand_made_policy()
    scorer = EpisodicReturnScorer(CARTPOLE, good)
    assert scorer.returns(good) == scorer.returns(good) == [500.0] * 5
    assert scorer.reference_return == 500.0 and scorer.random_return < 50.0
    random_actions = run_episodes(random_policy(scorer.spec, 0), CARTPOLE, 0, 5).returns
    assert statistics.fmean(random_actions) == scorer.random_return
    untrained = get_model("mlp_policy_relu", num_classes=2, in_channels=4)
    assert scorer.score(good).value == 100.0 and scorer.score(good).details["return_mean"] == 500.0
    assert scorer.score(untrained).value < 10.0
    assert scorer.returns(good, first_seed=100) == [500.0] * 5  # other seeds, other episodes, same policy


def test_an_env_with_scorer_episodic_return_is_rewarded_with_the_normalised_return(tmp_path) -> None:
    env, bundle = build_env_and_data(load_config(policy_config(tmp_path)), progress=False)
    assert env.group_names == ["0", "2"] and env.input_shape == (4,) and bundle.observations.shape == (1000, 4)
    assert env.baseline_top1 == 100.0
    env.reset(seed=0)
    terminated, reward, info = False, 0.0, {}
    while not terminated:
        _, reward, terminated, _, info = env.step(np.array([0.9], np.float32))
    scorer = env.evaluator.scorer
    assert info["macs_ratio"] <= 0.5 + 1e-9 and info["episodes"] == 5
    assert reward == pytest.approx(scorer.normalise(info["return_mean"]) / 100.0)
    assert info["top1"] == pytest.approx(100.0 * reward)
    expected = (info["return_mean"] - scorer.random_return) / (scorer.reference_return - scorer.random_return)
    assert reward == pytest.approx(max(expected, 0.0))


def test_behaviour_cloning_brings_a_pruned_policy_closer_to_its_teacher() -> None:
    teacher = hand_made_policy()
    student = get_model("mlp_policy_relu", num_classes=2, in_channels=4)  # unrelated weights, then pruned
    student = Pruner(student, torch.zeros(1, 4)).prune({"0": 0.75, "2": 0.75})
    spec = task_spec(CARTPOLE)
    obs = collect_observations(network_policy(teacher, spec), CARTPOLE, 2000, CARTPOLE.train_seed)
    before = action_agreement(student, teacher, obs, "discrete")
    history = behaviour_clone(student, teacher, obs, TrainConfig(epochs=5, lr=0.03, weight_decay=0.0), CARTPOLE, spec)
    after = action_agreement(student, teacher, obs, "discrete")
    assert before < 0.6 and after > before + 0.2 and history[-1]["agreement"] == after
    # random actions balance the pole for ~20 steps; the clone, for hundreds
    assert statistics.fmean(run_episodes(network_policy(student, spec), CARTPOLE, 0, 3).returns) > 150


def test_the_reward_can_score_a_copy_behaviour_cloned_first() -> None:
    """reward_clone_batches: a pruned policy that has lost its skill scores near random as pruned, and far
    higher once a copy is cloned from the teacher; the network itself is untouched and the score repeats."""
    from dataclasses import replace

    teacher = hand_made_policy()
    spec = task_spec(CARTPOLE)
    obs = collect_observations(network_policy(teacher, spec), CARTPOLE, 2000, CARTPOLE.train_seed)
    torch.manual_seed(1)
    student = Pruner(get_model("mlp_policy_relu", num_classes=2, in_channels=4), torch.zeros(1, 4)).prune(
        {"0": 0.75, "2": 0.75}).eval()
    weights = [p.detach().clone() for p in student.parameters()]
    as_pruned = EpisodicReturnScorer(CARTPOLE, teacher, obs).score(student)
    cloned = EpisodicReturnScorer(replace(CARTPOLE, reward_clone_batches=150, reward_clone_lr=0.03), teacher, obs)
    first, again = cloned.score(student), cloned.score(student)
    assert as_pruned.value < 30.0 and first.value > as_pruned.value + 30.0
    assert first == again and cloned.score_as_is(student) == as_pruned
    assert all(torch.equal(a, b) for a, b in zip(weights, student.parameters(), strict=True))
    with pytest.raises(ConfigError, match="reward_clone_batches.*observations"):
        EpisodicReturnScorer(replace(CARTPOLE, reward_clone_batches=10), teacher)


def test_the_tournament_judges_after_the_reward_s_cloning_and_its_own(tmp_path) -> None:
    """With reward cloning on, a tournament round clones reward_clone_batches + its own batches: with no
    batches of its own it gives exactly the reward's score (same data, rate and seed), never a weaker clone."""
    from autocompress.rl_finetune import PolicyJudge

    cfg = policy_config(tmp_path, val_images=1000)
    torch.save(hand_made_policy(noise=0.1).state_dict(), cfg["model"]["weights"])  # pruning 75% hurts this one
    cfg["env"]["task"].update(reward_clone_batches=30, reward_clone_lr=0.01, seed=0)
    env, bundle = build_env_and_data(load_config(cfg), progress=False)
    schedule = {"0": 0.75, "2": 0.75}
    judge = PolicyJudge(env, bundle, lr=0.01, seed=0)
    reward_score = env.evaluator.score(env.evaluator.compress(schedule)).value
    as_pruned = env.evaluator.scorer.score_as_is(env.evaluator.compress(schedule)).value
    assert as_pruned < 95.0 and reward_score > as_pruned + 5.0
    assert judge(schedule, 0) == reward_score


def test_the_imitation_measure_scores_held_out_teacher_states() -> None:
    """reward_measure imitation: the teacher scores 100, a pruned copy less, its cloned copy more than as pruned;
    deterministic; scored on states from imitation_seed, not those the clone learns from."""
    from dataclasses import replace

    teacher = hand_made_policy()
    spec = task_spec(CARTPOLE)
    obs = collect_observations(network_policy(teacher, spec), CARTPOLE, 2000, CARTPOLE.train_seed)
    task = replace(CARTPOLE, reward_measure="imitation", imitation_observations=600)
    scorer = EpisodicReturnScorer(task, teacher, obs)
    assert scorer.heldout is not None and len(scorer.heldout) == 600
    assert not any(torch.equal(row, scorer.heldout[0]) for row in obs[:200])  # other episodes than the clone's
    assert scorer.score_as_is(teacher).value == 100.0
    torch.manual_seed(1)
    student = Pruner(get_model("mlp_policy_relu", num_classes=2, in_channels=4), torch.zeros(1, 4)).prune(
        {"0": 0.75, "2": 0.75}).eval()
    as_pruned = scorer.score(student)
    assert as_pruned == scorer.score(student) and as_pruned.value < 60.0
    assert as_pruned.details["imitation_observations"] == 600 and "return_mean" not in as_pruned.details
    cloned = EpisodicReturnScorer(replace(task, reward_clone_batches=150, reward_clone_lr=0.03), teacher, obs)
    assert cloned.score(student).value > as_pruned.value + 20.0


def test_imitation_fit_is_r2_of_clipped_actions_or_agreement_above_chance() -> None:
    from autocompress.measure.scorers import imitation_fit

    box = task_spec(RLTaskConfig(env_id="Pendulum-v1", action="continuous"))  # actions in [-2, 2]
    teacher = torch.tensor([[-1.0], [1.0], [3.0]])  # 3.0 acts as 2.0
    assert imitation_fit(torch.tensor([[-1.0], [1.0], [9.0]]), teacher, box) == 1.0  # same actions once clipped
    clipped = torch.tensor([-1.0, 1.0, 2.0])
    mean_guess = clipped.mean().expand(3, 1).clone()
    assert imitation_fit(mean_guess, teacher, box) == pytest.approx(0.0, abs=1e-6)
    half = (clipped.reshape(3, 1) + mean_guess) / 2  # halfway to the mean: R^2 = 1 - 1/4
    assert imitation_fit(half, teacher, box) == pytest.approx(0.75, abs=1e-6)
    two = task_spec(CARTPOLE)
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert imitation_fit(logits, logits, two) == 1.0
    assert imitation_fit(logits.flip(1), logits, two) == 0.0  # always the other action: floored at 0
    assert imitation_fit(torch.tensor([[1.0, 0.0]] * 4), logits, two) == 0.0  # chance
    with pytest.raises(TaskError, match="one and the same action"):
        imitation_fit(teacher, torch.ones(3, 1), box)


def test_the_tournament_judges_imitation_runs_by_the_imitation_fit(tmp_path) -> None:
    from autocompress.rl_finetune import PolicyJudge

    cfg = policy_config(tmp_path, val_images=1000)
    cfg["env"]["task"].update(reward_measure="imitation", imitation_observations=300, reward_clone_batches=20,
                              reward_clone_lr=0.01)
    env, bundle = build_env_and_data(load_config(cfg), progress=False)
    judge = PolicyJudge(env, bundle, lr=0.01, seed=0)
    schedule = {"0": 0.75, "2": 0.75}
    assert judge.label == "imitation fit" and judge.scored_on == {"imitation_observations": 300}
    assert judge(schedule, 0) == env.evaluator.score(env.evaluator.compress(schedule)).value
    from autocompress.pipeline import plan

    assert "(300 held-out teacher states after 20 cloning steps each)" in plan(load_config(cfg), bundle, False)


def test_the_tournament_can_judge_imitation_runs_by_the_return(tmp_path) -> None:
    """tournament_measure return: the finalists' clones are judged by the search episodes' normalised return,
    exactly the return of a copy cloned the same way (reward steps + the round's), while the reward stays the fit."""
    from autocompress.rl_finetune import PolicyJudge, short_clone

    cfg = policy_config(tmp_path, val_images=1000)
    torch.save(hand_made_policy(noise=0.1).state_dict(), cfg["model"]["weights"])
    cfg["env"]["task"].update(reward_measure="imitation", imitation_observations=300, reward_clone_batches=20,
                              reward_clone_lr=0.01, tournament_measure="return")
    env, bundle = build_env_and_data(load_config(cfg), progress=False)
    judge = PolicyJudge(env, bundle, lr=0.01, seed=0)
    assert judge.label == "normalised return" and judge.scored_on == {"episodes": 5}
    schedule = {"0": 0.75, "2": 0.75}
    copy = short_clone(env.evaluator.compress(schedule), env.model, bundle, 20 + 10, 0.01, 0)
    scorer = env.evaluator.scorer
    assert judge(schedule, 10) == scorer.return_score(copy).value
    assert "return_mean" in scorer.return_score(copy).details and "imitation" in scorer.score_as_is(copy).details


def test_the_tournament_can_judge_after_the_final_fine_tune_itself(tmp_path) -> None:
    """tournament_clone full: a finalist is judged after the finetune: recipe with the final seed, so its score
    is exactly that of the network the report would test; later rounds reuse it instead of cloning again."""
    from autocompress.rl_finetune import PolicyJudge, behaviour_clone
    from autocompress.train import TrainError

    cfg = policy_config(tmp_path, val_images=1000)
    torch.save(hand_made_policy(noise=0.1).state_dict(), cfg["model"]["weights"])
    cfg["env"]["task"].update(tournament_measure="return", tournament_clone="full", dagger_rounds=1)
    cfg["finetune"] = {"epochs": 2, "lr": 0.01, "weight_decay": 0.0}
    loaded = load_config(cfg)
    final = loaded.finetune
    env, bundle = build_env_and_data(loaded, progress=False)
    judge = PolicyJudge(env, bundle, lr=0.01, seed=0, final=final, final_seed=3)
    schedule = {"0": 0.75, "2": 0.75}
    model = env.evaluator.compress(schedule)
    behaviour_clone(model, env.model, bundle.observations, final, bundle.task, bundle.spec, seed=3)
    expected = env.evaluator.scorer.return_score(model.eval()).value
    assert judge(schedule, 10) == expected == judge(schedule, 20)  # batches do not matter; cloned once
    assert len(judge._full_scores) == 1
    assert judge.effort(50) == "the final fine-tune"  # the progress lines say what the judge really does
    from dataclasses import replace

    from autocompress.config import TournamentConfig
    from autocompress.pipeline import plan

    assert "tournament of 8 policies (the final fine-tune each)" in plan(
        replace(loaded, tournament=TournamentConfig()), bundle, False)
    with pytest.raises(TrainError, match="tournament_clone: full needs a finetune"):
        PolicyJudge(env, bundle, lr=0.01, seed=0)


def test_clone_restarts_keep_the_clone_that_returns_most_on_the_search_episodes(tmp_path) -> None:
    """task.clone_restarts K: K clones a seed stride apart, each exactly the single clone under its seed, and the
    one with the best normalised return on the search's episodes is kept (the test episodes are not looked at)."""
    from dataclasses import replace

    from autocompress.rl_finetune import RESTART_SEED_STRIDE, final_clone

    cfg = policy_config(tmp_path)
    torch.save(hand_made_policy(noise=0.3).state_dict(), cfg["model"]["weights"])
    cfg["env"]["task"].update(clone_restarts=3, bc_observations=300)
    loaded = load_config(cfg)
    env, bundle = build_env_and_data(loaded, progress=False)
    recipe, schedule = TrainConfig(epochs=1, lr=0.003, weight_decay=0.0), {"0": 0.9, "2": 0.9}
    clone = final_clone(env, bundle, schedule, recipe, seed=5)
    single = replace(bundle, task=replace(bundle.task, clone_restarts=1))
    each = [env.evaluator.scorer.return_score(final_clone(env, single, schedule, recipe, seed=5 + k * RESTART_SEED_STRIDE)
                                              .model).value for k in range(3)]
    assert clone.restart_returns == each and len(set(each)) > 1  # the seeds give different clones here
    assert clone.seed == 5 + each.index(max(each)) * RESTART_SEED_STRIDE
    assert clone.best_return == max(each) == env.evaluator.scorer.return_score(clone.model).value
    assert final_clone(env, single, schedule, recipe, seed=5).restart_returns == []  # one clone: nothing to choose


def test_continuous_actions_are_clipped_and_cloned_with_mse() -> None:
    task = RLTaskConfig(env_id="Pendulum-v1", action="continuous", episodes=2, max_steps=50, bc_batch_size=64)
    spec = task_spec(task)
    assert spec.n_outputs == 1 and float(spec.high[0]) == 2.0
    loud = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    with torch.no_grad():
        loud[2].bias.fill_(50.0)
    assert np.all(network_policy(loud, spec)(torch.zeros(4, 3)) == 2.0)
    returns = run_episodes(network_policy(loud, spec), task, 0, 2).returns
    assert returns == run_episodes(network_policy(loud, spec), task, 0, 2).returns and all(np.isfinite(returns))
    student = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    obs = collect_observations(network_policy(loud, spec), task, 256, task.train_seed)
    before = action_agreement(student, loud, obs, "continuous")
    behaviour_clone(student, loud, obs, TrainConfig(epochs=20, lr=0.05, weight_decay=0.0), task, spec)
    assert action_agreement(student, loud, obs, "continuous") > before


def test_a_policy_is_searched_fine_tuned_and_saved_end_to_end(tmp_path) -> None:
    from autocompress.pipeline import run_experiment

    cfg = policy_config(tmp_path)
    cfg.update(finetune={"epochs": 1, "lr": 0.003, "weight_decay": 0.0},
               tournament={"finalists": 2, "ft_batches": 2})
    cfg["env"]["task"]["clone_restarts"] = 2
    summary = run_experiment(load_config(cfg), progress=False)
    restarts = summary["finetune"]["restarts"]
    assert len(restarts["returns"]) == 2 and restarts["scored_on_episodes"] == 5 and restarts["kept_seed"] in (0, 1000)
    assert summary["baseline"]["return_mean"] == 500.0 and summary["pruned"]["macs"] <= 0.5 * summary["baseline"]["macs"]
    assert summary["task"]["test_episodes"] == 3 and summary["pruned"]["speedup"] > 0
    assert {"return_mean", "return_mean_before_finetune"} <= set(summary["pruned"])
    result = json.loads((tmp_path / "run" / "tournament.json").read_text())
    assert result["episodes"] == 5 and len(result["rounds"]) == 1
    pruned, _ = load_pruned(tmp_path / "run" / "pruned_model.pt")
    x = torch.randn(16, 4)
    assert pruned(x).shape == (16, 2)


def test_latency_of_a_policy_is_timed_on_a_flat_observation() -> None:
    policy = hand_made_policy()
    small = Pruner(policy, torch.zeros(1, 4)).prune({"0": 0.5, "2": 0.5})
    cmp = LatencyMeter(LatencyConfig(rounds=3, warmup=1), (4,)).compare(policy, small)
    assert cmp.speedup > 0 and cmp.latency_ms > 0


def test_scorer_names_match_the_config_and_unknown_ones_list_the_choices() -> None:
    assert tuple(SCORERS) == CONFIG_SCORERS
    with pytest.raises(ConfigError, match="unknown scorer 'ret'; choose one of top1, episodic_return"):
        get_scorer(EnvConfig(scorer="ret"), hand_made_policy(), torch.zeros(1, 4), torch.zeros(1))  # type: ignore[arg-type]


@pytest.mark.parametrize(("env", "message"), [
    ({"scorer": "return"}, "env.scorer: 'return' is not one of 'top1', 'episodic_return'"),
    ({"scorer": "episodic_return"}, "env.task: scorer episodic_return needs the Gymnasium task"),
    ({"task": {"env_id": "CartPole-v1"}}, "env.task: only scorer episodic_return plays a task"),
    ({"scorer": "episodic_return", "task": {"seed": 999_990}}, "env.task.seed: its episodes overlap those from test_seed"),
    ({"scorer": "episodic_return", "task": {"episodes": 0}}, r"env.task.episodes: 0 must be in \[1, 100000\]"),
    ({"scorer": "episodic_return", "task": {"action": "both"}}, "'both' is not one of 'discrete', 'continuous'"),
    ({"scorer": "episodic_return", "task": {"reward_measure": "loss"}}, "'loss' is not one of 'return', 'imitation'"),
    ({"scorer": "episodic_return", "task": {"reward_measure": "imitation", "imitation_seed": 2_050_000}},
     "env.task.train_seed: its episodes overlap those from imitation_seed"),
    ({"scorer": "episodic_return", "task": {"tournament_measure": "fit"}}, "'fit' is not one of 'reward', 'return'"),
    ({"scorer": "episodic_return", "task": {"tournament_clone": "full"}},
     "env.task.tournament_clone: full judges finalists after the finetune: section"),
    ({"scorer": "episodic_return", "task": {"clone_restarts": 0}}, r"env.task.clone_restarts: 0 must be in \[1, 100\]"),
    ({"scorer": "episodic_return", "task": {"imitation_observations": 0}},
     r"env.task.imitation_observations: 0 must be in \[1, 10000000\]"),
    ({"scorer": "episodic_return", "task": {}, "eval_runtime": "onnxruntime"}, "eval_runtime: a policy plays"),
])
def test_config_errors_are_one_line(env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config({"env": env})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("task", "message"), [
    ({"env_id": "NoSuchTask-v0"}, "env.task.env_id 'NoSuchTask-v0'"),
    ({"env_id": "Pendulum-v1"}, "Pendulum-v1 has a Box action space; env.task.action 'discrete' does not fit it"),
])
def test_tasks_that_cannot_work_are_one_line_errors(tmp_path, task: dict, message: str) -> None:
    cfg = policy_config(tmp_path)
    cfg["env"]["task"].update(task)
    with pytest.raises(TaskError, match=message) as info:
        build_env_and_data(load_config(cfg), progress=False)
    assert "\n" not in str(info.value) and isinstance(info.value, AutocompressError)


def test_an_untrained_policy_is_refused_with_one_line(tmp_path) -> None:
    cfg = policy_config(tmp_path)
    torch.save(get_model("mlp_policy_relu", num_classes=2, in_channels=4).state_dict(), tmp_path / "policy.pth")
    with pytest.raises(TaskError, match="no better than random actions") as info:
        build_env_and_data(load_config(cfg), progress=False)
    assert "\n" not in str(info.value)


def test_an_sb3_agent_s_policy_is_the_zoo_model_and_acts_as_the_agent() -> None:
    pytest.importorskip("stable_baselines3")
    from autocompress import sb3_policy

    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    for algo, zoo, arch in (("ppo", "mlp_policy_tanh", [256, 256]), ("dqn", "mlp_policy_relu", [256, 256]),
                            ("ppo", "mlp_policy_tanh_64", [64, 64]), ("ppo", "mlp_policy_tanh_4x64", [64] * 4)):
        agent = sb3_policy.train_agent(algo, "CartPole-v1", 256, seed=0, hidden=arch)
        net = sb3_policy.extract_policy(agent)
        assert sb3_policy.zoo_name(net) == zoo
        model = get_model(zoo, num_classes=2, in_channels=4)
        model.load_state_dict(net.state_dict())
        ours = model.eval()(torch.as_tensor(obs)).argmax(dim=1).numpy()
        assert np.array_equal(ours, agent.predict(obs, deterministic=True)[0])


def test_a_policy_width_outside_the_zoo_is_refused_before_training() -> None:
    pytest.importorskip("stable_baselines3")
    from autocompress import sb3_policy

    for arch in ([128, 128], [64, 32], [64] * 5):
        with pytest.raises(sb3_policy.SB3Error, match=r"d x w \(d in \[2, 3, 4\], w in \[256, 64\]\)"):
            sb3_policy.train_agent("ppo", "CartPole-v1", 256, hidden=arch)
