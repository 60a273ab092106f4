"""Training that evaluates on any Gymnasium env: data without a simulator name (an imported set) trains with
`spinrl train --env ID`, spinrl.fit(cfg, env=ID) or an env object, its spaces checked against the dataset's."""

from __future__ import annotations

import csv
import json

import gymnasium as gym
import numpy as np
import pytest
from conftest import TINY
from test_gym_envs import TOY, Toy

import spinrl
from spinrl.cli.main import main
from spinrl.errors import ConfigError


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> str:
    """The toy env's data made from an env object without a spec: the dataset names no environment."""
    rng = np.random.default_rng(0)
    ds = spinrl.collect(Toy(size=5), lambda o: rng.integers(0, [3, 2]), episodes=20, progress=False)
    assert ds.env_id is None
    out = tmp_path_factory.mktemp("toy") / "toy.d"
    ds.save(out)
    return str(out)


def cfg(data, out, **kw) -> spinrl.TrainConfig:
    base = dict(dataset=data, out=str(out), steps=4, eval_every=2, eval_episodes=2, eval_num_envs=2, log_every=2,
                batch_size=8, model_kwargs=TINY, progress=False)
    return spinrl.TrainConfig(**{**base, **kw})


def evals(run) -> list[int]:
    with open(run / "metrics.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("eval_return_mean")]


def test_data_without_an_env_evaluates_on_env_from_cli_api_and_object(toy_data, tmp_path, capsys):
    assert main(["train", toy_data, "--out", str(tmp_path / "cli"), "--env", TOY, "--steps", "4", "--eval-every", "2",
                 "--eval-episodes", "2", "--eval-num-envs", "2", "--batch-size", "8", "--no-progress"]) == 0
    assert evals(tmp_path / "cli") == [2, 4] and (tmp_path / "cli" / "policy_best.pt").is_file()
    rec = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert rec["config"]["env"] == TOY and rec["eval_env"] == {"env_id": TOY, "env_kwargs": {}, "object": False}
    by_id = spinrl.fit(cfg(toy_data, tmp_path / "api", greedy=True), env=TOY)
    assert [r["step"] for r in by_id["rows"] if r.get("eval_return_mean") is not None] == [2, 4]
    obj = spinrl.fit(cfg(toy_data, tmp_path / "obj", greedy=True), env=gym.make(TOY, size=5))
    assert evals(tmp_path / "obj") == [2, 4] and obj["best"]["step"] in (2, 4)
    assert json.loads((tmp_path / "obj" / "config.json").read_text())["eval_env"]["object"] is True
    # the same env as an id (episodes stepped together) and as an object (one at a time): greedy, the same scores
    assert [r["eval_return_mean"] for r in obj["rows"]] == [r["eval_return_mean"] for r in by_id["rows"]]
    # a resume must evaluate where the run did
    with pytest.raises(ConfigError, match=f"--resume evaluating on no env but the run evaluated on an env object {TOY}"):
        spinrl.fit(cfg(toy_data, tmp_path / "obj", greedy=True, steps=6, resume=True))
    with pytest.raises(ConfigError, match=f"--resume with env=None but the run used '{TOY}'"):
        spinrl.fit(cfg(toy_data, tmp_path / "api", greedy=True, steps=6, resume=True), env=gym.make(TOY))
    capsys.readouterr()
    assert main(["train", toy_data, "--out", str(tmp_path / "none"), "--steps", "2", "--batch-size", "8",
                 "--no-progress"]) == 0  # no env anywhere: trains, says once that nothing is evaluated
    assert capsys.readouterr().out.count("the dataset names no environment; pass --env ID") == 1


def test_env_spaces_are_checked_against_the_dataset(toy_data, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"dataset nvec \[3, 2\] differs from maze's action space \[2(, 2){11}\]; "
                                          r"pass the env the data was collected in \(--env\)") as e:
        spinrl.fit(cfg(toy_data, tmp_path / "a", env="maze"))
    assert "\n" not in str(e.value) and not (tmp_path / "a").exists()
    with pytest.raises(ConfigError, match=r"dataset observations have 2 features but CartPoleLike produces 4"):
        spinrl.fit(cfg(toy_data, tmp_path / "b"), env=CartPoleLike())
    assert main(["train", toy_data, "--out", str(tmp_path / "c"), "--env", "spinrl/Maze-v0", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "dataset nvec [3, 2] differs from spinrl/Maze-v0's action space" in err


class CartPoleLike(gym.Env):
    """MultiDiscrete([3, 2]) actions like the toy env, but 4 observation features."""

    def __init__(self):
        self.action_space = gym.spaces.MultiDiscrete([3, 2])
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(4, np.float32), {}

    def step(self, action):
        return np.zeros(4, np.float32), 0.0, True, False, {}
