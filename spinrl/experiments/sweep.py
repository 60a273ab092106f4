"""``spinrl sweep SPEC.toml``: a grid of training runs on a local process pool or through Ray Tune.

The spec is a TOML grid (see ``benchmarks/smoke.toml``)::

    [sweep]                       # name, workers, cpus_per_trial, gpus_per_trial, offline_eval
    [grid]                        # lists -> cartesian product: env, level, transitions | episodes, seed,
                                  #   and any TrainConfig field (algo, actor, preset, steps, eval_every, ...)
    [env_kwargs.maze]             # per env id; list values are gridded too (actuators = [5, 12])
    [data]                        # fixed DataMakeConfig fields (seed, num_envs, ...)
    [train]                       # fixed TrainConfig fields (log_every, model_kwargs, algo_kwargs, ...)
    [pretrain]                    # fixed PretrainConfig fields for the SPIN runs' ASMs
                                  # (grid keys asm_<field>, e.g. asm_max_steps = [0, 5000], grid them,
                                  #  asm_seed = [0] shares one ASM across policy seeds)

Why it is built this way: datasets are made once in the parent (they are cached by name); each ASM is
pretrained once per (dataset, seed, preset, pretrain settings) and shared by every spin/spin-cached run
that needs it; every trial has a stable directory named from what defines it, so rerunning the same
command skips finished runs (``policy.pt``), resumes interrupted ones (``checkpoints/last.pt``, which is
bit-identical) and recomputes nothing. Workers are separate processes that stop with the sweep: SIGTERM
stops them as Ctrl-C does, and each worker exits within seconds of the sweep process's end (even after a
SIGKILL), so a killed sweep never leaves orphans writing into run directories.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import sys
import time
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, get_args, get_origin

from spinrl.errors import ConfigError

SECTIONS = ("sweep", "grid", "env_kwargs", "data", "train", "pretrain")
SWEEP_KEYS = {
    "name": str,
    "workers": int,
    "cpus_per_trial": float,
    "gpus_per_trial": float,
    "offline_eval": bool,
    "description": str,
}
DATA_GRID = ("env", "level", "transitions", "episodes")
# Fields a sweep sets itself, per trial: never user-settable. TrainConfig.env (an evaluation env other than the
# dataset's) is owned too: a sweep's "env" is its datasets' env (grid.env), and they carry their simulator.
_TRAIN_OWNED = ("dataset", "out", "asm", "resume", "progress", "env")
_PRETRAIN_OWNED = ("dataset", "out", "seed", "preset", "resume", "progress", "threads", "device")
_DATA_OWNED = ("env", "level", "transitions", "episodes", "out", "env_kwargs", "progress")


@dataclasses.dataclass
class Trial:
    """One training run: everything that defines it, and where it lives."""

    id: str
    train: dict
    data: dict
    asm: dict | None  # PretrainConfig kwargs (without dataset/out) when the actor needs an ASM
    asm_id: str | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Sweep:
    name: str
    spec_path: str
    out: Path
    trials: list[Trial]
    options: dict


# ---------------------------------------------------------------------- spec
def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _check_type(where: str, value: Any, tp: Any) -> None:
    """Raise a one-line error when ``value`` does not fit the dataclass field type ``tp``."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return
        errs = []
        for a in args:
            if a is type(None):
                continue
            try:
                _check_type(where, value, a)
                return
            except ConfigError as e:
                errs.append(str(e))
        raise ConfigError(errs[0] if errs else f"{where}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where} = {value!r} is not one of {', '.join(map(repr, get_args(tp)))}")
        return
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is str:
        ok = isinstance(value, str)
    elif tp is dict or origin is dict:
        ok = isinstance(value, dict)
    elif origin in (tuple, list):
        ok = isinstance(value, (list, tuple))
    else:
        ok = True
    if not ok:
        name = getattr(tp, "__name__", str(tp))
        raise ConfigError(f"{where} must be {name}, got {type(value).__name__} {value!r}")


def _as_list(where: str, v: Any) -> list:
    if isinstance(v, list):
        if not v:
            raise ConfigError(f"{where} is an empty list; give at least one value (the grid would be empty)")
        return v
    return [v]


def load_spec(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"sweep spec {p} does not exist")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"sweep spec {p} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"sweep spec {p} is not UTF-8 text (a binary file?); pass a TOML spec") from None


def _short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _kw_tag(kw: dict) -> str:
    return "-".join(f"{k}{v}" for k, v in sorted(kw.items()))


def parse_only(items: list[str] | None) -> dict[str, list[str]]:
    """``["env=maze,cone", "actor=spin"]`` -> {"env": ["maze", "cone"], "actor": ["spin"]}."""
    out: dict[str, list[str]] = {}
    for it in items or []:
        if "=" not in it:
            raise ConfigError(f"--only {it!r} must look like KEY=V1,V2 (e.g. actor=factored,spin)")
        k, v = it.split("=", 1)
        out.setdefault(k.strip(), []).extend(x.strip() for x in v.split(","))
    return out


def _values(t: Trial) -> dict:
    return {
        **{k: v for k, v in t.data.items() if k != "env_kwargs"},
        **t.data["env_kwargs"],
        **t.train,
        **{f"asm_{k}": v for k, v in (t.asm or {}).items() if k not in ("seed", "preset", "model_kwargs")},
    }


def _text(v: Any) -> str:
    """A value as the spec spells it: TOML's true/false, not Python's True/False."""
    return str(v).lower() if isinstance(v, bool) else str(v)


def _matches(t: Trial, only: dict[str, list[str]], train_defaults: dict[str, Any]) -> bool:
    """Kept when, for every --only key, the trial's value (as text) is listed. A training key the trial
    leaves unset counts as its default (`--only greedy=true` keeps only the greedy runs); a key that does
    not apply to the trial (an ASM key for factored, an env keyword that another env lacks, such as
    actuators for cone) does not exclude it."""
    values = _values(t)
    for k, allowed in only.items():
        if k in values:
            v = values[k]
        elif k in train_defaults:
            v = train_defaults[k]
        else:
            continue
        if _text(v) not in ({a.lower() for a in allowed} if isinstance(v, bool) else allowed):
            return False
    return True


def expand(spec: dict, out: str | os.PathLike, spec_path: str = "", only: dict[str, list[str]] | None = None) -> Sweep:
    """Validate a spec and expand its grid into trials (no side effects)."""
    from spinrl.experiments.datasets import DataMakeConfig
    from spinrl.training.config import PretrainConfig, TrainConfig

    for k in spec:
        if k not in SECTIONS:
            raise ConfigError(f"sweep spec: unknown section [{k}]; valid sections: {', '.join(SECTIONS)}")
        if not isinstance(spec[k], dict) and not (k == "grid" and isinstance(spec[k], list)):
            raise ConfigError(f"sweep spec: [{k}] must be a table")
    sw = dict(spec.get("sweep", {}))
    for k, v in sw.items():
        if k not in SWEEP_KEYS:
            raise ConfigError(f"sweep spec: unknown key sweep.{k}; valid keys: {', '.join(SWEEP_KEYS)}")
        _check_type(f"sweep.{k}", v, SWEEP_KEYS[k])
        if k in ("workers", "cpus_per_trial", "gpus_per_trial") and not 0 <= v < 10**6:  # -3 workers hung the sweep
            raise ConfigError(
                f"sweep spec: sweep.{k} = {v} must be a number >= 0 (workers 0: one per core); fix the spec"
            )
    tf, pf, df = _fields(TrainConfig), _fields(PretrainConfig), _fields(DataMakeConfig)

    grids = spec.get("grid", {})
    grids = grids if isinstance(grids, list) else [grids]
    if not grids:
        raise ConfigError("sweep spec: [grid] is empty; give at least grid.env and grid.transitions")
    out = Path(out)
    trials: list[Trial] = []
    seen: set[str] = set()
    for i, g in enumerate(grids):
        if not isinstance(g, dict):
            raise ConfigError("sweep spec: each [[grid]] must be a table")
        trials += _expand_grid(spec, dict(g), out, tf, pf, df, where="grid" if len(grids) == 1 else f"grid[{i}]")
    all_envs = {e for g in grids for e in _as_list("grid.env", g.get("env", []))}
    for e in spec.get("env_kwargs", {}):
        if e not in all_envs:
            raise ConfigError(f"sweep spec: env_kwargs.{e} names an env that is not in any grid.env {sorted(all_envs)}")
    if only:
        train_defaults = {
            f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING
        }
        known = set().union(*(_values(t) for t in trials)) | set(DATA_GRID) | set(train_defaults)
        for k in only:
            if k not in known:
                raise ConfigError(
                    f"--only {k}=... names no key of this spec's trials; known keys: {', '.join(sorted(known))}"
                )
        trials = [t for t in trials if _matches(t, only, train_defaults)]
        if not trials:
            raise ConfigError(f"--only {only} selects no trial of the spec; check the keys and values")
    for t in trials:
        if t.id in seen:
            raise ConfigError(f"sweep spec: two trials share the id {t.id}; a grid value repeats")
        seen.add(t.id)
        try:
            TrainConfig(dataset="<dataset>", **t.train).validate()
        except ConfigError as e:
            raise ConfigError(f"sweep spec: trial {t.id}: {e}") from None
    return Sweep(
        name=sw.get("name", Path(spec_path).stem or "sweep"),
        spec_path=str(spec_path),
        out=out,
        trials=trials,
        options=sw,
    )


def _expand_grid(spec: dict, grid: dict, out: Path, tf: dict, pf: dict, df: dict, where: str) -> list[Trial]:
    from spinrl.experiments.datasets import DataMakeConfig

    if "env" not in grid:
        raise ConfigError(f'sweep spec: {where}.env is required (e.g. env = ["maze", "cone"])')
    if "transitions" not in grid and "episodes" not in grid:
        raise ConfigError(f"sweep spec: give {where}.transitions or {where}.episodes (dataset size)")
    if "transitions" in grid and "episodes" in grid:
        raise ConfigError(f"sweep spec: give only one of {where}.transitions and {where}.episodes")
    train_grid_keys = [k for k in tf if k not in _TRAIN_OWNED]
    asm_grid_keys = [f"asm_{k}" for k in pf if k not in _PRETRAIN_OWNED or k == "seed"]
    for k, v in grid.items():
        if k not in DATA_GRID and k not in train_grid_keys and k not in asm_grid_keys:
            raise ConfigError(
                f"sweep spec: unknown key grid.{k}; valid keys: "
                f"{', '.join(DATA_GRID + tuple(train_grid_keys))}, "
                f"and asm_<pretrain field>"
            )
        vals = _as_list(f"{where}.{k}", v)
        for x in vals:
            if k in asm_grid_keys:
                _check_type(f"{where}.{k}", x, pf[k[4:]])
            elif k in ("env", "level"):
                _check_type(f"{where}.{k}", x, str)
            elif k in ("transitions", "episodes"):
                _check_type(f"{where}.{k}", x, int)
                if x <= 0:
                    raise ConfigError(f"{where}.{k} values must be positive, got {x}")
            else:
                _check_type(f"{where}.{k}", x, tf[k])
        grid[k] = vals
    for sect, fields, owned in (
        ("data", df, _DATA_OWNED),
        ("train", tf, _TRAIN_OWNED),
        ("pretrain", pf, _PRETRAIN_OWNED),
    ):
        for k, v in spec.get(sect, {}).items():
            if k == "env" and sect != "pretrain":
                raise ConfigError(
                    f"sweep spec: {sect}.env is not a setting; the env is grid.env "
                    '(e.g. env = ["maze"]): the datasets are made on it and trials evaluate on it'
                )
            if k not in fields or k in owned:
                valid = [f for f in fields if f not in owned]
                raise ConfigError(f"sweep spec: unknown key {sect}.{k}; valid keys: {', '.join(valid)}")
            if sect == "train" and k in grid:
                raise ConfigError(f"sweep spec: {k} is set in both [grid] and [train]; keep one")
            _check_type(f"{sect}.{k}", v, fields[k])
    env_kwargs = spec.get("env_kwargs", {})
    for e, kw in env_kwargs.items():
        if not isinstance(kw, dict):
            raise ConfigError(f"sweep spec: env_kwargs.{e} must be a table of keyword -> value(s)")
        for k, v in kw.items():
            _as_list(f"env_kwargs.{e}.{k}", v)

    size_key = "transitions" if "transitions" in grid else "episodes"
    data_fixed = dict(spec.get("data", {}))
    train_fixed = dict(spec.get("train", {}))
    pre_fixed = dict(spec.get("pretrain", {}))
    train_keys = [k for k in grid if k not in DATA_GRID]
    trials: list[Trial] = []
    for env in grid["env"]:
        kw_grid = env_kwargs.get(env, {})
        kw_names = sorted(kw_grid)
        for kw_vals in itertools.product(*[_as_list(f"env_kwargs.{env}.{k}", kw_grid[k]) for k in kw_names]):
            kw = dict(zip(kw_names, kw_vals))
            for level in grid.get("level", ["medium-expert"]):
                for size in grid[size_key]:
                    data = {"env": env, "env_kwargs": kw, "level": level, size_key: size, **data_fixed}
                    try:
                        DataMakeConfig(**data).validate()
                    except ConfigError as e:
                        raise ConfigError(f"sweep spec: dataset {env} {kw} {level}: {e}") from None
                    for combo in itertools.product(*[grid[k] for k in train_keys]):
                        tr = {**train_fixed, **dict(zip(train_keys, combo))}
                        t = _make_trial(data, tr, pre_fixed, out)
                        if not (t.asm is None and any(x.id == t.id for x in trials)):  # asm_ keys: one baseline run
                            trials.append(t)
    return trials


def _make_trial(data: dict, tr: dict, pre_fixed: dict, out: Path) -> Trial:
    from spinrl.training.config import TrainConfig

    asm_grid = {k[4:]: tr.pop(k) for k in list(tr) if k.startswith("asm_")}
    actor = tr.get("actor", "factored")
    algo = tr.get("algo", "iql")
    seed = tr.get("seed", 0)
    preset = tr.get("preset", "cpu")
    size = f"{data['transitions']}t" if "transitions" in data else f"{data['episodes']}ep"
    task = "_".join(p for p in (data["env"].replace(":", "-"), _kw_tag(data["env_kwargs"]), data["level"], size) if p)
    defining: dict[str, Any] = {
        "data": data,
        "train": {k: v for k, v in sorted(tr.items()) if k not in ("threads", "device", "progress")},
    }
    if asm_grid and actor in ("spin", "spin-cached"):  # gridded ASM settings define the trial (absent: ids unchanged)
        defining["asm_grid"] = dict(sorted(asm_grid.items()))
    if str(data["env"]).startswith("dmc:") and data["level"] != "random":
        from spinrl.experiments.datasets import DataMakeConfig

        # the dataset's cache name carries a digest of the chosen behaviour policies: new policies, new trials
        defining["dataset"] = DataMakeConfig(**data).default_out().name
    prec = "" if tr.get("precision", "fp32") == "fp32" else f"_{tr['precision']}"
    asm_tag = "".join(f"_asm-{k}{v}" for k, v in sorted(defining.get("asm_grid", {}).items())).replace("_", "-")[1:]
    tid = f"{task}/{algo}-{actor}_{preset}{prec}{'_' + asm_tag if asm_tag else ''}_seed{seed}_{_short_hash(defining)}"
    asm, asm_id = None, None
    train = {**tr, "out": str(out / "runs" / tid), "progress": False}
    train.setdefault("threads", 1)
    if actor in ("spin", "spin-cached"):
        asm = {"seed": seed, "preset": preset, **pre_fixed, **asm_grid}
        if actor == "spin-cached":
            asm.setdefault("masking", "variable")
        if "model_kwargs" in tr and "model_kwargs" not in asm:
            asm["model_kwargs"] = tr["model_kwargs"]
        asm_def = {"data": data, "asm": asm, **({"dataset": defining["dataset"]} if "dataset" in defining else {})}
        asm_id = f"{task}/asm_{preset}_{asm.get('masking', 'bert')}_seed{asm['seed']}_{_short_hash(asm_def)}"
        train["asm"] = str(out / "asm" / asm_id)
    assert set(train) - {f.name for f in dataclasses.fields(TrainConfig)} <= {"dataset"}
    return Trial(id=tid, train=train, data=data, asm=asm, asm_id=asm_id)


# ---------------------------------------------------------------------- work units
def trial_state(t: Trial) -> str:
    out = Path(t.train["out"])
    if (out / "policy.pt").exists():
        return "done"
    if (out / "checkpoints" / "last.pt").exists():
        return "partial"
    return "new"


def asm_state(asm_dir: Path) -> str:
    if (asm_dir / "asm.json").exists():
        return "done"
    return "partial" if (asm_dir / "checkpoints" / "last.pt").exists() else "new"


def run_pretrain_unit(
    asm_dir: str, dataset: str, asm_kwargs: dict, threads: int | None = 1, device: str = "auto"
) -> str:
    """Pretrain one ASM (or finish it); a finished one is never touched (a partial one keeps its device)."""
    from spinrl.training.config import PretrainConfig
    from spinrl.training.pretrain import pretrain

    d = Path(asm_dir)
    if asm_state(d) == "done":
        return "skipped"
    resume = asm_state(d) == "partial"
    pretrain(
        PretrainConfig(
            dataset=dataset, out=asm_dir, progress=False, resume=resume, threads=threads, device=device, **asm_kwargs
        )
    )
    return "resumed" if resume else "ran"


def run_train_unit(train_kwargs: dict, dataset: str, offline_eval: bool = False) -> str:
    """Train one trial (or finish it); a finished one is never touched."""
    from spinrl.training.config import TrainConfig
    from spinrl.training.trainer import run

    out = Path(train_kwargs["out"])
    if (out / "policy.pt").exists():
        return "skipped"
    resume = (out / "checkpoints" / "last.pt").exists()
    run(TrainConfig(dataset=dataset, resume=resume, **{k: v for k, v in train_kwargs.items() if k != "resume"}))
    if offline_eval:
        from spinrl.evaluation.offline import offline_evaluate, write_offline_eval

        write_offline_eval(out, offline_evaluate(out / "policy.pt", dataset, progress=False))
    return "resumed" if resume else "ran"


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the sweep process dies, so no orphan keeps writing a run directory."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _watch_sweep(sweep_pid: int) -> None:
    """Exit when the sweep process is gone. The forkserver (our parent) outlives a killed sweep, so the
    parent-death signal alone left orphans writing into run directories (seen with SIGTERM)."""
    import threading

    def watch() -> None:
        while True:
            time.sleep(2.0)
            try:
                os.kill(sweep_pid, 0)
            except ProcessLookupError:
                os._exit(1)  # resumable: the next sweep run continues from the last checkpoint
            except PermissionError:
                pass

    threading.Thread(target=watch, daemon=True, name="spinrl-sweep-watch").start()


def _unit_entry(kind: str, args: tuple, log_path: str, sweep_pid: int | None = None) -> None:
    _die_with_parent()  # our parent is the forkserver
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)
    if sweep_pid is not None:
        _watch_sweep(sweep_pid)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        import torch

        torch.set_num_threads(1)
        fn = run_pretrain_unit if kind == "pretrain" else run_train_unit
        try:
            fn(*args)
        except BaseException as e:  # noqa: BLE001 - reported through the exit code and the log
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
            os._exit(3 if isinstance(e, ConfigError) else 1)


# ---------------------------------------------------------------------- backends
def _units(sw: Sweep, datasets: dict[str, str]) -> tuple[list, list]:
    """(pretraining units, training units) as (key, kind, args, log path) tuples, done ones excluded."""
    off = bool(sw.options.get("offline_eval", False))
    pre, seen = [], set()
    for t in sw.trials:
        if t.asm_id and t.asm_id not in seen and asm_state(Path(t.train["asm"])) != "done":
            seen.add(t.asm_id)
            d = t.train["asm"]
            log = str(Path(d).parent / (Path(d).name + ".log"))
            pre.append((t.asm_id, "pretrain", (d, datasets[t.id], t.asm, 1), log))
    train = []
    # Seed-major order: a sweep cut short still holds complete method comparisons on fewer seeds.
    for t in sorted(sw.trials, key=lambda t: t.train.get("seed", 0)):
        if trial_state(t) != "done":
            kw = {k: v for k, v in t.train.items()}
            train.append((t.id, "train", (kw, datasets[t.id], off), t.train["out"] + ".log"))
    return pre, train


def make_datasets(sw: Sweep, progress: bool = True) -> dict[str, str]:
    """Each distinct dataset once (from the cache when it exists); trial id -> dataset path."""
    from spinrl.experiments.datasets import DataMakeConfig, cached_dataset

    paths: dict[str, str] = {}
    made: dict[str, str] = {}
    for t in sw.trials:
        key = json.dumps(t.data, sort_keys=True)
        if key not in made:
            cfg = DataMakeConfig(**t.data, progress=progress)
            made[key] = str(cached_dataset(cfg, progress=progress))
        paths[t.id] = made[key]
    return paths


def run_local(units: list, workers: int, desc: str, progress: bool = True) -> dict[str, int]:
    """Run units in at most ``workers`` child processes, one per unit.

    Children are forked from a forkserver that has imported torch and spinrl once (fast to start, and
    safe: the server never ran torch ops or threads); each child starts a clean unit.
    """
    import multiprocessing as mp

    from spinrl.utils.progress import progress_bar

    if not units:
        return {}
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["torch", "spinrl.training.trainer", "spinrl.training.pretrain", "spinrl.experiments.sweep"]
    )
    import signal

    pending = list(units)
    running: dict[str, Any] = {}
    codes: dict[str, int] = {}
    bar = progress_bar(total=len(units), desc=desc, unit="run", disable=None if progress else True)
    try:  # `kill`: stop the children as Ctrl-C does (only the main thread may set handlers)
        old_term = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    except ValueError:
        old_term = None
    try:
        while pending or running:
            while pending and len(running) < workers:
                key, kind, args, log = pending.pop(0)
                p = ctx.Process(target=_unit_entry, args=(kind, args, log, os.getpid()), daemon=False)
                p.start()
                running[key] = (p, log)
            time.sleep(0.2)
            for key in list(running):
                p, log = running[key]
                if p.exitcode is not None:
                    codes[key] = p.exitcode
                    del running[key]
                    bar.update(1)
                    if p.exitcode != 0:
                        print(f"spinrl sweep: {key} failed (exit {p.exitcode}); see {log}", file=sys.stderr, flush=True)
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        for p, _ in running.values():  # Ctrl-C or kill: stop our children (they resume on the next run)
            p.terminate()
        bar.close()
    return codes


def run_ray(
    units: list, sw: Sweep, desc: str, num_cpus: int | None = None, address: str | None = None
) -> dict[str, int]:
    """The same units through Ray Tune, one Tune trial per unit with per-trial resources.

    ``address`` joins a running cluster (``ray start --head``) instead of starting one in this process; the sweep
    directory must then be on a filesystem every node sees, since trials write their run directories there.
    """
    try:
        import ray
        from ray import tune
    except ImportError:
        from spinrl.errors import MissingExtraError

        raise MissingExtraError("ray[tune]", "ray") from None
    if not units:
        return {}
    cpus = float(sw.options.get("cpus_per_trial", 1))
    gpus = float(sw.options.get("gpus_per_trial", 0))
    if not ray.is_initialized():
        ray.init(
            address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False
        )
    by_key = {u[0]: u for u in units}

    def trainable(config: dict) -> dict:
        key, kind, args, log = by_key[config["unit"]]
        import torch

        torch.set_num_threads(max(1, int(cpus)))
        args = list(args)
        if kind == "pretrain":
            args[3] = max(1, int(cpus))
            if gpus > 0:
                args.append("cuda")
        else:
            args[0] = {**args[0], "threads": max(1, int(cpus)), **({"device": "cuda"} if gpus > 0 else {})}
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        fn = run_pretrain_unit if kind == "pretrain" else run_train_unit
        with open(log, "a") as f:
            import contextlib

            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                status = fn(*args)
        return {"status": status}

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cpus, "gpu": gpus}),
        param_space={"unit": tune.grid_search(list(by_key))},
        run_config=tune.RunConfig(
            name=f"{sw.name}-{desc}", storage_path=str((sw.out / "ray_results").resolve()), verbose=0
        ),
    )
    results = tuner.fit()
    codes = {}
    for r in results:
        key = r.config["unit"] if r.config else None
        if key is not None:
            codes[key] = 0 if r.error is None else 1
            if r.error is not None:
                print(f"spinrl sweep: {key} failed: {str(r.error).splitlines()[0][:200]}", file=sys.stderr)
    return codes


@dataclasses.dataclass
class SweepOptions:
    """Run every trial of SPEC (see benchmarks/smoke.toml); rerunning skips finished runs and resumes
    interrupted ones.

    ``sweep(SweepOptions("benchmarks/smoke.toml", "sw"))`` is ``spinrl sweep benchmarks/smoke.toml --out sw``.
    """

    spec: str
    """sweep spec (TOML)"""
    out: str
    """sweep directory: runs/, asm/, sweep.json"""
    backend: typing.Literal["local", "ray"] = "local"
    """local = a process pool on this machine; ray = Ray Tune with per-trial resources (extra: ray)"""
    workers: int | None = None
    """local: concurrent runs (default: sweep.workers or the cores)"""
    only: list[str] | None = dataclasses.field(default=None, metadata={"action": "append", "metavar": "KEY=V1,V2"})
    """run only trials whose KEY is one of the values (repeatable), e.g. --only actor=factored,spin"""
    dry_run: bool = False
    """list the trials and their state, run nothing"""
    ray_num_cpus: int | None = None
    """ray: CPUs of a local Ray started by the sweep"""
    ray_address: str | None = None
    """ray: join a running cluster (e.g. 'auto' or HOST:6379 after `ray start --head`) instead of starting one;
    --out must be on a filesystem every node sees"""
    progress: bool = True
    """progress bar on stderr"""


def sweep(
    spec_path: str | os.PathLike | SweepOptions,
    out: str | os.PathLike | None = None,
    backend: str = "local",
    workers: int | None = None,
    progress: bool = True,
    dry_run: bool = False,
    ray_num_cpus: int | None = None,
    only: list[str] | None = None,
    ray_address: str | None = None,
) -> dict:
    """Run (or finish) every trial of a spec; returns counts and the failed units.

    Takes a :class:`SweepOptions` (what ``spinrl sweep`` builds from its flags) or the same names as arguments.

    Raises:
        ConfigError: bad spec (one line naming the key) or unknown backend.
    """
    if isinstance(spec_path, SweepOptions):
        o = spec_path
        return sweep(
            o.spec,
            o.out,
            backend=o.backend,
            workers=o.workers,
            progress=o.progress,
            dry_run=o.dry_run,
            ray_num_cpus=o.ray_num_cpus,
            only=o.only,
            ray_address=o.ray_address,
        )
    if out is None:
        raise ConfigError("sweep needs an output directory (--out)")
    if backend not in ("local", "ray"):
        raise ConfigError(f"--backend {backend!r} is unknown; choose local or ray")
    if workers is not None and workers <= 0:
        raise ConfigError(f"--workers must be a positive integer, got {workers}")
    if ray_address is not None and backend != "ray":
        raise ConfigError(f"--ray-address is for --backend ray (got --backend {backend}); add --backend ray")
    if ray_address is not None and ray_num_cpus is not None:
        raise ConfigError(
            "--ray-num-cpus sizes a Ray the sweep starts itself; with --ray-address the cluster's own "
            "CPUs are used: drop --ray-num-cpus"
        )
    sw = expand(load_spec(spec_path), out, str(spec_path), only=parse_only(only))
    workers = workers or int(sw.options.get("workers", 0)) or (os.cpu_count() or 1)
    states = [trial_state(t) for t in sw.trials]
    summary: dict[str, Any] = {
        "trials": len(sw.trials),
        "done_before": states.count("done"),
        "partial_before": states.count("partial"),
    }
    print(
        f"spinrl sweep {sw.name}: {len(sw.trials)} trials ({summary['done_before']} finished, "
        f"{summary['partial_before']} to resume), backend "
        f"{backend}" + (f", {workers} workers" if backend == "local" else ""),
        flush=True,
    )
    if dry_run:
        for t, s in zip(sw.trials, states):
            print(f"  [{s}] {t.id}")
        return summary
    Path(out).mkdir(parents=True, exist_ok=True)
    from spinrl.utils.checkpoint import write_text_atomic

    write_text_atomic(
        Path(out) / "sweep.json",
        json.dumps(
            {
                "name": sw.name,
                "spec": str(spec_path),
                "spec_text": Path(spec_path).read_text(),
                "backend": backend,
                "trials": [t.as_dict() for t in sw.trials],
            },
            indent=2,
        ),
    )
    t0 = time.time()
    datasets = make_datasets(sw, progress=progress)
    pre, train = _units(sw, datasets)
    failed: list[str] = []
    for units, desc in ((pre, "pretrain ASMs"), (train, "train")):
        if backend == "local":
            codes = run_local(units, workers, desc, progress)
        else:
            codes = run_ray(units, sw, desc.split()[0], num_cpus=ray_num_cpus, address=ray_address)
        failed += [k for k, c in codes.items() if c != 0]
        if desc.startswith("pretrain") and failed:
            break  # spin runs need their ASMs; report instead of cascading failures
    summary.update({"ran": len(pre) + len(train), "failed": failed, "wall_seconds": round(time.time() - t0, 1)})
    print(
        f"spinrl sweep {sw.name}: {len(train)} training runs and "
        f"{len(pre)} ASMs run in {summary['wall_seconds']:.0f}s; "
        f"{len(failed)} failed"
        + (f": {', '.join(failed)}" if failed else "")
        + f"; results under {Path(out) / 'runs'}",
        flush=True,
    )
    return summary
