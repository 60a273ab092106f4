"""Property-based tests: dataset construction and loading either succeed with a valid dataset or raise
SpinError, never another exception type and never a hang (each example runs under an alarm)."""

from __future__ import annotations

import json
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spinrl.data import OfflineDataset, from_arrays, load, read_meta, save
from spinrl.data.dataset import ARRAYS
from spinrl.errors import SpinError

FUZZ = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])


@contextmanager
def time_limit(seconds: int = 10):
    def boom(*_):
        raise TimeoutError(f"took more than {seconds}s: a hang")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def assert_valid(ds: OfflineDataset) -> None:
    ds.validate()
    lengths = np.asarray(ds.episode_lengths)
    assert lengths.min() > 0 and lengths.sum() == ds.num_transitions
    assert ds.observations.shape[0] == ds.num_transitions + ds.num_episodes
    a = np.asarray(ds.actions)
    assert ((a >= 0) & (a < np.asarray(ds.nvec))).all()
    assert np.isfinite(np.asarray(ds.observations, dtype=np.float64)).all()
    assert np.isfinite(np.asarray(ds.rewards, dtype=np.float64)).all()


DTYPES = st.sampled_from([np.float32, np.float64, np.int64, np.int8, np.uint8, np.bool_, np.complex64, object, "U2"])


def _array(draw, shape, dtype, lo=-2, hi=6, special=True):
    values = draw(st.lists(st.sampled_from([lo, 0, 1, 2, hi, 0.5] + ([np.nan, np.inf] if special else [])),
                           min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    arr = np.array(values, dtype=np.float64).reshape(shape)
    try:
        with np.errstate(all="ignore"):
            return arr.astype(dtype)
    except (ValueError, TypeError, OverflowError):
        return arr


@st.composite
def flat_inputs(draw):
    T = draw(st.integers(0, 10))
    n = draw(st.integers(0, 3))
    nvec = draw(st.lists(st.integers(-1, 4), min_size=n, max_size=n))
    jitter = lambda: draw(st.sampled_from([0, 0, 0, 0, -1, 1]))  # noqa: E731 - occasionally misalign rows
    obs_shape = (max(T + jitter(), 0),) + tuple(draw(st.lists(st.integers(0, 3), min_size=0, max_size=2)))
    act_shape = draw(st.sampled_from([(max(T + jitter(), 0), max(n, 1)), (T,), (T, n + 1)]))
    kw = {
        "observations": _array(draw, obs_shape, draw(DTYPES)),
        "actions": _array(draw, act_shape, draw(DTYPES), special=draw(st.booleans())),
        "rewards": _array(draw, (max(T + jitter(), 0),), draw(DTYPES)),
        "terminations": _array(draw, (T,), draw(st.sampled_from([np.bool_, np.int64, np.float32])), lo=0, hi=1,
                               special=False),
        "truncations": _array(draw, (T,), draw(st.sampled_from([np.bool_, np.int64])), lo=0, hi=1, special=False),
        "nvec": nvec,
    }
    if draw(st.booleans()):
        kw["next_observations"] = _array(draw, obs_shape if draw(st.booleans()) else (T, 1), np.float32)
    return kw


@FUZZ
@given(flat_inputs())
def test_from_arrays_returns_a_valid_dataset_or_raises_spinerror(kw):
    with time_limit():
        try:
            ds = from_arrays(**kw)
        except SpinError:
            return
    assert_valid(ds)


# ---------------------------------------------------------------------- byte corruption of a saved dataset
@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    T = 40
    term = np.zeros(T, bool)
    term[[9, 24, 39]] = True
    ds = from_arrays(rng.normal(size=(T, 3)), rng.integers(0, 3, (T, 4)), rng.normal(size=T), term, np.zeros(T, bool),
                     nvec=[3, 3, 3, 3], next_observations=rng.normal(size=(T, 3)), env_id="maze", level="medium")
    return save(ds, tmp_path_factory.mktemp("fuzz") / "good")


def _same(a: OfflineDataset, b: OfflineDataset) -> bool:
    return all(np.array_equal(np.asarray(getattr(a, n)), np.asarray(getattr(b, n))) for n in ARRAYS) and a.meta == b.meta


corruptions = st.tuples(
    st.sampled_from([f"{n}.npy" for n in ARRAYS] + ["meta.json"] * 3),
    st.sampled_from(["flip", "truncate", "append", "zero"]),
    st.floats(0, 1, allow_nan=False),
    st.integers(1, 255),
)


@FUZZ
@given(st.lists(corruptions, min_size=1, max_size=3))
def test_corrupted_files_load_only_when_nothing_checked_changed(saved, tmp_path_factory, edits):
    d = tmp_path_factory.mktemp("c") / "ds"
    shutil.copytree(saved, d)
    for name, op, where, byte in edits:
        f = d / name
        b = bytearray(f.read_bytes())
        i = max(min(int(where * len(b)), len(b) - 1), 0)
        if op == "flip" and b:
            b[i] ^= byte
        elif op == "truncate":
            b = b[:i]
        elif op == "append":
            b += bytes([byte]) * (i % 7 + 1)
        else:
            b[i:] = bytes(len(b) - i)
        f.write_bytes(bytes(b))
    with time_limit():
        try:
            ds = load(d)
        except SpinError:
            return
    # Only a change that leaves every checked byte equal (e.g. JSON whitespace) may load, and then as the original.
    assert_valid(ds)
    assert _same(ds, load(saved))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**70) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
meta_keys = st.sampled_from(["schema_version", "nvec", "checksums", "observation_shape", "env_kwargs", "meta_sha256",
                             "env_id", "num_transitions", "reference"])


@FUZZ
@given(st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(meta_keys, json_values, max_size=6).map(lambda m: json.dumps({"schema_version": 1, **m}).encode()),
))
def test_read_meta_and_load_on_garbage_meta(saved, tmp_path_factory, raw):
    d = tmp_path_factory.mktemp("m") / "ds"
    shutil.copytree(saved, d)
    (d / "meta.json").write_bytes(raw)
    with time_limit():
        try:
            meta = read_meta(d)
        except SpinError:
            return
        assert isinstance(meta, dict) and isinstance(meta["schema_version"], int)
        try:
            ds = load(d)
        except SpinError:
            return
    assert_valid(ds)


# ---------------------------------------------------------------------- public-pickle importer (#32)
def _peak_ok(fn, mb: int = 500):
    """Run ``fn`` and assert the process's peak RSS grew by less than ``mb`` (a hostile input must not balloon)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        return fn()
    finally:
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < mb * 1024


scalars = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-3, 5), st.booleans(),
                    st.none(), st.text(max_size=3))
vectors = st.one_of(
    st.lists(scalars, max_size=4),
    st.integers(0, 4).map(lambda n: np.zeros(n, np.float32)),
    st.integers(0, 3).map(lambda n: np.zeros((n, 3), np.int64)),
    st.just(np.array(["a"], dtype=object)),
    st.recursive(st.lists(st.floats(0, 1), max_size=2), lambda inner: st.lists(inner, max_size=3).map(lambda L: L * 3),
                 max_leaves=6),
)
items = st.one_of(st.tuples(vectors, vectors, scalars, vectors, scalars), vectors, scalars)


@FUZZ
@given(st.lists(items, max_size=8), st.integers(0, 3))
def test_public_pickle_import_valid_or_spinerror(tmp_path_factory, rows, depth):
    import pickle

    from spinrl.data.interop import import_public_dmc

    L: object = rows
    for _ in range(depth):  # shared references: a few bytes that name the same list many times
        L = [L] * 10
    p = tmp_path_factory.mktemp("pk") / "3_bins" / "maze-x-medium"
    p.parent.mkdir()
    p.write_bytes(pickle.dumps(L, protocol=4))
    with time_limit(5):
        try:
            ds, _ = _peak_ok(lambda: import_public_dmc(p, env_id="maze", level="medium"))
        except SpinError:
            return
    assert_valid(ds)


@FUZZ
@given(st.sampled_from(["env_id", "level"]),
       st.sampled_from(["dmc:../../x", "../x", "/abs", "a/b", "a\\b", "..", ".hidden", "ok\0", "dmc:cheetah-run", "medium"]))
def test_metadata_names_never_become_paths_outside(saved, tmp_path_factory, key, value):
    from spinrl.data.storage import meta_digest

    d = tmp_path_factory.mktemp("n") / "ds"
    shutil.copytree(saved, d)
    m = json.loads((d / "meta.json").read_text())
    m[key] = value
    m["meta_sha256"] = meta_digest(m)
    (d / "meta.json").write_text(json.dumps(m))
    try:
        load(d)
    except SpinError:
        assert any(c in value for c in "/\\\0") or value.startswith(".")
        return
    assert not any(c in value for c in "/\\\0") and not value.startswith(".")
