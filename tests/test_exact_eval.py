"""Exact evaluation on a known model (ICU-Sepsis): expected returns from the MDP, action probabilities
that match the policy's own sampling, and the trainer's evaluations using it."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from spinrl import envs
from spinrl.errors import ConfigError
from spinrl.evaluation import Policy, evaluate
from spinrl.evaluation.evaluate import exact_evaluate, resolve_eval_mode
from spinrl.experiments.datasets import DataMakeConfig, make_dataset
from spinrl.training import TrainConfig, run

pytest.importorskip("icu_sepsis")

TINY = {"mlp_hidden": 32, "critic_hidden": 32, "lstm_hidden": 32, "lstm_layers": 1, "sub_action_embed": 8}


@pytest.fixture(scope="module")
def sepsis_runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("sepsis")
    data = root / "sepsis.d"
    make_dataset(DataMakeConfig(env="sepsis", level="medium-expert", transitions=2000, seed=0, out=str(data)), progress=False)
    runs = {}
    for algo, actor in (("iql", "factored"), ("bcq", "factored"), ("bcq", "autoregressive")):
        out = root / f"{algo}-{actor}"
        run(TrainConfig(dataset=str(data), out=str(out), algo=algo, actor=actor, steps=20, eval_every=10,
                        log_every=10, batch_size=32, model_kwargs=TINY, progress=False))
        runs[(algo, actor)] = out
    return runs


def test_exact_return_of_the_clinicians_policy_matches_the_package_value():
    from spinrl.envs.sepsis import SEPSIS_EXACT, load_dynamics, state_index

    pol = load_dynamics()["expert_policy"]
    pol = np.where(pol.sum(1, keepdims=True) > 0, pol, 1.0 / pol.shape[1])
    v = envs.exact_return("sepsis", lambda obs: pol[state_index(obs)])
    # terminal states share one observation, so they read state 713's row: their probabilities are unused
    assert v == pytest.approx(SEPSIS_EXACT["clinicians"], abs=1e-8)
    assert envs.exact_return("sepsis", lambda obs: np.full((len(obs), 25), 1 / 25)) == pytest.approx(SEPSIS_EXACT["random"], abs=1e-8)


def test_exact_mode_needs_a_known_model():
    assert resolve_eval_mode("auto", "sepsis") == "exact"
    assert resolve_eval_mode("auto", "maze", {"actuators": 5}) == "rollout"
    assert resolve_eval_mode("rollout", "sepsis") == "rollout"
    with pytest.raises(ConfigError, match="eval-mode exact: maze has no known model"):
        resolve_eval_mode("exact", "maze", {"actuators": 5})
    with pytest.raises(ConfigError, match="--eval-mode must be one of"):
        resolve_eval_mode("exactly", "sepsis")


@pytest.mark.parametrize("key", [("iql", "factored"), ("bcq", "factored"), ("bcq", "autoregressive")])
@pytest.mark.parametrize("greedy", [False, True])
def test_action_probs_match_the_policys_own_sampling(sepsis_runs, key, greedy):
    """The distribution exact evaluation uses is the one ``act`` draws from (joint index = fluid * 5 + vaso)."""
    policy = Policy.load(sepsis_runs[key] / "policy.pt")
    obs = torch.as_tensor(envs.make("sepsis").reset(seed=3)[0]).view(1, -1)
    p = policy.action_probs(obs, deterministic=greedy)[0].numpy()
    assert p.shape == (25,) and p.sum() == pytest.approx(1.0) and (p >= 0).all()
    n = 20000
    a = policy.act(obs.repeat(n, 1).numpy(), deterministic=greedy, generator=torch.Generator().manual_seed(1))
    freq = np.bincount(a[:, 0] * 5 + a[:, 1], minlength=25) / n
    np.testing.assert_allclose(freq, p, atol=0.02)


def test_training_evaluates_sepsis_exactly(sepsis_runs):
    out = sepsis_runs[("iql", "factored")]
    with open(out / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["eval_return_mean"]]
    assert [float(r["eval_return_std"]) for r in rows] == [0.0, 0.0]
    policy = Policy.load(out / "policy.pt")
    res = evaluate(policy)  # auto -> exact on sepsis, ignores episodes
    assert res.exact and res.as_dict()["method"] == "exact"
    assert float(rows[-1]["eval_return_mean"]) == pytest.approx(res.mean, abs=1e-12)
    ref = res.reference
    assert res.normalized_mean == pytest.approx(100 * (res.mean - ref["random"]) / (ref["expert"] - ref["random"]))
    assert exact_evaluate(policy, "sepsis", greedy=True).mean != res.mean  # greedy is another policy
    rollout = evaluate(policy, mode="rollout", episodes=4)
    assert not rollout.exact and rollout.as_dict()["episodes"] == 4


def test_eval_mode_exact_on_maze_fails_before_training(tmp_path):
    data = tmp_path / "maze.d"
    make_dataset(DataMakeConfig(env="maze", env_kwargs={"actuators": 5}, level="medium", transitions=500, seed=0,
                                out=str(data)), progress=False)
    with pytest.raises(ConfigError, match="no known model"):
        run(TrainConfig(dataset=str(data), out=str(tmp_path / "r"), steps=4, eval_every=2, eval_mode="exact",
                          model_kwargs=TINY, progress=False))
    assert not (tmp_path / "r").exists()
