"""Dataset-only evaluation: FQE recovers an analytic value on a tabular chain; agreement counts exactly."""

from __future__ import annotations

import numpy as np
import pytest

from spinrl.data import from_episodes
from spinrl.errors import ConfigError
from spinrl.evaluation.offline import FQEConfig, action_agreement, discounted_episode_return, fqe, offline_evaluate

L = 6  # states 0..5; state 5 is the terminal goal


class RightPolicy:
    """Always (1, 0) = move right: from state 0 it reaches the goal after L-1 steps."""

    nvec = (2, 2)

    def act(self, obs, deterministic=False, generator=None):
        return np.tile(np.array([1, 0]), (len(obs), 1))


def chain_dataset(episodes=300, seed=0):
    """Random behaviour on the chain from random starts: (1,0) right, (0,1) left, else stay; +1 entering the goal."""
    rng = np.random.default_rng(seed)
    eye = np.eye(L, dtype=np.float32)
    obs, acts, rews, terms = [], [], [], []
    for _ in range(episodes):
        x = int(rng.integers(0, L - 1))
        o, a_, r_ = [eye[x]], [], []
        term = False
        for _ in range(8):
            a = rng.integers(0, 2, size=2)
            x2 = min(x + 1, L - 1) if (a[0], a[1]) == (1, 0) else max(x - 1, 0) if (a[0], a[1]) == (0, 1) else x
            r = 1.0 if x2 == L - 1 else 0.0
            o.append(eye[x2]); a_.append(a); r_.append(r)
            x = x2
            if x == L - 1:
                term = True
                break
        obs.append(np.stack(o)); acts.append(np.stack(a_)); rews.append(np.array(r_)); terms.append(term)
    lengths = np.array([len(a) for a in acts])
    T = int(lengths.sum())
    te, tr = np.zeros(T, bool), np.zeros(T, bool)
    ends = np.cumsum(lengths) - 1
    te[ends] = terms
    tr[ends] = ~np.asarray(terms)
    return from_episodes(np.concatenate(obs), np.concatenate(acts).astype(np.int64), np.concatenate(rews), te, tr, lengths,
                         {"nvec": [2, 2], "env_id": None})


def test_fqe_matches_the_analytic_value_of_a_chain():
    ds = chain_dataset()
    gamma = 0.9
    # Evaluate at the start state 0 only: restrict to episodes that start there.
    starts = np.concatenate([[0], np.cumsum(ds.episode_lengths)[:-1]])
    from0 = np.flatnonzero(np.asarray(ds.transition_observations)[starts][:, 0] == 1.0)
    res = fqe(RightPolicy(), ds, FQEConfig(gamma=gamma, iterations=25, steps_per_iteration=60, hidden=64,
                                          action_samples=1, deterministic=True))
    # Per-start value: reward 1 on the (L-1-x)-th step -> gamma^(L-2-x); mean over the data's start states.
    x0 = np.argmax(np.asarray(ds.transition_observations)[starts], axis=1)
    truth = float(np.mean(gamma ** (L - 2 - x0)))
    assert res["fqe_value"] == pytest.approx(truth, abs=0.04)
    assert len(from0) > 0
    # The behaviour's Monte Carlo value is a different (lower) number: FQE is not echoing the data.
    assert res["behaviour_value"] < truth - 0.1


def test_action_agreement_counts_exact_and_per_sub_action():
    ds = chain_dataset(episodes=50)
    res = action_agreement(RightPolicy(), ds)
    acts = np.asarray(ds.actions)
    assert res["exact_match"] == pytest.approx(float(((acts[:, 0] == 1) & (acts[:, 1] == 0)).mean()))
    assert res["per_sub_action"] == pytest.approx([float((acts[:, 0] == 1).mean()), float((acts[:, 1] == 0).mean())])
    assert res["sub_action_agreement"] == pytest.approx(np.mean(res["per_sub_action"]))


def test_discounted_return_and_offline_evaluate_on_a_split():
    ds = chain_dataset(episodes=40)
    assert discounted_episode_return(ds, 1.0) == pytest.approx(float(np.mean(ds.episode_returns())))
    res = offline_evaluate(RightPolicy(), ds, FQEConfig(iterations=3, steps_per_iteration=5, hidden=16), progress=False)
    assert res["heldout_episodes"] == 8 and res["simulator_discounted_return"] is None
    with pytest.raises(ConfigError, match="iterations"):
        offline_evaluate(RightPolicy(), ds, FQEConfig(iterations=0), progress=False)


def test_cli_eval_offline_writes_the_report_column(tmp_path, capsys):
    """A trained policy on maze data: `spinrl eval --offline` prints FQE, agreement and the simulator's value."""
    from spinrl.cli.main import main
    from spinrl.experiments.datasets import DataMakeConfig, make_dataset
    from spinrl.training import TrainConfig, run

    data = str(make_dataset(DataMakeConfig(env="maze", env_kwargs={"actuators": 3}, level="medium-expert", transitions=600,
                                           seed=0, out=str(tmp_path / "m.d")), progress=False))
    tiny = {"mlp_hidden": 32, "critic_hidden": 32}
    out = run(TrainConfig(dataset=data, out=str(tmp_path / "run"), steps=10, eval_every=0, batch_size=16, model_kwargs=tiny,
                          progress=False))
    capsys.readouterr()
    assert main(["eval", str(out / "policy.pt"), "--offline", data, "--fqe-iterations", "2", "--json"]) == 0
    import json

    res = json.loads(capsys.readouterr().out)
    assert res["simulator_discounted_return"] is not None and 0.0 <= res["exact_match"] <= 1.0
    assert json.loads((out / "offline_eval.json").read_text())["fqe_value"] == res["fqe_value"]
    assert main(["eval", str(out / "policy.pt"), "--offline", data, "--fqe-iterations", "2", "--json", "--threads", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["exact_match"] == res["exact_match"]
    assert main(["eval", str(out / "policy.pt"), "--offline", str(tmp_path / "nope.d")]) == 2
