"""The dataset format: construction, validation, disk round trip and corruption, sampling, summary, CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import spinrl.data.dataset as D
from spinrl.data import OfflineDataset, from_arrays, from_episodes, load, read_meta, save
from spinrl.errors import DatasetError, SpinError
from spinrl.spaces import MAX_FLAT_JOINT, FactoredSpace

NVEC = [2, 3, 4]
REPO = Path(__file__).resolve().parents[1]


def _flat(T=30, D_obs=4, seed=0, ends=((9, "term"), (19, "trunc"), (29, "trunc"))):
    """Step-aligned arrays with known episode ends and an explicit next_observations array."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(T, D_obs)).astype(np.float32)
    nxt = np.roll(obs, -1, axis=0)
    term = np.zeros(T, bool)
    trunc = np.zeros(T, bool)
    for t, kind in ends:
        (term if kind == "term" else trunc)[t] = True
        nxt[t] = rng.normal(size=D_obs)  # an episode's final next-state is not the next row
    act = rng.integers(0, NVEC, size=(T, len(NVEC)))
    rew = rng.normal(size=T).astype(np.float32)
    return obs, act, rew, term, trunc, nxt


@pytest.fixture
def flat():
    return _flat()


@pytest.fixture
def ds(flat):
    obs, act, rew, term, trunc, nxt = flat
    return from_arrays(
        obs, act, rew, term, trunc, nvec=NVEC, next_observations=nxt, env_id="toy", env_kwargs={"k": 1}, level="medium",
        reference={"random": -1.0, "expert": 3.0, "source": "test"},
    )


ARRAYS = ("observations", "actions", "rewards", "terminations", "truncations", "episode_lengths")


def _assert_same(a: OfflineDataset, b: OfflineDataset):
    for name in ARRAYS:
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)


# ---------------------------------------------------------------------- construction
def test_from_arrays_cuts_episodes_and_keeps_final_next_state(ds, flat):
    obs, act, rew, term, trunc, nxt = flat
    assert list(ds.episode_lengths) == [10, 10, 10]
    assert ds.num_transitions == 30 and ds.num_episodes == 3
    assert ds.observations.shape == (33, 4) and ds.observations.dtype == np.float32
    np.testing.assert_array_equal(ds.transition_observations, obs)
    np.testing.assert_array_equal(ds.next_observations, nxt)
    np.testing.assert_array_equal(np.flatnonzero(ds.terminations), [9])
    np.testing.assert_array_equal(np.flatnonzero(ds.truncations), [19, 29])
    np.testing.assert_array_equal(ds.actions, act)
    assert ds.meta["nvec"] == NVEC and ds.meta["env_id"] == "toy" and ds.meta["observation_shape"] == [4]


def test_from_arrays_without_next_observations_drops_truncated_final_steps(flat):
    obs, act, rew, term, trunc, _ = flat
    ds = from_arrays(obs, act, rew, term, trunc, nvec=NVEC)
    # terminated episode keeps its 10 steps; each truncated one loses its last (successor unknown)
    assert list(ds.episode_lengths) == [10, 9, 9]
    assert ds.num_transitions == 28
    keep = np.ones(30, bool)
    keep[[19, 29]] = False
    np.testing.assert_array_equal(ds.transition_observations, obs[keep])
    np.testing.assert_array_equal(ds.rewards, rew[keep])
    # inside an episode s' is the next row; the truncated episodes' final s' is the dropped step's obs
    np.testing.assert_array_equal(ds.next_observations[10:19], obs[11:20])
    np.testing.assert_array_equal(ds.next_observations[18], obs[19])
    np.testing.assert_array_equal(np.flatnonzero(ds.truncations), [18, 27])
    np.testing.assert_array_equal(np.flatnonzero(ds.terminations), [9])


def test_from_arrays_trailing_steps_become_a_truncated_episode(flat):
    obs, act, rew, term, trunc, nxt = flat
    trunc = trunc.copy()
    trunc[29] = False  # data ends mid-episode
    ds = from_arrays(obs, act, rew, term, trunc, nvec=NVEC, next_observations=nxt)
    assert list(ds.episode_lengths) == [10, 10, 10]
    assert bool(ds.truncations[-1]) and not bool(ds.terminations[-1])


def test_from_arrays_single_truncated_step_episodes_need_next_observations():
    obs = np.zeros((2, 1), np.float32)
    with pytest.raises(DatasetError, match="next_observations"):
        from_arrays(obs, np.zeros((2, 1), int), np.zeros(2), [False, False], [True, True], nvec=[2])


@pytest.mark.parametrize(
    "mutate,err,match",
    [
        (lambda a: a.update(actions=a["actions"][:-1]), DatasetError, "step-aligned"),
        (lambda a: a.update(rewards=a["rewards"][:, None].repeat(2, 1)), DatasetError, "rewards must be 1-D"),
        (lambda a: a.update(observations=a["observations"][:, 0]), DatasetError, "observations must have shape"),
        (lambda a: a.update(actions=a["actions"].astype(np.float32)), SpinError, "must be integers"),
        (lambda a: a.update(actions=a["actions"][:, :2]), SpinError, r"shape \[\.\.\., 3\]"),
        (lambda a: a.update(nvec=[2, 3, 4, 5]), SpinError, r"shape \[\.\.\., 4\]"),
        (lambda a: a["actions"].__setitem__((5, 2), 4), SpinError, r"actions\[5, 2\] = 4 is outside \[0, 4\)"),
        (lambda a: a["actions"].__setitem__((3, 0), -1), SpinError, "outside"),
        (lambda a: a["observations"].__setitem__((7, 1), np.nan), DatasetError, r"observations\[7\].*NaN"),
        (lambda a: a["rewards"].__setitem__(4, np.inf), DatasetError, r"rewards\[4\]"),
        (lambda a: a["terminations"].__setitem__(19, True), DatasetError, "both terminated and truncated"),
        (lambda a: a.update(terminations=a["terminations"].astype(int) * 2), DatasetError, "boolean"),
        (lambda a: a.update(next_observations=a["next_observations"][:, :3]), DatasetError, "next_observations"),
        (lambda a: a.update(nvec=[2, 1, 4]), SpinError, "at least 2 choices"),
    ],
)
def test_from_arrays_validation_errors(flat, mutate, err, match):
    obs, act, rew, term, trunc, nxt = (x.copy() for x in flat)
    a = dict(observations=obs, actions=act, rewards=rew, terminations=term, truncations=trunc,
             next_observations=nxt, nvec=NVEC)
    mutate(a)
    with pytest.raises(err, match=match):
        from_arrays(**a)


def test_dataset_validate_catches_structural_errors(ds):
    arrays = {n: np.array(getattr(ds, n)) for n in ARRAYS}
    bad = dict(arrays, terminations=arrays["terminations"].copy())
    bad["terminations"][3] = True  # done in the middle of an episode
    with pytest.raises(DatasetError, match="not the last step"):
        OfflineDataset(meta=dict(ds.meta), **bad)
    with pytest.raises(DatasetError, match="zero-length"):
        OfflineDataset(meta=dict(ds.meta), **dict(arrays, episode_lengths=np.array([10, 0, 20])))
    with pytest.raises(DatasetError, match="33 rows"):
        OfflineDataset(meta=dict(ds.meta), **dict(arrays, observations=arrays["observations"][:-1]))
    with pytest.raises(DatasetError, match="observation_shape"):
        OfflineDataset(meta=dict(ds.meta, observation_shape=[5]), **arrays)
    with pytest.raises(DatasetError, match="nvec"):
        OfflineDataset(meta={k: v for k, v in ds.meta.items() if k != "nvec"}, **arrays)
    OfflineDataset(meta=dict(ds.meta), **arrays)  # the unmodified arrays pass


def test_from_episodes_native_layout(ds):
    ds2 = from_episodes(ds.observations, ds.actions, ds.rewards, ds.terminations, ds.truncations, ds.episode_lengths,
                        {"nvec": NVEC, "env_id": "toy"})
    _assert_same(ds, ds2)
    assert ds2.meta["schema_version"] == D.SCHEMA_VERSION


# ---------------------------------------------------------------------- disk
def test_save_load_round_trip_memory_mapped(ds, tmp_path):
    p = save(ds, tmp_path / "d")
    assert sorted(os.listdir(p)) == sorted([f"{n}.npy" for n in ARRAYS] + ["meta.json", ".spinrl"])
    back = load(p)
    _assert_same(ds, back)
    assert isinstance(back.observations, np.memmap) and isinstance(back.actions, np.memmap)
    assert back.actions.dtype == np.uint8  # smallest dtype for max(nvec) = 4
    meta = read_meta(p)
    assert meta["checksum"] == back.meta["checksum"] and len(meta["checksums"]) == len(ARRAYS)
    assert meta["num_transitions"] == 30 and meta["reference"]["expert"] == 3.0
    eager = load(p, mmap=False)
    assert not isinstance(eager.observations, np.memmap)
    _assert_same(ds, eager)


def _flip_byte(path: Path, offset_from_end: int = 1):
    raw = bytearray(path.read_bytes())
    raw[-offset_from_end] ^= 0xFF  # inside the array payload, past the .npy header
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("name", ["observations", "actions", "episode_lengths"])
def test_checksum_mismatch_after_one_flipped_byte(ds, tmp_path, name):
    p = save(ds, tmp_path / "d")
    _flip_byte(p / f"{name}.npy")
    with pytest.raises(DatasetError, match=f"checksum mismatch for '{name}'"):
        load(p)


def test_truncated_array_file(ds, tmp_path):
    p = save(ds, tmp_path / "d")
    f = p / "observations.npy"
    f.write_bytes(f.read_bytes()[:-16])
    with pytest.raises(DatasetError, match="checksum"):
        load(p)
    with pytest.raises(DatasetError, match="cannot read array 'observations'"):
        load(p, verify=False)


def test_missing_array_and_bad_meta(ds, tmp_path):
    p = save(ds, tmp_path / "d")
    (p / "rewards.npy").unlink()
    with pytest.raises(DatasetError, match="missing array 'rewards'"):
        load(p)
    p2 = save(ds, tmp_path / "e")
    (p2 / "meta.json").write_text("{not json")
    with pytest.raises(DatasetError, match="corrupted"):
        load(p2)
    with pytest.raises(DatasetError, match="does not exist"):
        load(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DatasetError, match="no meta.json"):
        load(tmp_path / "plain")


def test_newer_schema_version_is_refused(ds, tmp_path):
    p = save(ds, tmp_path / "d")
    meta = json.loads((p / "meta.json").read_text())
    meta["schema_version"] = D.SCHEMA_VERSION + 1
    (p / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="newer than this spinrl supports"):
        load(p)


def test_atomic_write_keeps_previous_dataset_on_failure(ds, flat, tmp_path, monkeypatch):
    p = save(ds, tmp_path / "d")
    before = {f: (p / f).read_bytes() for f in os.listdir(p)}
    obs, act, rew, term, trunc, nxt = _flat(seed=1)
    other = from_arrays(obs, act, rew, term, trunc, nvec=NVEC, next_observations=nxt)
    real_save = np.save
    calls = []

    def failing_save(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError("disk full (simulated)")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(D.np, "save", failing_save)
    with pytest.raises(OSError, match="simulated"):
        save(other, p)
    monkeypatch.undo()
    assert len(calls) == 2  # it really failed after writing the first array
    assert sorted(os.listdir(tmp_path)) == ["d"]  # no temp or .old directories left
    assert {f: (p / f).read_bytes() for f in os.listdir(p)} == before
    _assert_same(ds, load(p))
    # and a successful overwrite replaces it completely
    save(other, p)
    _assert_same(other, load(p))
    assert sorted(os.listdir(tmp_path)) == ["d"]


def test_save_refuses_to_overwrite_a_non_dataset_directory(ds, tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(SpinError, match="not a spinrl dataset"):
        save(ds, target)
    assert (target / "notes.txt").read_text() == "keep me"


# ---------------------------------------------------------------------- sampling, split, summary
def test_sample_shapes_dtypes_and_true_next_state(ds, flat):
    import torch

    obs, act, rew, term, trunc, nxt = flat
    rng = np.random.default_rng(7)
    idx = np.random.default_rng(7).integers(0, ds.num_transitions, size=64)  # what sample() draws
    s, a, r, s2, d = ds.sample(64, rng)
    assert s.shape == (64, 4) and s2.shape == (64, 4) and a.shape == (64, 3) and r.shape == (64,) and d.shape == (64,)
    assert s.dtype == torch.float32 and a.dtype == torch.int64 and r.dtype == torch.float32 and d.dtype == torch.float32
    np.testing.assert_array_equal(s.numpy(), obs[idx])
    np.testing.assert_array_equal(s2.numpy(), nxt[idx])
    np.testing.assert_array_equal(a.numpy(), act[idx])
    np.testing.assert_array_equal(r.numpy(), rew[idx])
    np.testing.assert_array_equal(d.numpy(), term[idx].astype(np.float32))  # truncation bootstraps: d = 0
    # every transition, including the episode-final ones
    s, a, r, s2, d = ds.batch_at(np.arange(30))
    np.testing.assert_array_equal(s2.numpy(), nxt)
    assert d.numpy().tolist() == term.astype(np.float32).tolist()


def test_split_by_episodes_is_disjoint_and_complete():
    T = 200
    obs, act, rew, term, trunc, nxt = _flat(T=T, ends=[(t, "trunc") for t in range(9, T, 10)])
    obs[:, 0] = np.arange(T)  # tag each step so transitions can be traced
    ds = from_arrays(obs, act, rew, term, trunc, nvec=NVEC, next_observations=nxt)
    tr, va = ds.split(0.25, seed=3)
    assert va.num_episodes == 5 and tr.num_episodes == 15
    a = set(tr.transition_observations[:, 0].astype(int))
    b = set(va.transition_observations[:, 0].astype(int))
    assert not a & b and a | b == set(range(T))
    for part in (tr, va):  # whole episodes: each split episode is a contiguous block of 10 steps
        tags = part.transition_observations[:, 0].astype(int).reshape(-1, 10)
        assert (np.diff(tags, axis=1) == 1).all() and (tags[:, 0] % 10 == 0).all()
        np.testing.assert_array_equal(part.next_observations[:, 1:], nxt[tags.ravel()][:, 1:])
    tr2, va2 = ds.split(0.25, seed=3)
    np.testing.assert_array_equal(va.transition_observations, va2.transition_observations)
    with pytest.raises(DatasetError, match="val_fraction"):
        ds.split(1.0)


def test_summary_against_hand_computation(ds, flat):
    obs, act, rew, term, trunc, nxt = flat
    s = ds.summary()
    rets = np.array([rew[0:10].sum(dtype=np.float64), rew[10:20].sum(dtype=np.float64), rew[20:30].sum(dtype=np.float64)])
    assert s.episodes == 3 and s.transitions == 30
    assert s.return_mean == pytest.approx(rets.mean(), abs=1e-6)
    assert s.return_std == pytest.approx(rets.std(), abs=1e-6)
    assert s.return_min == pytest.approx(rets.min(), abs=1e-6)
    assert s.return_max == pytest.approx(rets.max(), abs=1e-6)
    assert s.normalized_score == pytest.approx(100 * (rets.mean() + 1.0) / 4.0, abs=1e-4)
    assert s.termination_fraction == pytest.approx(1 / 3) and s.truncation_fraction == pytest.approx(2 / 3)
    for i, m in enumerate(NVEC):
        assert s.action_histograms[i] == [int((act[:, i] == k).sum()) for k in range(m)]
    d = s.as_dict()
    assert d["episode_return"]["mean"] == s.return_mean and d["nvec"] == NVEC and d["reference_scores"]["source"] == "test"
    assert "normalized" in s.format() and "terminated 33.3%" in s.format()
    no_ref = from_arrays(obs, act, rew, term, trunc, nvec=NVEC, next_observations=nxt)
    assert no_ref.summary().normalized_score is None


# ---------------------------------------------------------------------- spaces
def test_factored_space_flatten_round_trip_and_limit():
    sp = FactoredSpace([2, 3, 4])
    allacts = np.stack(np.meshgrid(*[np.arange(m) for m in sp.nvec], indexing="ij"), -1).reshape(-1, 3)
    flat = sp.flatten(allacts)
    np.testing.assert_array_equal(flat, np.arange(24))  # sub-action 0 most significant
    np.testing.assert_array_equal(sp.unflatten(flat), allacts)
    assert sp.flatten(np.array([1, 2, 3])) == 23 and sp.joint_size == 24
    rng = np.random.default_rng(0)
    a = sp.sample(rng, 100)
    np.testing.assert_array_equal(sp.unflatten(sp.flatten(a)), a)
    assert FactoredSpace([2] * 20).joint_size == MAX_FLAT_JOINT
    FactoredSpace([2] * 20).flatten(np.zeros(20, int))  # exactly 2^20 is allowed
    big = FactoredSpace([2] * 21)
    with pytest.raises(SpinError, match="2\\^20"):
        big.flatten(np.zeros(21, int))
    with pytest.raises(SpinError, match="2\\^20"):
        big.unflatten(np.array([0]))
    with pytest.raises(SpinError, match="outside"):
        sp.unflatten(np.array([24]))
    assert FactoredSpace([3] * 38).joint_size == 3**38  # exact, never overflows
    assert FactoredSpace([10] * 38).describe() == "[10]*38, 1e+38 joint actions"  # not a 39-digit integer
    assert FactoredSpace([2, 3, 4]).describe() == "[2, 3, 4], 24 joint actions"
    assert FactoredSpace([2] * 9 + [5]).describe() == "10 sub-actions, m 2-5, 2560 joint actions"


# ---------------------------------------------------------------------- CLI
def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "spinrl.cli.main", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


def test_cli_info_json_and_validate(ds, tmp_path):
    p = save(ds, tmp_path / "d")
    r = _cli("data", "info", p, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["transitions"] == 30 and info["episodes"] == 3 and info["nvec"] == NVEC
    assert info["episode_return"]["mean"] == pytest.approx(ds.summary().return_mean)
    assert info["checksum"] == read_meta(p)["checksum"]
    r = _cli("data", "validate", p)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
    _flip_byte(p / "rewards.npy")
    r = _cli("data", "validate", p)
    assert r.returncode == 2
    assert "checksum" in r.stderr and "Traceback" not in r.stderr
