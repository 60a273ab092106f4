"""Any Gymnasium environment end to end (a toy env registered here, not one of spinrl's), spinrl's envs
under Gymnasium ids, Minari's env_spec, and rendered rollouts (Maze, DM Control) as videos."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import spinrl
from spinrl.cli.main import main
from spinrl.data import from_arrays
from spinrl.errors import SpinError

TINY = {"d_model": 16, "n_heads": 2, "n_blocks": 1, "head_hidden": 16, "mlp_hidden": 16, "critic_hidden": 16}
TOY = "SpinrlTestToy-v0"


class Toy(gym.Env):
    """A walk on ``size`` cells: sub-action 0 moves left/stay/right, sub-action 1 doubles the move; the right end pays."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, size: int = 5, render_mode: str | None = None):
        self.size, self.render_mode = int(size), render_mode
        self.action_space = gym.spaces.MultiDiscrete([3, 2])
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)

    def _obs(self) -> np.ndarray:
        return np.array([self.pos / (self.size - 1), self.t / 8], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.t = int(self.np_random.integers(0, self.size // 2 + 1)), 0
        return self._obs(), {}

    def step(self, action):
        self.pos = int(np.clip(self.pos + (int(action[0]) - 1) * (1 + int(action[1])), 0, self.size - 1))
        self.t += 1
        done = self.pos == self.size - 1
        return self._obs(), float(done) - 0.1, done, self.t >= 8 and not done, {}

    def render(self):
        img = np.full((16, 16 * self.size, 3), 255, np.uint8)
        img[:, 16 * self.pos: 16 * self.pos + 16] = (200, 30, 30)
        return img


if TOY not in gym.registry:
    gym.register(TOY, entry_point=Toy)


def _frames(path) -> np.ndarray:
    import imageio.v3 as iio

    return iio.imread(path).astype(np.float64)


def _assert_not_blank(path, n_min: int) -> None:
    f = _frames(path)
    assert f.ndim == 4 and f.shape[0] >= n_min and f.shape[-1] == 3
    assert f.std() > 0 and np.abs(np.diff(f, axis=0)).sum(axis=(1, 2, 3)).max() > 0  # not blank, not frozen


def test_toy_gymnasium_env_collects_trains_with_evaluation_and_evaluates(tmp_path, capsys):
    rng = np.random.default_rng(0)
    ds = spinrl.collect(gym.make(TOY, size=5), lambda o: rng.integers(0, [3, 2]), episodes=40, progress=False)
    assert (ds.env_id, ds.env_kwargs, list(ds.nvec)) == (TOY, {"size": 5}, [3, 2])  # from env.spec: rebuildable
    ds.save(tmp_path / "toy.d")
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "toy.d"), "--out", str(run), "--steps", "4", "--eval-every", "2",
                 "--eval-episodes", "2", "--eval-num-envs", "2", "--batch-size", "8", "--no-progress"]) == 0
    with open(run / "metrics.csv") as f:
        evals = [r for r in csv.DictReader(f) if r.get("eval_return_mean")]
    assert [int(r["step"]) for r in evals] == [2, 4]  # training evaluated on the toy env
    capsys.readouterr()
    assert main(["eval", str(run / "policy.pt"), "--env", TOY, "--size", "5", "--episodes", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["episodes"] == 3 and out["normalized_score"] is None  # no references for a foreign env
    by_id = spinrl.evaluate(run / "policy.pt", episodes=3)  # the dataset's env and options
    assert np.array_equal(by_id.returns, spinrl.evaluate(run / "policy.pt", env=TOY, size=5, episodes=3).returns)
    env = gym.make(TOY, size=5, render_mode="rgb_array")
    res = spinrl.evaluate(run / "policy.pt", env=env, episodes=2, video=tmp_path / "toy.mp4")
    assert len(res.returns) == 2 and res.video["frames"] == res.video["steps"] + 1
    _assert_not_blank(tmp_path / "toy.mp4", 2)
    with pytest.raises(SpinError, match=r"trained for 2-dim observations and nvec \[3, 2\].* has 2 and \[2, 2, 2\]") as e:
        spinrl.evaluate(run / "policy.pt", env="maze", actuators=3)
    assert "\n" not in str(e.value)
    with pytest.raises(SpinError, match="render_mode='rgb_array'"):
        spinrl.evaluate(run / "policy.pt", env=gym.make(TOY), video=tmp_path / "no.mp4")


def test_data_without_a_simulator_suggests_eval_every_0(tmp_path, capsys):
    rng = np.random.default_rng(0)
    T = 30
    term = np.zeros(T, bool)
    term[[9, 19, 29]] = True
    from_arrays(rng.random((T, 3), np.float32), rng.integers(0, 2, (T, 2)), rng.random(T), term, np.zeros(T, bool),
                nvec=[2, 2], next_observations=rng.random((T, 3), np.float32), env_id="MyEnv-v0").save(tmp_path / "mine.d")
    args = ["train", str(tmp_path / "mine.d"), "--steps", "2", "--batch-size", "8", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'MyEnv-v0' is unknown" in err and "--eval-every 0" in err
    assert main([*args, "--out", str(tmp_path / "b"), "--eval-every", "0"]) == 0
    assert main(["eval", str(tmp_path / "b" / "policy.pt"), "--env", "nomodule_xyz:MyEnv-v0"]) == 2
    assert "cannot import module 'nomodule_xyz'" in capsys.readouterr().err


def test_spinrl_envs_are_gymnasium_ids_registered_on_import_without_a_simulator():
    code = ("import sys, spinrl, gymnasium as gym; assert 'dm_control' not in sys.modules and 'mujoco' not in sys.modules; "
            "env = gym.make('spinrl/Maze-v0', actuators=12); assert list(env.action_space.nvec) == [2] * 12; "
            "assert gym.make('spinrl/Cone-v0', dims=3).action_space.nvec.size == 6; "
            "assert {'spinrl/dmc-v0', 'spinrl/dmc-cheetah-run-v0', 'spinrl/Sepsis-v0'} <= set(gym.registry); "
            "assert 'dm_control' not in sys.modules; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
    from spinrl import envs

    # the Gymnasium ids are aliases: same dynamics (vectorized core) and the benchmark's reference scores
    assert envs.reference_scores("spinrl/Maze-v0", actuators=12) == envs.reference_scores("maze", actuators=12)
    a = envs.make("spinrl/Maze-v0", actuators=5)
    b = gym.make("spinrl/Maze-v0", actuators=5)
    assert np.array_equal(a.reset(seed=3)[0], b.reset(seed=3)[0])
    for _ in range(5):
        act = np.ones(5, np.int64)
        assert np.array_equal(a.step(act)[0], b.step(act)[0])
    assert envs.canonical("spinrl/dmc-v0", {"domain": "cheetah", "task": "run", "bins": 3}) == ("dmc:cheetah-run", {"bins": 3})
    assert envs.canonical("spinrl/dmc-cheetah-run-v0", {"bins": 5}) == ("dmc:cheetah-run", {"bins": 5})
    with pytest.raises(SpinError, match="action space Discrete"):
        envs.make("CartPole-v1")


def test_minari_export_carries_an_env_spec_that_recover_environment_rebuilds(tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    pytest.importorskip("h5py")
    from spinrl.data.minari_io import export_minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    rng = np.random.default_rng(0)
    T = 20
    term = np.zeros(T, bool)
    term[-1] = True
    ds = from_arrays(rng.random((T, 2), np.float32), rng.integers(0, 2, (T, 3)), rng.random(T), term, np.zeros(T, bool),
                     nvec=[2, 2, 2], next_observations=rng.random((T, 2), np.float32), env_id="maze",
                     env_kwargs={"actuators": 3})
    export_minari(ds, "spinrl/test/maze3-v0")
    m = minari.load_dataset("spinrl/test/maze3-v0")
    assert (m.spec.env_spec.id, m.spec.env_spec.kwargs) == ("spinrl/Maze-v0", {"actuators": 3})
    env = m.recover_environment()
    assert list(env.action_space.nvec) == [2, 2, 2] and env.observation_space.shape == (2,)
    assert env.reset(seed=0)[0].shape == (2,)


def test_maze_video_from_cli_and_api(tmp_path, capsys):
    pytest.importorskip("imageio_ffmpeg")
    from spinrl import envs

    rng = np.random.default_rng(0)
    ds = spinrl.collect(envs.make("maze", actuators=3), lambda o: rng.integers(0, 2, 3), episodes=3, progress=False,
                        env_id="maze", env_kwargs={"actuators": 3})
    ds.save(tmp_path / "maze.d")
    assert main(["train", str(tmp_path / "maze.d"), "--out", str(tmp_path / "run"), "--steps", "2", "--eval-every", "0",
                 "--batch-size", "8", "--no-progress"]) == 0
    policy = tmp_path / "run" / "policy.pt"
    assert main(["eval", str(policy), "--episodes", "1", "--video", str(tmp_path / "cli.mp4")]) == 0
    assert "video: " in capsys.readouterr().out
    _assert_not_blank(tmp_path / "cli.mp4", 10)
    res = spinrl.evaluate(policy, episodes=1, video=tmp_path / "api.mp4")
    assert res.video["frames"] == res.video["steps"] + 1 and res.as_dict()["video"]["path"].endswith("api.mp4")
    assert _frames(tmp_path / "api.mp4").shape[1:] == (256, 256, 3)
    with pytest.raises(SpinError, match=r"--video .*\.mp4"):
        spinrl.evaluate(policy, video=tmp_path / "x.avi")
    with pytest.raises(SpinError, match="cone renders none"):
        envs.make("cone", render_mode="rgb_array")


def test_dmc_video_renders_on_the_cpu(tmp_path):
    pytest.importorskip("dm_control", reason="dm-control not installed (extra 'dmc')")
    pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg not installed (extra 'video')")
    from spinrl.evaluation.video import record_video

    env = gym.make("spinrl/dmc-cheetah-run-v0", render_mode="rgb_array")
    env.unwrapped.render_size = (48, 64)  # small frames: the test checks the pipeline, not the picture
    rng = np.random.default_rng(0)
    try:
        info = record_video(env, lambda o: rng.integers(0, 3, (1, 6)), 0, tmp_path / "cheetah.mp4", max_steps=30)
    except SpinError as e:
        if "DM Control rendering failed" in str(e):  # this machine has no GL for MuJoCo (EGL/OSMesa)
            pytest.skip(str(e))
        raise
    assert info["steps"] == 30 and info["fps"] == pytest.approx(100 / 3)  # cheetah steps at 100 Hz: every 3rd step
    _assert_not_blank(tmp_path / "cheetah.mp4", 10)
