"""Public factorised-DMC pickle import/export and Minari round trips."""

import os
import pickle
import sys

import numpy as np
import pytest

from spinrl.data import from_arrays
from spinrl.data.interop import PUBLIC_REFERENCE, export_public_dmc, import_public_dmc, parse_public_path
from spinrl.errors import DatasetError, MissingExtraError

ARRAYS = ("observations", "actions", "rewards", "terminations", "truncations", "episode_lengths")


def _assert_same(a, b):
    for name in ARRAYS:
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)


def _cheetah(lengths, end="trunc", seed=0, level="medium"):
    """A cheetah-run shaped dataset (17-dim obs, 6 sub-actions, 3 bins); no physics needed."""
    rng = np.random.default_rng(seed)
    T = int(sum(lengths))
    obs = rng.normal(size=(T, 17)).astype(np.float32)
    nxt = np.roll(obs, -1, 0)
    ends = np.cumsum(lengths) - 1
    nxt[ends] = rng.normal(size=(len(ends), 17))
    term = np.zeros(T, bool)
    trunc = np.zeros(T, bool)
    (term if end == "term" else trunc)[ends] = True
    return from_arrays(
        obs, rng.integers(0, 3, (T, 6)), rng.normal(size=T), term, trunc, nvec=[3] * 6, next_observations=nxt,
        env_id="dmc:cheetah-run", env_kwargs={"bins": 3}, level=level,
    )


def _write(path, data, protocol=4):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    return path


def _tuples(ds, action_fn=lambda a: a):
    """The public layout written by hand (float64 states, like the simulator), independent of export."""
    oi = ds._obs_index
    done = np.asarray(ds.terminations) | np.asarray(ds.truncations)
    obs = np.asarray(ds.observations, dtype=np.float64)
    return [
        (obs[oi[t]], action_fn(np.asarray(ds.actions[t])), np.float64(ds.rewards[t]), obs[oi[t] + 1], bool(done[t]))
        for t in range(ds.num_transitions)
    ]


# ---------------------------------------------------------------------- round trips
def test_round_trip_truncations(tmp_path):
    ds = _cheetah([7, 12, 5], level="medium-expert")
    p = export_public_dmc(ds, tmp_path)
    assert p == tmp_path / "3_bins" / "cheetah-run-medium-expert"
    assert [x.name for x in p.parent.iterdir()] == [p.name]  # temp file renamed away
    back, report = import_public_dmc(p, done_means="truncation")
    _assert_same(ds, back)
    assert back.meta["env_id"] == "dmc:cheetah-run" and back.meta["env_kwargs"] == {"bins": 3}
    assert back.meta["level"] == "medium-expert"
    assert back.meta["behaviour"] == "public factorised-DMC dataset"
    assert back.meta["generator"]["imported_from"] == str(p)
    assert back.meta["reference"] == {"random": 5.39, "expert": 664.57, "source": "public benchmark"}
    assert "integer indices" in report and "3 (12.500% of steps)" in report and "100.0% of episodes" in report


def test_round_trip_terminations_auto(tmp_path):
    ds = _cheetah([7, 12, 5], end="term")
    back, report = import_public_dmc(export_public_dmc(ds, tmp_path))
    _assert_same(ds, back)  # short episodes ending in done: auto reads done as termination
    assert "terminations" in report and back.terminations.sum() == 3 and back.truncations.sum() == 0


def test_auto_reads_time_limit_done_as_truncation(tmp_path):
    ds = _cheetah([1000, 1000])
    back, report = import_public_dmc(export_public_dmc(ds, tmp_path))
    _assert_same(ds, back)
    assert "1000 x2" in report and "imported as truncations" in report
    assert back.meta["generator"]["done_as_truncation"] == 2


def test_round_trip_real_dmc_rollout(tmp_path):
    envs = pytest.importorskip("spinrl.envs")
    from spinrl.data import collect

    try:
        env = envs.make("dmc:cheetah-run", bins=3)
    except Exception as e:  # pragma: no cover - envs module mid-edit or dm_control missing
        pytest.skip(f"dmc env unavailable: {e}")
    rng = np.random.default_rng(0)
    ds = collect(env, lambda o: rng.integers(0, 3, 6), episodes=1, seed=0, progress=False,
                 env_id="dmc:cheetah-run", env_kwargs={"bins": 3}, level="random")
    assert list(ds.episode_lengths) == [1000] and ds.truncations[-1]
    back, report = import_public_dmc(export_public_dmc(ds, tmp_path))
    _assert_same(ds, back)
    assert "imported as truncations" in report


# ---------------------------------------------------------------------- encodings and boundaries
def test_continuous_grid_and_one_hot_actions(tmp_path):
    ds = _cheetah([6, 4], end="term")
    grid = np.linspace(-1, 1, 3)
    p = _write(tmp_path / "3_bins" / "cheetah-run-expert", _tuples(ds, lambda a: grid[a].astype(np.float32)))
    back, report = import_public_dmc(p)
    np.testing.assert_array_equal(back.actions, ds.actions)
    assert "continuous values on linspace(-1, 1, 3)" in report
    p = _write(tmp_path / "3_bins" / "cheetah-run-random", _tuples(ds, lambda a: np.eye(3, dtype=np.float32)[a]))
    back, report = import_public_dmc(p)
    np.testing.assert_array_equal(back.actions, ds.actions)
    assert "one-hot" in report and back.meta["level"] == "random"
    # float64 states are stored as float32
    np.testing.assert_array_equal(back.observations, ds.observations)
    off = _tuples(ds, lambda a: grid[a] + 0.2)
    with pytest.raises(DatasetError, match="not on the bin grid"):
        import_public_dmc(_write(tmp_path / "3_bins" / "cheetah-run-medium", off))


def test_even_bins_grid(tmp_path):
    ds = from_arrays(np.zeros((4, 17), np.float32), np.array([[0] * 6, [1] * 6, [2] * 6, [3] * 6]), np.zeros(4),
                     [0, 0, 0, 1], [0, 0, 0, 0], nvec=[4] * 6)
    grid = np.linspace(-1, 1, 4)  # {-1, -1/3, 1/3, 1}: no zero
    p = _write(tmp_path / "4_bins" / "cheetah-run-medium", _tuples(ds, lambda a: grid[a]))
    back, _ = import_public_dmc(p)
    np.testing.assert_array_equal(back.actions, ds.actions)
    assert back.meta["env_kwargs"] == {"bins": 4} and back.meta["reference"] is None


def test_state_discontinuity_ends_an_episode_without_done(tmp_path):
    ds = _cheetah([5, 5], end="term")
    data = _tuples(ds)
    s, a, r, ns, _ = data[4]
    data[4] = (s, a, r, ns, False)  # lose the done flag; the jump to episode 2's first state remains
    back, report = import_public_dmc(_write(tmp_path / "3_bins" / "cheetah-run-medium", data))
    assert list(back.episode_lengths) == [5, 5]
    assert bool(back.truncations[4]) and not back.terminations[4] and bool(back.terminations[9])
    np.testing.assert_array_equal(back.observations, ds.observations)  # final next-state kept
    assert "1 episode ends without done" in report and "50.0% of episodes end with done" in report


def test_boundaries_across_conversion_chunks(tmp_path, monkeypatch):
    import spinrl.data.interop as I

    ds = _cheetah([3, 4, 2, 5])  # ends at steps 2, 6, 8, 13
    data = _tuples(ds)
    for t in (2, 6):  # drop two done flags: one end falls on a chunk edge (chunk 3), one inside a chunk
        data[t] = data[t][:4] + (False,)
    monkeypatch.setattr(I, "_CHUNK", 3)
    back, report = import_public_dmc(_write(tmp_path / "3_bins" / "cheetah-run-medium", data), done_means="truncation")
    _assert_same(ds, back)
    assert "2 episode ends without done" in report


def test_path_inference_and_errors(tmp_path):
    assert parse_public_path("/x/3_bins/humanoid-stand-random-medium-expert") == ("dmc:humanoid-stand", 3, "random-medium-expert")
    assert parse_public_path("/x/30_bins/dog-trot-medium") == ("dmc:dog-trot", 30, "medium")
    assert parse_public_path("/x/y/dog-trot-medium", bins=10) == ("dmc:dog-trot", 10, "medium")
    assert parse_public_path("/x/y/mydata", env_id="dmc:dog-trot", level="expert") == ("dmc:dog-trot", None, "expert")
    assert parse_public_path("/x/y/dog-trot-medium-expert", env_id="dmc:dog-trot")[2] == "medium-expert"
    with pytest.raises(DatasetError, match="cannot infer the task"):
        parse_public_path("/x/3_bins/weird")
    with pytest.raises(DatasetError, match="cannot infer the level"):
        parse_public_path("/x/3_bins/weird", env_id="dmc:cheetah-run")
    ds = _cheetah([3])
    p = _write(tmp_path / "nobins" / "cheetah-run-medium", _tuples(ds))
    with pytest.raises(DatasetError, match="pass bins"):
        import_public_dmc(p)
    assert import_public_dmc(p, bins=3)[0].meta["env_kwargs"] == {"bins": 3}
    with pytest.raises(DatasetError, match="another task"):
        import_public_dmc(_write(tmp_path / "3_bins" / "dog-trot-medium", _tuples(ds)))
    with pytest.raises(DatasetError, match="does not exist"):
        import_public_dmc(tmp_path / "3_bins" / "cheetah-run-nothing")
    with pytest.raises(DatasetError, match="done_means"):
        import_public_dmc(p, bins=3, done_means="maybe")


def test_malformed_files(tmp_path):
    d = tmp_path / "3_bins"
    with pytest.raises(DatasetError, match="expected a non-empty list"):
        import_public_dmc(_write(d / "cheetah-run-a", {"obs": np.zeros(3)}))
    with pytest.raises(DatasetError, match="expected \\(state, action, reward, next_state, done\\)"):
        import_public_dmc(_write(d / "cheetah-run-b", [(np.zeros(17), 1)]))
    good = _write(d / "cheetah-run-c", _tuples(_cheetah([4])))
    raw = good.read_bytes()
    (d / "cheetah-run-d").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="not a readable pickle"):
        import_public_dmc(d / "cheetah-run-d")
    ds = _cheetah([4])
    data = _tuples(ds)
    data[2] = (data[2][0], data[2][1], np.nan, data[2][3], data[2][4])
    with pytest.raises(DatasetError, match="NaN"):
        import_public_dmc(_write(d / "cheetah-run-e", data))


# ---------------------------------------------------------------------- restricted unpickler
class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def test_restricted_unpickler_refuses_code_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    data = _tuples(_cheetah([3]))
    data.append(_Evil(marker))
    p = _write(tmp_path / "3_bins" / "cheetah-run-medium", data)
    pickle.loads(pickle.dumps(1))  # sanity: ordinary pickles still work in this process
    with pytest.raises(DatasetError, match=rf"{os.system.__module__}\.system, which was refused for safety"):
        import_public_dmc(p)
    assert not marker.exists()
    p2 = _write(tmp_path / "3_bins" / "cheetah-run-expert", [_EvalEvil()])
    with pytest.raises(DatasetError, match="builtins.eval, which was refused for safety"):
        import_public_dmc(p2)
    # a class from an ordinary package is refused too (no arbitrary imports)
    p3 = _write(tmp_path / "3_bins" / "cheetah-run-random", [pytest.approx(1.0)])
    with pytest.raises(DatasetError, match="refused for safety"):
        import_public_dmc(p3)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_all_pickle_protocols_of_numpy_data_load(tmp_path, protocol):
    ds = _cheetah([3, 2], end="term")
    data = [(s.astype(np.float64), a.astype(np.int32), np.float32(r), ns, np.bool_(d)) for s, a, r, ns, d in _tuples(ds)]
    back, _ = import_public_dmc(_write(tmp_path / "3_bins" / "cheetah-run-medium", data, protocol=protocol))
    _assert_same(ds, back)


def test_export_errors(tmp_path):
    ds = _cheetah([3])
    ds.meta["level"] = None
    with pytest.raises(DatasetError, match="needs a level"):
        export_public_dmc(ds, tmp_path)
    ds.meta["level"] = "medium"
    ds.meta["env_id"] = "maze"
    with pytest.raises(DatasetError, match="dmc:<domain>-<task>"):
        export_public_dmc(ds, tmp_path)
    ds.meta["env_id"] = "dmc:cheetah-run"
    ds.meta["env_kwargs"] = {}
    with pytest.raises(DatasetError, match="bins"):
        export_public_dmc(ds, tmp_path)


def test_reference_table_matches_benchmarks():
    assert PUBLIC_REFERENCE[("dog-trot", 30)] == (6.39, 768.24)  # not the 681.14 copy error
    assert PUBLIC_REFERENCE[("quadruped-walk", 3)] == (121.37, 781.19)
    assert len(PUBLIC_REFERENCE) == 11


# ---------------------------------------------------------------------- Minari
def test_minari_missing_extra(monkeypatch):
    from spinrl.data import minari_io

    monkeypatch.setitem(sys.modules, "minari", None)
    with pytest.raises(MissingExtraError, match="spinrl\\[minari\\]"):
        minari_io.import_minari("x/y-v0")


def test_minari_round_trip(tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    pytest.importorskip("h5py")
    import gymnasium as gym

    from spinrl.data.minari_io import export_minari, import_minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    rng = np.random.default_rng(0)
    T = 40
    term = np.zeros(T, bool)
    trunc = np.zeros(T, bool)
    term[9] = True
    trunc[[24, 39]] = True
    nvec = [2, 3, 5]
    ds = from_arrays(rng.normal(size=(T, 4)).astype(np.float32), rng.integers(0, nvec, (T, 3)), rng.normal(size=T),
                     term, trunc, nvec=nvec, next_observations=rng.normal(size=(T, 4)), env_id="maze",
                     env_kwargs={"actuators": 3}, level="medium", behaviour="test policy",
                     reference={"random": -1.0, "expert": 2.0, "source": "ours"})
    out = export_minari(ds, "spinrl/test/toy-v0")
    assert out.is_dir() and str(out).startswith(str(tmp_path))
    m = minari.load_dataset("spinrl/test/toy-v0")
    assert isinstance(m.action_space, gym.spaces.MultiDiscrete) and list(m.action_space.nvec) == nvec
    assert m.total_episodes == 3 and m.total_steps == T
    ep = m[1]
    assert ep.observations.shape == (16, 4) and ep.actions.shape == (15, 3)
    back = import_minari("spinrl/test/toy-v0")
    _assert_same(ds, back)
    for k in ("env_id", "env_kwargs", "level", "behaviour", "reference", "nvec"):
        assert back.meta[k] == ds.meta[k], k
    assert back.meta["generator"]["minari_dataset_id"] == "spinrl/test/toy-v0"
    assert m.storage.metadata["ref_max_score"] == 2.0
    with pytest.raises(DatasetError, match="already exists"):
        export_minari(ds, "spinrl/test/toy-v0")
    with pytest.raises(DatasetError, match="malformed"):
        export_minari(ds, "no version")
    with pytest.raises(DatasetError, match="not found"):
        import_minari("spinrl/test/absent-v0")

    # a dataset with a non-factored action space is refused, naming the space
    from minari.data_collector import EpisodeBuffer

    buf = EpisodeBuffer(observations=np.zeros((3, 2), np.float32), actions=np.array([0, 1]), rewards=np.zeros(2),
                        terminations=np.array([False, True]), truncations=np.array([False, False]), infos={})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers("spinrl/test/discrete-v0", [buf], action_space=gym.spaces.Discrete(2),
                                           observation_space=gym.spaces.Box(-1, 1, (2,), np.float32))
    with pytest.raises(DatasetError, match="Discrete\\(2\\).*MultiDiscrete"):
        import_minari("spinrl/test/discrete-v0")
