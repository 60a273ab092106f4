"""The bad-input matrix: every entry point fed every kind of bad input, and the one-line error it gets.

Each :class:`Case` builds its bad input inside its own directory and returns either a CLI argv (run
in-process through :func:`spinrl.cli.main.main`, or in a subprocess) or a zero-argument callable for a
Python API entry point. :func:`run_case` records the exit code, the stderr lines and whether any file
under the workspace was created or changed. ``tests/test_bad_inputs.py`` asserts every row; this module's
``main`` regenerates ``docs/RELIABILITY.md`` from the same rows (from the repository's root)::

    python tests/reliability.py            # writes docs/RELIABILITY.md
    python tests/reliability.py --check    # exit 1 if the file is out of date

Test tooling, not shipped in the package; it needs no test framework.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from spinrl.errors import SpinError

TINY = {"d_model": 16, "n_heads": 2, "n_blocks": 1, "head_hidden": 16, "mlp_hidden": 16, "critic_hidden": 16,
        "lstm_hidden": 16, "lstm_layers": 1, "sub_action_embed": 4}
MARKER = "PWNED"  # what a hostile pickle would create; it must never appear


class Hostile:
    """Pickles to ``os.system('touch <marker>')``: loading it unsafely would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---------------------------------------------------------------------- fixtures
class Fixtures:
    """Small good inputs (datasets, ASM, run, public pickle) that the cases derive bad ones from."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.m3 = self.root / "fx" / "maze3"
        self.m5 = self.root / "fx" / "maze5"
        self.asm3 = self.root / "fx" / "asm3"
        self.run3 = self.root / "fx" / "run3"
        self.dmc = self.root / "fx" / "public" / "3_bins" / "cheetah-run-medium"

    @classmethod
    def build(cls, root: Path) -> "Fixtures":
        import torch

        from spinrl.data import from_arrays
        from spinrl.data.interop import export_public_dmc
        from spinrl.experiments.datasets import DataMakeConfig, make_dataset
        from spinrl.training import PretrainConfig, TrainConfig, pretrain, run

        fx = cls(root)
        with contextlib.redirect_stdout(io.StringIO()):
            for path, n in ((fx.m3, 3), (fx.m5, 5)):
                make_dataset(DataMakeConfig(env="maze", env_kwargs={"actuators": n}, level="expert", episodes=12,
                                            out=str(path), progress=False))
            pretrain(PretrainConfig(dataset=str(fx.m3), out=str(fx.asm3), max_epochs=1, steps_per_epoch=1,
                                    batch_size=16, val_batches=1, model_kwargs=TINY, progress=False))
            run(TrainConfig(dataset=str(fx.m3), out=str(fx.run3), steps=2, eval_every=0, batch_size=16,
                            checkpoint_every=1, model_kwargs=TINY, progress=False))
        rng = np.random.default_rng(0)
        T = 30
        obs = rng.normal(size=(T, 17)).astype(np.float32)
        term = np.zeros(T, bool)
        term[[9, 19, 29]] = True
        ds = from_arrays(obs, rng.integers(0, 3, (T, 6)), rng.normal(size=T), term, np.zeros(T, bool),
                         nvec=[3] * 6, next_observations=np.roll(obs, -1, 0), env_id="dmc:cheetah-run",
                         env_kwargs={"bins": 3}, level="medium")
        export_public_dmc(ds, fx.root / "fx" / "public")
        del torch
        return fx

    # -- helpers the cases use to derive bad inputs
    def forge(self, d: Path, arrays: dict | None = None, meta: dict | None = None, drop: tuple = (),
              resign: bool = True, src: Path | None = None) -> Path:
        """A copy of a good dataset with some arrays/meta fields replaced; checksums are recomputed
        (``resign``) so that only the content checks can catch the problem."""
        from spinrl.data.storage import _sha256_file, meta_digest

        out = d / "data"
        shutil.copytree(src or self.m3, out)
        m = json.loads((out / "meta.json").read_text())
        for name, arr in (arrays or {}).items():
            np.save(out / f"{name}.npy", arr, allow_pickle=False)
            m["checksums"][name] = _sha256_file(out / f"{name}.npy")
        m.update(meta or {})
        for k in drop:
            m.pop(k, None)
        if resign:
            m["meta_sha256"] = meta_digest(m)
        (out / "meta.json").write_text(json.dumps(m))
        return out

    def array(self, name: str) -> np.ndarray:
        return np.load(self.m3 / f"{name}.npy")

    def copy(self, src: Path, d: Path, name: str = "copy") -> Path:
        out = d / name
        shutil.copytree(src, out)
        return out

    def resave(self, path: Path, edit: Callable[[dict], Any]) -> Path:
        import torch

        ck = torch.load(path, weights_only=True)
        edit(ck)
        torch.save(ck, path)
        return path

    def hostile_pt(self, path: Path, d: Path, kind: str) -> Path:
        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"schema": 1, "kind": kind, "payload": Hostile(d / MARKER)}, path)
        return path

    def flat(self, T: int = 8, N: int = 3, seed: int = 0) -> dict:
        rng = np.random.default_rng(seed)
        term = np.zeros(T, bool)
        term[-1] = True
        return {"observations": rng.normal(size=(T, 2)).astype(np.float32), "actions": rng.integers(0, 2, (T, N)),
                "rewards": rng.normal(size=T), "terminations": term, "truncations": np.zeros(T, bool), "nvec": [2] * N}


def _truncate(path: Path, keep: float = 0.5) -> Path:
    b = path.read_bytes()
    path.write_bytes(b[: int(len(b) * keep)])
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _flip(path: Path) -> Path:
    b = bytearray(path.read_bytes())
    b[-1] ^= 0xFF
    path.write_bytes(bytes(b))
    return path


# ---------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """One row: ``setup(fx, d)`` builds the bad input in the empty directory ``d`` and returns a CLI argv
    (list) or a zero-argument API call; ``expect`` is a fragment the one-line message must contain."""

    entry: str
    bad_input: str
    expect: str
    setup: Callable[[Fixtures, Path], Any]
    block: tuple[str, ...] = ()
    """modules made unimportable (an optional extra that is not installed)"""
    subprocess: bool = False
    """run the CLI in a fresh interpreter instead of in-process"""
    env: dict = field(default_factory=dict)
    """environment variables set while the case runs"""
    needs: str | None = None
    """a module that must be importable for the case to apply (else it is skipped)"""
    patch: Callable[[Path], Any] | None = None
    """a context manager (given the case directory) active while the case runs, e.g. to make writes fail"""

    @property
    def id(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", f"{self.entry} {self.bad_input}".lower()).strip("-")[:90]


def _cli(*argv: Any) -> Callable[[Fixtures, Path], list[str]]:
    """A setup returning a fixed argv; ``{m3}``-style names are fixture paths, ``{d}`` the case directory."""

    def setup(fx: Fixtures, d: Path) -> list[str]:
        names = {"m3": fx.m3, "m5": fx.m5, "asm3": fx.asm3, "run3": fx.run3, "dmc": fx.dmc, "d": d}
        return [str(a).format(**{k: str(v) for k, v in names.items()}) for a in argv]

    return setup


def _spec(text: str) -> Callable[[Fixtures, Path], list[str]]:
    """``spinrl sweep`` on a spec file with ``text`` (a dry run: nothing may be written)."""

    def setup(fx: Fixtures, d: Path) -> list[str]:
        spec = d / "spec.toml"
        spec.write_text(text)
        return ["sweep", str(spec), "--out", str(d / "sweep"), "--dry-run"]

    return setup


def _validate(build: Callable[[Fixtures, Path], Path]) -> Callable[[Fixtures, Path], list[str]]:
    return lambda fx, d: ["data", "validate", str(build(fx, d))]


def _train(*extra: str, data: Callable[[Fixtures, Path], Path] | None = None, out: Callable | None = None):
    def setup(fx: Fixtures, d: Path) -> list[str]:
        ds = str(data(fx, d)) if data else str(fx.m3)
        o = str(out(fx, d)) if out else str(d / "run")
        return ["train", ds, "--out", o, "--eval-every", "0", "--steps", "4", "--no-progress"] + [
            a.format(m3=fx.m3, m5=fx.m5, asm3=fx.asm3, d=d) for a in extra]

    return setup


def _resume_with(edit: Callable[[Fixtures, Path, Path], Any], *extra: str, data: Callable | None = None):
    """``spinrl train --resume`` on a copy of the fixture run (batch 16, tiny sizes are in its config)."""

    def out(fx: Fixtures, d: Path) -> Path:
        r = fx.copy(fx.run3, d, "run")
        (r / "policy.pt").unlink()
        edit(fx, d, r / "checkpoints" / "last.pt")
        return r

    return _train("--resume", "--batch-size", "16", "--steps", "4", *extra, out=out, data=data)


def _asm_with(edit: Callable[[Fixtures, Path, Path], Any]):
    def setup(fx: Fixtures, d: Path) -> list[str]:
        a = fx.copy(fx.asm3, d, "asm")
        edit(fx, d, a)
        return _train("--actor", "spin", "--asm", str(a))(fx, d)

    return setup


def _pretrain_resume_with(edit: Callable[[Fixtures, Path, Path], Any]):
    def setup(fx: Fixtures, d: Path) -> list[str]:
        a = fx.copy(fx.asm3, d, "asm")
        (a / "asm.json").unlink()  # an interrupted run: checkpoint, no finished ASM
        edit(fx, d, a / "checkpoints" / "last.pt")
        return ["pretrain", str(fx.m3), "--out", str(a), "--resume", "--no-progress", "--batch-size", "16",
                "--max-epochs", "1", "--steps-per-epoch", "1", "--val-batches", "1"]

    return setup


def _policy_with(edit: Callable[[Fixtures, Path, Path], Any], *extra: str):
    def setup(fx: Fixtures, d: Path) -> list[str]:
        p = d / "policy.pt"
        shutil.copy(fx.run3 / "policy.pt", p)
        edit(fx, d, p)
        return ["eval", str(p), "--episodes", "1", *extra]

    return setup


def _public(data_fn: Callable[[Fixtures, Path], Any], name: str = "3_bins/cheetah-run-medium", raw: bytes | None = None):
    def setup(fx: Fixtures, d: Path) -> list[str]:
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if raw is not None:
            p.write_bytes(raw)
        else:
            data = data_fn(fx, d)
            if isinstance(data, bytes):
                p.write_bytes(data)
            else:
                with open(p, "wb") as f:
                    pickle.dump(data, f, protocol=4)
        return ["data", "import-dmc", str(p), "--out", str(d / "imported")]

    return setup


def _public_rows(fx: Fixtures) -> list:
    from spinrl.data.interop import restricted_load

    return list(restricted_load(fx.dmc)[0])


def _from_arrays(**change: Any):
    def setup(fx: Fixtures, d: Path) -> Callable[[], Any]:
        from spinrl.data import from_arrays

        kw = fx.flat()
        for k, v in change.items():
            kw[k] = v(kw[k]) if callable(v) else v
        return lambda: from_arrays(**kw)

    return setup


def _nan_at(i: int):
    def f(a: np.ndarray) -> np.ndarray:
        a = np.array(a, dtype=np.float64)
        a.reshape(len(a), -1)[i, 0] = np.nan
        return a

    return f


def _policy_load(make: Callable[[Fixtures, Path], Path]):
    def setup(fx: Fixtures, d: Path) -> Callable[[], Any]:
        from spinrl.evaluation import Policy

        path = make(fx, d)
        return lambda: Policy.load(path)

    return setup


def _config_call(kind: str, **kw: Any):
    def setup(fx: Fixtures, d: Path) -> Callable[[], Any]:
        from spinrl.training import PretrainConfig, TrainConfig, pretrain, run

        if kind == "train":
            cfg = TrainConfig(dataset=str(fx.m3), out=str(d / "run"), steps=2, eval_every=0, batch_size=16,
                              progress=False, **kw)
            return lambda: run(cfg)
        cfg = PretrainConfig(dataset=str(fx.m3), out=str(d / "asm"), max_epochs=1, batch_size=16, progress=False, **kw)
        return lambda: pretrain(cfg)

    return setup


def _schema99(fx: Fixtures, d: Path, p: Path) -> None:
    fx.resave(p, lambda ck: ck.update(schema=99))


_OBS = lambda fx: fx.array("observations")  # noqa: E731
_ACT = lambda fx: fx.array("actions")  # noqa: E731
_REW = lambda fx: fx.array("rewards")  # noqa: E731
_LEN = lambda fx: fx.array("episode_lengths")  # noqa: E731


def _with(a: np.ndarray, idx: tuple, value: Any, dtype: Any = None) -> np.ndarray:
    a = np.array(a, dtype=dtype or a.dtype)
    a[idx] = value
    return a


def _single_episode(fx: Fixtures, d: Path) -> Path:
    L = int(_LEN(fx)[0])
    return fx.forge(d, {"observations": _OBS(fx)[: L + 1], "actions": _ACT(fx)[:L], "rewards": _REW(fx)[:L],
                        "terminations": fx.array("terminations")[:L], "truncations": fx.array("truncations")[:L],
                        "episode_lengths": _LEN(fx)[:1]})


def _empty(fx: Fixtures, d: Path) -> Path:
    return fx.forge(d, {"observations": _OBS(fx)[:0], "actions": _ACT(fx)[:0], "rewards": _REW(fx)[:0],
                        "terminations": np.zeros(0, bool), "truncations": np.zeros(0, bool),
                        "episode_lengths": np.zeros(0, np.int64)})


def _not_a_dataset(fx: Fixtures, d: Path) -> Path:
    (d / "mine").mkdir()
    (d / "mine" / "notes.txt").write_text("keep me")
    return d / "mine"


def _users_dir(fx: Fixtures, d: Path, *files: str) -> Path:
    """A user's own folder holding ``files`` (spinrl's file names, the user's content) and a thesis."""
    u = d / "important"
    for name in files + ("thesis.txt",):
        (u / name).parent.mkdir(parents=True, exist_ok=True)
        (u / name).write_text("{}" if name.endswith(".json") else "mine")
    return u


def _fake_behaviour_run(fx: Fixtures, d: Path) -> Path:
    (d / "brun" / "checkpoints").mkdir(parents=True)
    (d / "brun" / "checkpoints" / "last.pt").write_bytes(b"")  # never read: the --out check comes first
    return d / "brun"


def _locked_run(fx: Fixtures, d: Path) -> Path:
    """A copy of the fixture run that a live process (pid 1, this host) is writing."""
    import socket

    r = fx.copy(fx.run3, d, "run")
    (r / ".spinrl.lock").write_text(json.dumps({"pid": 1, "host": socket.gethostname()}))
    return r


def _diverging(fx: Fixtures, d: Path) -> Callable[[], Any]:
    """Training on rewards so large that the critic loss overflows float32 (run directory outside the workspace)."""
    data = fx.forge(d, arrays={"rewards": np.full_like(fx.array("rewards"), 1e30)})

    def call() -> None:
        from spinrl.training import TrainConfig, run

        with tempfile.TemporaryDirectory() as t, contextlib.redirect_stdout(io.StringIO()):
            run(TrainConfig(dataset=str(data), out=f"{t}/run", steps=3, eval_every=0, batch_size=16,
                            model_kwargs=TINY, progress=False))

    return call


def _subprocess_block(case_block: tuple[str, ...], argv: list[str]) -> list[str]:
    code = ("import sys\nfor m in %r: sys.modules[m] = None\nfrom spinrl.cli.main import main\nsys.exit(main(%r))"
            % (list(case_block), argv))
    return [sys.executable, "-c", code]


def _relink(ds: Path, name: str, target: str) -> Path:
    (ds / name).unlink()
    (ds / name).symlink_to(target)
    return ds


def _resigned_truncate(ds: Path, name: str = "rewards") -> Path:
    """Cut an array file short and re-sign its checksum, so that only the header-vs-size check can catch it."""
    from spinrl.data.storage import _sha256_file, meta_digest

    _truncate(ds / f"{name}.npy", 0.9)
    m = json.loads((ds / "meta.json").read_text())
    m["checksums"][name] = _sha256_file(ds / f"{name}.npy")
    m["meta_sha256"] = meta_digest(m)
    (ds / "meta.json").write_text(json.dumps(m))
    return ds


def _nested_refs(fx: Fixtures) -> list:
    L: Any = [0.0]
    for _ in range(10):
        L = [L] * 10
    return [(L, np.zeros(6, np.int64), 0.0, L, False)] * 100


class _Alloc:
    def __reduce__(self):
        return (bytes, (10**12,))


def _nan_weights(ck: dict) -> None:
    t = next(v for v in ck["actor"].values() if v.is_floating_point())
    t.view(-1)[0] = float("nan")


def _act_on_nan(fx: Fixtures, d: Path) -> Callable[[], Any]:
    from spinrl.evaluation import Policy

    p = Policy.load(fx.run3 / "policy.pt")
    obs = np.zeros((3, p.observation_dim), np.float32)
    obs[1, 0] = np.nan
    return lambda: p.act(obs)


def _collect_floats(fx: Fixtures, d: Path) -> Callable[[], Any]:
    from spinrl import envs
    from spinrl.data import collect

    env = envs.make("maze", actuators=3)
    return lambda: collect(env, lambda o: np.full(3, 0.7), episodes=1, progress=False)


@contextlib.contextmanager
def _os_fails(fn: str, errno_: int):
    """``os.<fn>`` raises OSError(errno_) while the case runs: a full disk, a read-only mount or a permission
    error that a test cannot make for real (as root, or without a second file system)."""
    real = getattr(os, fn)

    def fail(*a, **kw):
        raise OSError(errno_, os.strerror(errno_), str(a[0]) if a and not isinstance(a[0], int) else None)

    setattr(os, fn, fail)
    try:
        yield
    finally:
        setattr(os, fn, real)


CASES: list[Case] = [
    # ------------------------------------------------------------------ our dataset directory format
    Case("load / data validate", "path does not exist", "does not exist", _cli("data", "validate", "{d}/nope")),
    Case("load / data validate", "directory without meta.json", "no meta.json",
         lambda fx, d: ["data", "validate", str(_not_a_dataset(fx, d))]),
    Case("load / data validate", "meta.json is not JSON", "meta.json is corrupted",
         _validate(lambda fx, d: (_ := fx.forge(d)) and ((_ / "meta.json").write_text("{garbage") and _))),
    Case("load / data validate", "meta.json holds a list", "must hold a JSON object",
         _validate(lambda fx, d: (_ := fx.forge(d)) and ((_ / "meta.json").write_text("[1, 2]") and _))),
    Case("load / data validate", "dataset from a newer schema", "schema_version 99 is newer",
         _validate(lambda fx, d: fx.forge(d, meta={"schema_version": 99}))),
    Case("load / data validate", "meta.json edited by hand (checksum mismatch)", "checksum mismatch for meta.json",
         _validate(lambda fx, d: fx.forge(d, meta={"level": "expert-ish"}, resign=False))),
    Case("load / data validate", "one byte flipped in actions.npy (checksum mismatch)", "checksum mismatch for 'actions'",
         _validate(lambda fx, d: (_ := fx.forge(d)) and _flip(_ / "actions.npy") and _)),
    Case("load / data validate", "truncated rewards.npy", "checksum mismatch for 'rewards'",
         _validate(lambda fx, d: (_ := fx.forge(d)) and _truncate(_ / "rewards.npy") and _)),
    Case("load / data info --no-verify", "truncated rewards.npy, checksums skipped", "cannot read array 'rewards'",
         lambda fx, d: ["data", "info", "--no-verify", str((_ := fx.forge(d)) and _truncate(_ / "rewards.npy") and _)]),
    Case("load / data validate", "array file missing", "missing array 'terminations'",
         _validate(lambda fx, d: (_ := fx.forge(d)) and ((_ / "terminations.npy").unlink() or _))),
    Case("load / data validate", "meta.json has no checksums", "no checksum for 'observations'",
         _validate(lambda fx, d: fx.forge(d, drop=("checksums",)))),
    Case("load / data validate", "meta.nvec is missing", "metadata field 'nvec' is missing",
         _validate(lambda fx, d: fx.forge(d, drop=("nvec",)))),
    Case("load / data validate", "meta.nvec is a string", "meta.nvec must be a non-empty 1-D list",
         _validate(lambda fx, d: fx.forge(d, meta={"nvec": "abc"}))),
    Case("load / data validate", "meta.nvec from another task (2 sub-actions)", "nvec has 2 sub-actions",
         _validate(lambda fx, d: fx.forge(d, meta={"nvec": [2, 2]}))),
    Case("load / data validate", "meta.observation_shape is a number", "field 'observation_shape' must be a list",
         _validate(lambda fx, d: fx.forge(d, meta={"observation_shape": 5}))),
    Case("load / data validate", "NaN reward", "rewards[3] contains nan",
         _validate(lambda fx, d: fx.forge(d, {"rewards": _with(_REW(fx), (3,), np.nan)}))),
    Case("load / data validate", "inf observation", "observations[5] contains inf",
         _validate(lambda fx, d: fx.forge(d, {"observations": _with(_OBS(fx), (5, 0), np.inf)}))),
    Case("load / data validate", "out-of-range sub-action", "actions[2, 1] = 7 is outside [0, 2)",
         _validate(lambda fx, d: fx.forge(d, {"actions": _with(_ACT(fx), (2, 1), 7)}))),
    Case("load / data validate", "float actions", "actions must be integers",
         _validate(lambda fx, d: fx.forge(d, {"actions": _ACT(fx).astype(np.float32)}))),
    Case("load / data validate", "actions with too few columns", "actions have 2 columns but nvec has 3",
         _validate(lambda fx, d: fx.forge(d, {"actions": _ACT(fx)[:, :2]}))),
    Case("load / data validate", "rewards one row short", "rewards must have shape",
         _validate(lambda fx, d: fx.forge(d, {"rewards": _REW(fx)[:-1]}))),
    Case("load / data validate", "string rewards", "rewards must be floating point",
         _validate(lambda fx, d: fx.forge(d, {"rewards": np.array(["x"] * len(_REW(fx)))}))),
    Case("load / data validate", "integer observations", "observations must be floating point",
         _validate(lambda fx, d: fx.forge(d, {"observations": _OBS(fx).astype(np.int32)}))),
    Case("load / data validate", "float episode_lengths", "episode_lengths must be a 1-D integer array",
         _validate(lambda fx, d: fx.forge(d, {"episode_lengths": _LEN(fx).astype(np.float64)}))),
    Case("load / data validate", "zero-length episode", "episode_lengths[0] = 0",
         _validate(lambda fx, d: fx.forge(d, {"episode_lengths": _with(_LEN(fx), (0,), 0)}))),
    Case("load / data validate", "empty dataset (no episodes)", "dataset has no episodes", _validate(_empty)),
    Case("load / data validate", "termination in the middle of an episode", "is marked done but is not the last step",
         _validate(lambda fx, d: fx.forge(d, {"terminations": _with(fx.array("terminations"), (0,), True)}))),
    Case("spinrl.data.read_meta", "meta.json is a directory", "meta.json is not a regular file",
         lambda fx, d: (_ := fx.forge(d)) and ((_ / "meta.json").unlink() or (_ / "meta.json").mkdir() or
                                               (lambda: __import__("spinrl.data", fromlist=["x"]).read_meta(_)))),
    # ------------------------------------------------------------------ from_arrays (Python API)
    Case("spinrl.data.from_arrays", "actions with fewer rows than observations", "actions has 7 rows",
         _from_arrays(actions=lambda a: a[:-1])),
    Case("spinrl.data.from_arrays", "scalar rewards", "rewards must be an array", _from_arrays(rewards=1.0)),
    Case("spinrl.data.from_arrays", "NaN observation", "observations[2] contains nan",
         _from_arrays(observations=_nan_at(2))),
    Case("spinrl.data.from_arrays", "inf reward", "rewards[1] contains inf",
         _from_arrays(rewards=lambda r: _with(r, (1,), np.inf))),
    Case("spinrl.data.from_arrays", "out-of-range sub-action", "is outside [0, 2)",
         _from_arrays(actions=lambda a: _with(a, (0, 2), 2))),
    Case("spinrl.data.from_arrays", "float actions", "actions must be integers",
         _from_arrays(actions=lambda a: a.astype(float))),
    Case("spinrl.data.from_arrays", "observations without a feature axis", "observations must have shape [T, obs_dim]",
         _from_arrays(observations=lambda o: o[:, 0])),
    Case("spinrl.data.from_arrays", "zero observation features", "obs_dim >= 1",
         _from_arrays(observations=lambda o: o[:, :0])),
    Case("spinrl.data.from_arrays", "empty arrays", "observations are empty",
         _from_arrays(observations=lambda o: o[:0])),
    Case("spinrl.data.from_arrays", "every episode a single truncated step", "no complete transition left",
         _from_arrays(terminations=lambda t: np.zeros_like(t), truncations=lambda t: np.ones_like(t))),
    Case("spinrl.data.from_arrays", "terminations not 0/1", "terminations must be boolean",
         _from_arrays(terminations=lambda t: t.astype(int) * 2)),
    Case("spinrl.data.from_arrays", "a step both terminated and truncated", "both terminated and truncated",
         _from_arrays(truncations=lambda t: _with(t, (-1,), True))),
    Case("spinrl.data.from_arrays", "nvec with a 1-choice sub-action", "nvec[0] = 1", _from_arrays(nvec=[1, 2, 2])),
    # ------------------------------------------------------------------ public factorised-DMC pickles
    Case("spinrl data import-dmc", "hostile pickle (os.system)", "refused for safety",
         _public(lambda fx, d: _public_rows(fx) + [Hostile(d / MARKER)])),
    Case("spinrl data import-dmc", "truncated pickle", "is not a readable pickle",
         _public(lambda fx, d: fx.dmc.read_bytes()[: len(fx.dmc.read_bytes()) // 2])),
    Case("spinrl data import-dmc", "file from another task (cheetah data named finger-spin)",
         "the file belongs to another task", _public(lambda fx, d: _public_rows(fx), name="3_bins/finger-spin-medium")),
    Case("spinrl data import-dmc", "NaN reward", "rewards[", _public(
        lambda fx, d: [(s, a, float("nan") if t == 4 else r, ns, dn) for t, (s, a, r, ns, dn) in enumerate(_public_rows(fx))])),
    Case("spinrl data import-dmc", "empty list", "expected a non-empty list", _public(lambda fx, d: [])),
    Case("spinrl data import-dmc", "tuples of the wrong length", "expected (state, action, reward, next_state, done)",
         _public(lambda fx, d: [r[:4] for r in _public_rows(fx)])),
    Case("spinrl data import-dmc", "actions off the bin grid", "is not on the bin grid",
         _public(lambda fx, d: [(s, np.full(6, 0.3), r, ns, dn) for s, a, r, ns, dn in _public_rows(fx)])),
    Case("spinrl data import-dmc", "no <bins>_bins folder and index actions", "cannot tell the number of bins",
         _public(lambda fx, d: _public_rows(fx), name="flat/cheetah-run-medium")),
    Case("spinrl data import-dmc", "file does not exist", "does not exist or is not a file",
         _cli("data", "import-dmc", "{d}/3_bins/cheetah-run-medium", "--out", "{d}/imported")),
    # ------------------------------------------------------------------ Minari
    Case("spinrl data import-minari", "minari extra not installed", "pip install 'spinrl[minari]'",
         _cli("data", "import-minari", "spinrl/x/y-v0", "--out", "{d}/imported"), block=("minari",)),
    Case("spinrl data export-minari", "minari extra not installed", "pip install 'spinrl[minari]'",
         _cli("data", "export-minari", "{m3}", "--dataset-id", "spinrl/x/y-v0"), block=("minari",)),
    Case("spinrl data import-minari", "minari extra not installed (fresh interpreter)", "pip install 'spinrl[minari]'",
         _cli("data", "import-minari", "spinrl/x/y-v0", "--out", "{d}/imported"), block=("minari",), subprocess=True),
    Case("spinrl data import-minari", "dataset id not found locally", "not found at",
         lambda fx, d: (d / "minari").mkdir() or ["data", "import-minari", "spinrl/none/here-v0", "--out",
                                                  str(d / "imported")], needs="minari",
         env={"MINARI_DATASETS_PATH": "{d}/minari"}),
    Case("spinrl data import-minari", "malformed dataset id", "is malformed",
         _cli("data", "import-minari", "not an id", "--out", "{d}/imported"), needs="minari"),
    # ------------------------------------------------------------------ spinrl data make
    Case("spinrl data make", "--episodes 0", "--episodes must be a positive integer",
         _cli("data", "make", "maze", "--episodes", "0", "--out", "{d}/data")),
    Case("spinrl data make", "--transitions -5", "--transitions must be a positive integer",
         _cli("data", "make", "maze", "--transitions", "-5", "--out", "{d}/data")),
    Case("spinrl data make", "neither --episodes nor --transitions", "exactly one of --episodes N or --transitions N",
         _cli("data", "make", "maze", "--out", "{d}/data")),
    Case("spinrl data make", "--num-envs 0", "--num-envs must be positive",
         _cli("data", "make", "maze", "--episodes", "2", "--num-envs", "0", "--out", "{d}/data")),
    Case("spinrl data make", "unknown environment", "env_id 'nope' is unknown",
         _cli("data", "make", "nope", "--episodes", "2", "--out", "{d}/data")),
    Case("spinrl data make", "unknown environment option", "unknown option 'bogus'",
         _cli("data", "make", "maze", "--episodes", "2", "--bogus", "1", "--out", "{d}/data")),
    Case("spinrl data make", "--actuators 1", "maze actuators = 1",
         _cli("data", "make", "maze", "--episodes", "2", "--actuators", "1", "--out", "{d}/data")),
    Case("spinrl data make", "environment option without a value", "--actuators needs a value",
         _cli("data", "make", "maze", "--episodes", "2", "--out", "{d}/data", "--actuators")),
    Case("spinrl data make", "--level not a level", "argument --level: invalid choice",
         _cli("data", "make", "maze", "--episodes", "2", "--level", "bad", "--out", "{d}/data")),
    Case("spinrl data make", "--threads 0", "--threads must be a positive integer",
         _cli("data", "make", "maze", "--episodes", "2", "--threads", "0", "--out", "{d}/data")),
    Case("spinrl data make", "--out is a directory that is not a dataset", "is not a spinrl dataset",
         lambda fx, d: ["data", "make", "maze", "--episodes", "2", "--no-progress", "--out", str(_not_a_dataset(fx, d))]),
    Case("spinrl data make", "sepsis extra not installed (fresh interpreter)", "pip install 'spinrl[sepsis]'",
         _cli("data", "make", "sepsis", "--episodes", "2", "--out", "{d}/data"), block=("icu_sepsis",), subprocess=True),
    # ------------------------------------------------------------------ spinrl pretrain
    Case("spinrl pretrain", "single-episode dataset (no validation split possible)", "needs at least 2 episodes",
         lambda fx, d: ["pretrain", str(_single_episode(fx, d)), "--out", str(d / "asm")]),
    Case("spinrl pretrain", "corrupted dataset", "checksum mismatch for 'actions'",
         lambda fx, d: ["pretrain", str((_ := fx.forge(d)) and _flip(_ / "actions.npy") and _), "--out", str(d / "asm")]),
    Case("spinrl pretrain", "--max-epochs 0", "--max-epochs must be a positive integer",
         _cli("pretrain", "{m3}", "--out", "{d}/asm", "--max-epochs", "0")),
    Case("spinrl pretrain", "--batch-size -1", "--batch-size must be a positive integer",
         _cli("pretrain", "{m3}", "--out", "{d}/asm", "--batch-size", "-1")),
    Case("spinrl pretrain", "--patience 0", "--patience must be a positive integer",
         _cli("pretrain", "{m3}", "--out", "{d}/asm", "--patience", "0")),
    Case("spinrl pretrain", "--val-fraction 1.5", "--val-fraction must be in (0, 1)",
         _cli("pretrain", "{m3}", "--out", "{d}/asm", "--val-fraction", "1.5")),
    Case("spinrl pretrain", "--mask-prob 0", "--mask-prob must be in (0, 1]",
         _cli("pretrain", "{m3}", "--out", "{d}/asm", "--mask-prob", "0")),
    Case("spinrl pretrain", "--min-delta -1", "--min-delta must be >= 0",
         _cli("pretrain", "{m3}", "--out", "{d}/asm", "--min-delta", "-1")),
    Case("spinrl pretrain", "unknown flag", "unrecognized arguments: --bogus",
         _cli("pretrain", "{m3}", "--out", "{d}/asm", "--bogus", "1")),
    Case("spinrl pretrain", "--workers without --distributed", "only apply with --distributed",
         _cli("pretrain", "{m3}", "--out", "{d}/asm", "--workers", "2")),
    Case("spinrl pretrain", "--workers under the torchrun backend", "--workers is for --dist-backend ray",
         _cli("pretrain", "{m3}", "--out", "{d}/asm", "--distributed", "--workers", "2")),
    Case("spinrl pretrain", "--out already holds a finished ASM", "already holds a finished ASM",
         lambda fx, d: ["pretrain", str(fx.m3), "--out", str(fx.copy(fx.asm3, d, "asm"))]),
    Case("spinrl pretrain --resume", "hostile checkpoint (os.system)", "was refused for safety",
         _pretrain_resume_with(lambda fx, d, p: fx.hostile_pt(p, d, "asm_pretrain"))),
    Case("spinrl pretrain --resume", "checkpoint from a newer schema", "has schema 99, newer",
         _pretrain_resume_with(_schema99)),
    Case("spinrl pretrain --resume", "a training checkpoint instead", "holds a 'train' file, not a 'asm_pretrain' one",
         _pretrain_resume_with(lambda fx, d, p: shutil.copy(fx.run3 / "checkpoints" / "last.pt", p))),
    Case("spinrl pretrain --resume", "truncated checkpoint", "cannot be loaded safely",
         _pretrain_resume_with(lambda fx, d, p: _truncate(p, 0.3))),
    Case("spinrl pretrain --resume", "checkpoint field corrupted (state.step is a string)", "field 'state.step' is corrupted",
         _pretrain_resume_with(lambda fx, d, p: fx.resave(p, lambda ck: ck["state"].update(step="abc")))),
    Case("spinrl train --resume", "checkpoint field corrupted (step is a string)", "field 'step' is corrupted",
         _resume_with(lambda fx, d, p: fx.resave(p, lambda ck: ck.update(step="abc")))),
    Case("spinrl pretrain --resume", "different --seed than the run", "--resume with seed=5",
         lambda fx, d: _pretrain_resume_with(lambda *a: None)(fx, d) + ["--seed", "5"]),
    Case("spinrl.pretrain", "unknown model_kwargs key", "model_kwargs has unknown key 'width'",
         _config_call("pretrain", model_kwargs={"width": 3})),
    # ------------------------------------------------------------------ spinrl train
    Case("spinrl train", "--steps 0", "--steps must be a positive integer", _train("--steps", "0")),
    Case("spinrl train", "--steps -5", "--steps must be a positive integer", _train("--steps", "-5")),
    Case("spinrl train", "--steps abc", "argument --steps: invalid int value", _train("--steps", "abc")),
    Case("spinrl train", "--batch-size 0", "--batch-size must be a positive integer", _train("--batch-size", "0")),
    Case("spinrl train", "--checkpoint-every 0", "--checkpoint-every must be a positive integer",
         _train("--checkpoint-every", "0")),
    Case("spinrl train", "--eval-every -1", "--eval-every must be >= 0", _train("--eval-every", "-1")),
    Case("spinrl train", "--eval-episodes 0", "--eval-episodes must be a positive integer", _train("--eval-episodes", "0")),
    Case("spinrl train", "--lr -1", "--lr must be positive", _train("--lr", "-1")),
    Case("spinrl train", "--gamma 0", "--gamma must be in (0, 1]", _train("--gamma", "0")),
    Case("spinrl train", "--precision fp16", "argument --precision: invalid choice", _train("--precision", "fp16")),
    Case("spinrl train", "--algo not an algorithm", "argument --algo: invalid choice", _train("--algo", "dqn")),
    Case("spinrl train", "unknown flag", "unrecognized arguments: --bogus", _train("--bogus", "1")),
    Case("spinrl train", "--device not a device", "--device 'foo' is not a torch device", _train("--device", "foo")),
    Case("spinrl train", "dataset path does not exist", "does not exist",
         lambda fx, d: _train(data=lambda fx, d: d / "nope")(fx, d)),
    Case("spinrl train", "NaN reward in the dataset", "rewards[3] contains nan",
         _train(data=lambda fx, d: fx.forge(d, {"rewards": _with(_REW(fx), (3,), np.nan)}))),
    Case("spinrl train", "dataset whose env_kwargs name another task", "differs from maze's action space",
         _train("--eval-every", "5", data=lambda fx, d: fx.forge(d, meta={"env_kwargs": {"actuators": 5}}))),
    Case("spinrl train", "--actor spin without --asm", "--actor spin needs --asm", _train("--actor", "spin")),
    Case("spinrl train", "--asm with a non-spin actor", "drop --asm", _train("--asm", "{asm3}")),
    Case("spinrl train --asm", "not an ASM directory", "is not a finished ASM directory",
         _train("--actor", "spin", "--asm", "{d}")),
    Case("spinrl train --asm", "ASM pretrained on another nvec", "was pretrained on env_kwargs={'actuators': 3}",
         _train("--actor", "spin", "--asm", "{asm3}", data=lambda fx, d: fx.m5)),
    Case("spinrl train --asm", "ASM pretrained on another task", "was pretrained on env_id='cone'",
         _asm_with(lambda fx, d, a: (a / "asm.json").write_text(json.dumps(
             {**json.loads((a / "asm.json").read_text()), "signature": {"env_id": "cone", "nvec": [3] * 7}})))),
    Case("spinrl train --asm", "asm.json is not JSON", "asm.json is corrupted",
         _asm_with(lambda fx, d, a: (a / "asm.json").write_text("{"))),
    Case("spinrl train --asm", "asm.json without its model sizes", "asm.json is incomplete",
         _asm_with(lambda fx, d, a: (a / "asm.json").write_text(json.dumps(
             {k: v for k, v in json.loads((a / "asm.json").read_text()).items() if k != "model"})))),
    Case("spinrl train --asm", "hostile asm.pt (os.system)", "was refused for safety",
         _asm_with(lambda fx, d, a: fx.hostile_pt(a / "asm.pt", d, "asm"))),
    Case("spinrl train --asm", "asm.pt from a newer schema", "has schema 99, newer",
         _asm_with(lambda fx, d, a: _schema99(fx, d, a / "asm.pt"))),
    Case("spinrl train --asm", "asm.pt is a policy file", "holds a 'policy' file, not a 'asm' one",
         _asm_with(lambda fx, d, a: shutil.copy(fx.run3 / "policy.pt", a / "asm.pt"))),
    Case("spinrl train --asm", "asm.pt weights of another shape", "does not match its asm.json",
         _asm_with(lambda fx, d, a: fx.resave(a / "asm.pt", lambda ck: ck.update(
             model={k: v[:1] for k, v in ck["model"].items()})))),
    Case("spinrl train", "--out already holds a run, no --resume", "already holds a run; pass --resume",
         lambda fx, d: _train("--batch-size", "16", out=lambda fx, d: fx.copy(fx.run3, d, "run"))(fx, d)),
    Case("spinrl train --resume", "hostile checkpoint (os.system)", "was refused for safety",
         _resume_with(lambda fx, d, p: fx.hostile_pt(p, d, "train"))),
    Case("spinrl train --resume", "checkpoint from a newer schema", "has schema 99, newer", _resume_with(_schema99)),
    Case("spinrl train --resume", "truncated checkpoint", "cannot be loaded safely",
         _resume_with(lambda fx, d, p: _truncate(p, 0.3))),
    Case("spinrl train --resume", "a policy file as the checkpoint", "holds a 'policy' file, not a 'train' one",
         _resume_with(lambda fx, d, p: shutil.copy(fx.run3 / "policy.pt", p))),
    Case("spinrl train --resume", "different --seed than the run", "--resume with seed=3",
         _resume_with(lambda *a: None, "--seed", "3")),
    Case("spinrl train --resume", "dataset of another nvec than the run", "is not the data the run",
         _resume_with(lambda *a: None, data=lambda fx, d: fx.m5)),
    # #32 classes: never write into what spinrl did not make; resume checks content; one writer; no NaN results
    Case("spinrl train --resume", "dataset remade with other rewards (same shape, other checksum)",
         "is not the data the run", _resume_with(lambda *a: None, data=lambda fx, d: fx.forge(
             d, arrays={"rewards": fx.array("rewards") + 1.0}))),
    Case("spinrl train --resume", "checkpoint made with another thread count", "a changed thread count ends bit-identity",
         _resume_with(lambda fx, d, p: fx.resave(p, lambda ck: ck["identity"].update(threads=ck["identity"]["threads"] + 1)))),
    Case("spinrl train --resume", "--steps below the checkpoint's step", "is below the checkpoint's step 2",
         _resume_with(lambda *a: None, "--steps", "1")),
    Case("spinrl train", "--out is the user's folder with their own config.json and metrics.csv", "is not a spinrl run",
         _train(out=lambda fx, d: _users_dir(fx, d, "config.json", "metrics.csv"))),
    Case("spinrl train --resume", "--out is the user's folder with a config.json that is not JSON", "is not a spinrl run",
         _train("--resume", out=lambda fx, d: (_users_dir(fx, d, "config.json") / "config.json").write_text("my notes")
                and d / "important")),
    Case("spinrl train --resume", "another process is writing the run (live lock)", "is being written by pid 1",
         _train("--resume", "--batch-size", "16", out=_locked_run)),
    Case("spinrl.train", "losses overflow to inf (rewards 1e30)", "is not finite at step 1", _diverging),
    Case("spinrl pretrain", "--out is the user's folder with their own config.json", "is not a spinrl asm",
         lambda fx, d: ["pretrain", str(fx.m3), "--out", str(_users_dir(fx, d, "config.json")), "--no-progress"]),
    Case("spinrl data make", "--out holds {} as meta.json and the user's thesis", "is not a spinrl dataset",
         lambda fx, d: ["data", "make", "maze", "--episodes", "2", "--no-progress", "--out",
                        str(_users_dir(fx, d, "meta.json"))]),
    Case("spinrl data import-dmc", "--out holds {} as meta.json and the user's thesis", "is not a spinrl dataset",
         lambda fx, d: ["data", "import-dmc", str(fx.dmc), "--out", str(_users_dir(fx, d, "meta.json"))]),
    Case("spinrl behaviour carry", "--out holds the user's own policies/step_*.pt", "is not a spinrl carry",
         lambda fx, d: ["behaviour", "carry", str(_fake_behaviour_run(fx, d)), "--out",
                        str(_users_dir(fx, d, "policies/step_0001000.pt"))]),
    Case("spinrl train", "--tensorboard without the extra", "pip install 'spinrl[tensorboard]'",
         _train("--tensorboard"), block=("torch.utils.tensorboard", "tensorboard")),
    Case("spinrl train", "--loggers tensorboard without the extra", "pip install 'spinrl[tensorboard]'",
         _train("--loggers", "tensorboard"), block=("torch.utils.tensorboard", "tensorboard")),
    Case("spinrl train", "--loggers wandb without the extra", "pip install 'spinrl[wandb]'",
         _train("--loggers", "wandb"), block=("wandb",)),
    Case("spinrl train", "--loggers mlflow without the extra", "pip install 'spinrl[mlflow]'",
         _train("--loggers", "mlflow"), block=("mlflow",)),
    Case("spinrl train", "--loggers csv,mlflow without the extra", "pip install 'spinrl[mlflow]'",
         _train("--loggers", "csv,mlflow"), block=("mlflow",)),
    Case("spinrl pretrain", "--loggers wandb without the extra", "pip install 'spinrl[wandb]'",
         lambda fx, d: ["pretrain", str(fx.m3), "--out", str(d / "asm"), "--loggers", "wandb", "--no-progress"],
         block=("wandb",)),
    Case("spinrl behaviour train", "--loggers mlflow without the extra", "pip install 'spinrl[mlflow]'",
         lambda fx, d: ["behaviour", "train", "dmc:cheetah-run", "--out", str(d / "b"), "--loggers", "mlflow",
                        "--no-progress"], block=("mlflow",), needs="dm_control"),
    Case("spinrl train", "--steps 0 (fresh interpreter)", "--steps must be a positive integer", _train("--steps", "0"),
         subprocess=True),
    Case("spinrl.train", "unknown algo_kwargs key", "algo_kwargs:", _config_call("train", algo_kwargs={"betta": 3.0})),
    Case("spinrl.train", "unknown model_kwargs key", "model_kwargs has unknown key 'width'",
         _config_call("train", model_kwargs={"width": 3})),
    # ------------------------------------------------------------------ spinrl eval / Policy.load
    Case("spinrl eval", "--episodes 0", "--episodes must be a positive integer",
         _cli("eval", "{run3}/policy.pt", "--episodes", "0")),
    Case("spinrl eval", "policy file does not exist", "does not exist", _cli("eval", "{d}/policy.pt")),
    Case("spinrl eval", "a CSV file instead of a policy", "cannot be loaded safely", _cli("eval", "{run3}/metrics.csv")),
    Case("spinrl eval", "a training checkpoint instead of a policy", "is a 'train' file, not a policy",
         _cli("eval", "{run3}/checkpoints/last.pt")),
    Case("spinrl eval", "hostile policy file (os.system)", "was refused for safety",
         _policy_with(lambda fx, d, p: fx.hostile_pt(p, d, "policy"))),
    Case("spinrl eval", "policy from a newer schema", "has schema 99, newer", _policy_with(_schema99)),
    Case("spinrl eval", "truncated policy file", "cannot be loaded safely", _policy_with(lambda fx, d, p: _truncate(p))),
    Case("spinrl eval", "policy without its model sizes", "is incomplete or from another version",
         _policy_with(lambda fx, d, p: fx.resave(p, lambda ck: ck["meta"].pop("model")))),
    Case("spinrl eval", "policy of another nvec (--actuators 5)", "nvec [2, 2, 2], but maze",
         _policy_with(lambda *a: None, "--env", "maze", "--actuators", "5")),
    Case("spinrl eval", "policy of another task (--env cone)", "the policy was trained for 2-dim observations",
         _policy_with(lambda *a: None, "--env", "cone")),
    Case("spinrl eval", "unknown environment option", "unknown option 'bogus'",
         _cli("eval", "{run3}/policy.pt", "--bogus", "3")),
    Case("spinrl eval", "--threads 0", "--threads must be a positive integer",
         _cli("eval", "{run3}/policy.pt", "--threads", "0")),
    Case("spinrl eval", "--offline with --threads 0", "--threads must be a positive integer",
         _cli("eval", "{run3}/policy.pt", "--offline", "{m3}", "--threads", "0")),
    Case("Policy.load", "hostile file (os.system)", "was refused for safety",
         _policy_load(lambda fx, d: fx.hostile_pt(d / "policy.pt", d, "policy"))),
    Case("Policy.load", "file from a newer schema", "has schema 99, newer",
         _policy_load(lambda fx, d: (shutil.copy(fx.run3 / "policy.pt", d / "p.pt"), _schema99(fx, d, d / "p.pt"))[0])),
    Case("Policy.load", "an ASM file instead of a policy", "is a 'asm' file, not a policy",
         _policy_load(lambda fx, d: fx.asm3 / "asm.pt")),
    Case("Policy.load", "empty file", "cannot be loaded safely",
         _policy_load(lambda fx, d: _write(d / "p.pt", b""))),
    # ------------------------------------------------------------------ sweep specs
    Case("spinrl sweep", "unknown section", "unknown section [bogus]",
         _spec("[grid]\nenv=['maze']\ntransitions=[100]\n[bogus]\nx=1\n")),
    Case("spinrl sweep", "misspelled grid key", "unknown key grid.actr",
         _spec("[grid]\nenv=['maze']\ntransitions=[100]\nactr=['spin']\n")),
    Case("spinrl sweep", "empty grid axis", "grid.transitions is an empty list",
         _spec("[grid]\nenv=['maze']\ntransitions=[]\n")),
    Case("spinrl sweep", "budget of the wrong type", "grid.steps must be int",
         _spec("[grid]\nenv=['maze']\ntransitions=[100]\nsteps=['many']\n")),
    Case("spinrl sweep", "unknown actor", "grid.actor = 'transformer' is not one of",
         _spec("[grid]\nenv=['maze']\ntransitions=[100]\nactor=['transformer']\n")),
    Case("spinrl sweep", "no dataset size", "grid.transitions or grid.episodes",
         _spec("[grid]\nenv=['maze']\n")),
    Case("spinrl sweep", "not TOML", "not valid TOML", _spec("[grid\nenv=")),
    Case("spinrl report", "--records names a file", "--records",
         lambda fx, d: (_write(d / "rec", b"x"), ["report", str(fx.run3), "--records", str(d / "rec")])[1]),
    Case("spinrl report", "--pool without --early-step", "--pool pools runs on the early-learning page only",
         lambda fx, d: ["report", str(fx.run3), "--pool", str(fx.run3)]),
    # ------------------------------------------------------------------ behaviour training
    Case("spinrl behaviour train", "--bins 1", "--bins",
         _cli("behaviour", "train", "dmc:cheetah-run", "--bins", "1", "--out", "{d}/b")),
    Case("spinrl behaviour train", "--env-steps 0", "--env-steps",
         _cli("behaviour", "train", "dmc:cheetah-run", "--env-steps", "0", "--out", "{d}/b")),
    Case("spinrl behaviour train", "a task that is not DM Control", "dmc:<domain>-<task>",
         _cli("behaviour", "train", "maze", "--out", "{d}/b")),
    Case("spinrl behaviour train", "--obs-transform log", "--obs-transform",
         _cli("behaviour", "train", "dmc:cheetah-run", "--obs-transform", "log", "--out", "{d}/b")),
    Case("spinrl behaviour train", "--continue-from a folder without a carry", "no carry.pt there",
         _cli("behaviour", "train", "dmc:cheetah-run", "--continue-from", "{d}", "--out", "{d}/b")),
    Case("spinrl behaviour carry", "a folder that is not a behaviour run", "no checkpoints/last.pt",
         _cli("behaviour", "carry", "{d}", "--out", "{d}/c")),
    Case("spinrl behaviour export", "--select-top 0", "--select-top must be >= 1",
         _cli("behaviour", "export", "{d}", "--out", "{d}/e", "--select-top", "0")),
    Case("spinrl behaviour export", "--select-episodes -1", "--select-episodes >= 0",
         _cli("behaviour", "export", "{d}", "--out", "{d}/e", "--select-episodes", "-1")),
    Case("spinrl behaviour export", "--threads 0", "--threads must be a positive integer",
         _cli("behaviour", "export", "{d}", "--out", "{d}/e", "--threads", "0")),
    Case("spinrl behaviour export", "a folder that is neither a run nor a set", "neither a run directory",
         _cli("behaviour", "export", "{d}", "--out", "{d}/e")),
    # ------------------------------------------------------------------ untrusted input: paths, special files, sizes (#32)
    Case("load / data validate", "meta.json is a symlink to /dev/zero", "is a symlink out of the dataset",
         _validate(lambda fx, d: _relink(fx.forge(d), "meta.json", "/dev/zero"))),
    Case("load / data validate", "an array file is a symlink to /dev/zero", "is a symlink out of the dataset",
         _validate(lambda fx, d: _relink(fx.forge(d), "rewards.npy", "/dev/zero"))),
    Case("load / data validate", "an array file is a FIFO", "is not a regular file",
         _validate(lambda fx, d: (_ := fx.forge(d)) and ((_ / "actions.npy").unlink() or os.mkfifo(_ / "actions.npy") or _))),
    Case("load / data validate", "env_id that climbs out of a folder (dmc:../../../../victim)", "is not a safe name",
         _validate(lambda fx, d: fx.forge(d, meta={"env_id": "dmc:../../../../victim"}))),
    Case("spinrl data export-dmc", "level that climbs out of --root", "is not a safe name",
         lambda fx, d: ["data", "export-dmc", str(fx.forge(d, meta={"level": "../../victim"})), "--root", str(d / "r")]),
    Case("load / data validate", "nvec of 10**15 choices", "at most 65536 sub-actions of at most 1048576 choices",
         _validate(lambda fx, d: fx.forge(d, meta={"nvec": [10**15] * 3}))),
    Case("load / data validate", "num_transitions is a string", "field 'num_transitions' must be an integer",
         _validate(lambda fx, d: fx.forge(d, meta={"num_transitions": "many"}))),
    Case("load / data info --no-verify", "array file shorter than its header declares (checksums resigned)",
         "its header declares", lambda fx, d: ["data", "info", "--no-verify", str(_resigned_truncate(fx.forge(d)))]),
    Case("spinrl.data.from_arrays", "nvec of 10**15 choices", "at most 65536 sub-actions", _from_arrays(nvec=[10**15] * 3)),
    Case("spinrl data import-dmc", "8 KB of nested repeated references ([L]*10, ten levels deep)",
         "is not a numeric vector", _public(lambda fx, d: _nested_refs(fx))),
    Case("spinrl data import-dmc", "one list referenced 10**4 times (expands to 10**8 numbers)", "expands to more than",
         _public(lambda fx, d: [(r[0], [[0.0] * 10**4] * 10**4, r[2], r[3], r[4]) for r in _public_rows(fx)[:1]])),
    Case("spinrl data import-dmc", "pickle asking bytes(10**12)", "for more than 256 MB in one call",
         _public(lambda fx, d: [_Alloc()])),
    Case("spinrl data import-dmc", "malformed item in the middle", "item 15 of",
         _public(lambda fx, d: (_ := _public_rows(fx)) and _[:15] + [(_[15][0], 1)] + _[16:])),
    # ------------------------------------------------------------------ silent wrong results, numbers out of range (#32)
    Case("spinrl train", "--lr inf", "--lr must be a finite number", _train("--lr", "inf")),
    Case("spinrl train", "--seed -1", "--seed must be an integer in [0, 2**63)", _train("--seed", "-1")),
    Case("spinrl train", "--seed 10**23", "--seed must be an integer in [0, 2**63)", _train("--seed", str(10**23))),
    Case("spinrl train", "--batch-size 10**11", "--batch-size must be a positive integer of at most",
         _train("--batch-size", str(10**11))),
    Case("spinrl train", "--threads 100000", "more than this machine's", _train("--threads", "100000")),
    Case("spinrl data make", "--transitions 10**20", "--transitions must be a positive integer of at most",
         _cli("data", "make", "maze", "--transitions", str(10**20), "--out", "{d}/ds")),
    Case("spinrl eval", "--episodes 10**14", "--episodes must be a positive integer of at most",
         _cli("eval", "{run3}/policy.pt", "--episodes", str(10**14))),
    Case("spinrl eval", "policy with NaN weights", "has NaN/inf actor weights",
         _policy_with(lambda fx, d, p: fx.resave(p, _nan_weights))),
    Case("Policy.act", "NaN observation", "observations[1] contains NaN/inf", _act_on_nan),
    Case("spinrl.data.collect", "policy returning 0.7 (non-integer actions)", "non-integer action", _collect_floats),
    Case("spinrl sweep", "sweep.workers = -3", "sweep.workers = -3 must be a number >= 0",
         _spec("[sweep]\nworkers=-3\n[grid]\nenv=['maze']\ntransitions=[100]\n")),
    Case("spinrl sweep", "binary (non-UTF-8) spec", "is not UTF-8 text",
         lambda fx, d: (_write(d / "spec.toml", b"\xff\xfe\x00\x81binary"), ["sweep", str(d / "spec.toml"), "--out",
                                                                             str(d / "sweep"), "--dry-run"])[1]),
    Case("spinrl report", "non-numeric metrics.csv", "is not numeric",
         lambda fx, d: (shutil.copytree(fx.run3, d / "runs" / "r"), _write(d / "runs" / "r" / "metrics.csv", b"step,loss\nabc,x\n"),
                        ["report", str(d / "runs")])[2]),
    # ------------------------------------------------------------------ OS and resource errors (#32)
    Case("spinrl data make", "disk full (ENOSPC while writing)", "the disk is full",
         _cli("data", "make", "maze", "--transitions", "50", "--out", "{d}/ds"), patch=lambda d: _os_fails("fsync", 28)),
    Case("spinrl data make", "read-only file system (EROFS)", "the file system is read-only",
         _cli("data", "make", "maze", "--transitions", "50", "--out", "{d}/x/ds"), patch=lambda d: _os_fails("mkdir", 30)),
    Case("spinrl data make", "permission denied (EACCES)", "permission denied",
         _cli("data", "make", "maze", "--transitions", "50", "--out", "{d}/x/ds"), patch=lambda d: _os_fails("mkdir", 13)),
    Case("spinrl data make", "--out is a file", "is a file, not a directory",
         lambda fx, d: (_write(d / "f", b"mine"), ["data", "make", "maze", "--transitions", "50", "--out", str(d / "f")])[1]),
    # ------------------------------------------------------------------ CLI in general
    Case("spinrl", "unknown command", "argument COMMAND: invalid choice: 'bogus'", _cli("bogus")),
    Case("spinrl", "no command", "the following arguments are required: COMMAND", _cli()),
    Case("spinrl data", "no data command", "the following arguments are required: DATA_COMMAND", _cli("data")),
]


# ---------------------------------------------------------------------- running a case
@dataclass
class Outcome:
    code: int | None
    """CLI exit code (None for a Python API case)"""
    error: str | None
    """the exception class a Python API case raised (None for CLI cases)"""
    stderr: str
    changed: list[str]
    """files created, changed or removed under the workspace (besides the case's own setup)"""
    marker: bool
    """the hostile pickle's marker file exists"""

    @property
    def lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.strip()]

    @property
    def message(self) -> str:
        return self.stderr.strip()


def _snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, files in os.walk(root):
        for name in files + dirnames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns, st.st_ino) if name in files else ("dir",)
    return out


@contextlib.contextmanager
def _blocked(modules: tuple[str, ...]):
    saved = {m: sys.modules.get(m, _MISSING) for m in modules}
    try:
        for m in modules:
            sys.modules[m] = None  # type: ignore[assignment]  # "import m" now raises ImportError
        yield
    finally:
        for m, v in saved.items():
            if v is _MISSING:
                sys.modules.pop(m, None)
            else:
                sys.modules[m] = v


_MISSING = object()


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_case(case: Case, fx: Fixtures) -> Outcome:
    """Build the case's bad input in a fresh directory under ``fx.root`` and run it."""
    from spinrl.cli.main import main

    d = fx.root / case.id
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    target = case.setup(fx, d)
    env = {k: v.format(d=d) for k, v in case.env.items()}
    before = _snapshot(fx.root)
    code, error, err = None, None, io.StringIO()
    if isinstance(target, list) and case.subprocess:
        cmd = _subprocess_block(case.block, target) if case.block else [sys.executable, "-m", "spinrl.cli.main", *target]
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
        code = r.returncode
        err.write(r.stderr)
    else:
        with _blocked(case.block), _environ(env), (case.patch(d) if case.patch else contextlib.nullcontext()), \
                contextlib.redirect_stderr(err), \
                contextlib.redirect_stdout(io.StringIO()):
            if isinstance(target, list):
                try:
                    code = main(target)
                except SystemExit as e:  # argparse
                    code = e.code if isinstance(e.code, int) else 1
                except Exception as e:  # noqa: BLE001 - recorded, and the matrix test fails on it
                    code = 1
                    err.write(f"uncaught {type(e).__name__}: {e}\n")
            else:
                try:
                    target()
                    error = "no error"
                except SpinError as e:
                    error = type(e).__name__
                    err.write(f"{e}\n")
                except Exception as e:  # noqa: BLE001
                    error = f"uncaught {type(e).__name__}"
                    err.write(f"{e}\n")
    after = _snapshot(fx.root)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return Outcome(code, error, err.getvalue(), changed, (d / MARKER).exists())


def problems(case: Case, out: Outcome) -> list[str]:
    """What is wrong with an outcome (empty when the row holds)."""
    bad = []
    if isinstance(out.code, int) or out.error is None:
        if out.code != 2:
            bad.append(f"exit code {out.code}, expected 2")
        if out.lines and not re.match(r"^spinrl( [a-z-]+)*: error: ", out.lines[0]):
            bad.append("message does not start with 'spinrl ...: error:'")
    elif not out.error.endswith("Error") or out.error.startswith("uncaught"):
        bad.append(f"raised {out.error}, expected a SpinError")
    if len(out.lines) != 1:
        bad.append(f"stderr has {len(out.lines)} lines, expected exactly 1: {out.stderr[-600:]!r}")
    if case.expect not in out.message:
        bad.append(f"message lacks {case.expect!r}: {out.message[:400]!r}")
    if out.changed:
        bad.append(f"files created or changed: {out.changed[:5]}")
    if out.marker:
        bad.append("the hostile pickle ran (marker file exists)")
    return bad


def applies(case: Case) -> bool:
    if case.needs is None:
        return True
    import importlib.util

    return importlib.util.find_spec(case.needs) is not None


# ---------------------------------------------------------------------- the document
def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(rows: list[tuple[Case, Outcome]], root: Path) -> str:
    lines = [
        "# Reliability: the bad-input matrix",
        "",
        "Generated by `python tests/reliability.py` from the cases in `tests/reliability.py`; "
        "`tests/test_bad_inputs.py` asserts every row: the CLI exits 2 (a Python API call raises a `SpinError`), "
        "the message is exactly one line naming the field, no file is created or changed, and a hostile pickle "
        "never runs. `<tmp>` stands for the test's scratch directory. Do not edit by hand.",
        "",
        f"{len(rows)} rows.",
        "",
        "| entry point | bad input | message (one line) | exit code |",
        "|---|---|---|---|",
    ]
    for case, out in rows:
        msg = out.message.replace(str(root), "<tmp>")
        code = str(out.code) if out.error is None else f"raises {out.error}"
        lines.append(f"| `{_md(case.entry)}` | {_md(case.bad_input)} | `{_md(msg)}` | {code} |")
    return "\n".join(lines) + "\n"


def generate(root: Path | None = None) -> tuple[str, list[tuple[Case, list[str]]]]:
    """Run every applicable case; returns (markdown, [(case, problems)] for the rows that fail)."""
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(root or tmp)
        fx = Fixtures.build(root)
        rows, failing = [], []
        for case in CASES:
            if not applies(case):
                continue
            out = run_case(case, fx)
            rows.append((case, out))
            bad = problems(case, out)
            if bad:
                failing.append((case, bad))
        return render(rows, root), failing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tests/reliability.py", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="docs/RELIABILITY.md", help="where to write the table")
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if the file differs")
    a = p.parse_args(argv)
    text, failing = generate()
    for case, bad in failing:
        print(f"FAIL {case.id}: {'; '.join(bad)}", file=sys.stderr)
    path = Path(a.out)
    if a.check:
        same = path.exists() and path.read_text() == text
        print(f"{path} is {'up to date' if same else 'out of date: run python tests/reliability.py'}")
        return 0 if same and not failing else 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    rows = sum(ln.startswith("| `") for ln in text.splitlines())
    print(f"wrote {path} ({rows} rows, {len(failing)} failing)")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
