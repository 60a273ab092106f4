"""The one training loop: any algorithm x any actor, evaluation, metrics, checkpoints, exact resume.

``fitter(cfg)`` (also ``train(cfg)``) is a generator of metric rows (d3rlpy's fitter): progress bars,
callbacks, early stopping, notebooks and sweeps all consume the same loop; ``fit(cfg)`` runs it to
completion. A checkpoint holds everything a resumed run needs to continue bit-identically: networks,
targets, optimizers, step, loss accumulators and every random stream (torch, numpy, python, the minibatch
sampler, the evaluation generator is re-seeded per evaluation) and the best evaluation so far with its weights.
Only the timing columns (wall_seconds, grad_steps_per_s) can differ between a resumed and an uninterrupted run.

Beside the last policy (policy.pt, policy.safetensors) a run with evaluation keeps the best one:
policy_best.pt and policy_best.safetensors hold the weights of the evaluation with the highest mean return
(the first such step on a tie), and best.json names its step and scores (also in the policy's meta["best"]).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Generator, Iterator

import numpy as np
import torch

from spinrl.algorithms import ALGORITHMS, CONFIGS
from spinrl.algorithms.common import Batch, Nets, build_nets, polyak
from spinrl.data import OfflineDataset, load
from spinrl.errors import ConfigError, SpinError
from spinrl.evaluation.evaluate import evaluate_act, exact_evaluate, resolve_eval_mode
from spinrl.evaluation.policy import Policy, write_policy
from spinrl.models import ModelConfig, build_actor, fast
from spinrl.training.asm_dir import load_asm
from spinrl.training.config import TrainConfig
from spinrl.training.fitter import Fitter
from spinrl.training.runinfo import environment_info
from spinrl.utils import loggers, outdir
from spinrl.utils.checkpoint import (
    CHECKPOINT_SCHEMA,
    capture_rng,
    load_checkpoint,
    resolve_device,
    restore_rng,
    save_atomic,
    seed_everything,
)
from spinrl.utils.determinism import cuda_determinism, run_device_name
from spinrl.utils.hardware import bf16_warning, threads_warning
from spinrl.utils.jsonable import to_jsonable
from spinrl.utils.memory import keep_freed_memory
from spinrl.utils.optim import FusedAdam
from spinrl.utils.progress import progress_bar
from spinrl.utils.rundir import check_same, sha256_file, write_json, write_metrics_csv

EVAL_COLUMNS = ("eval_return_mean", "eval_return_std", "normalized_score", "normalized_std")
# Settings a resumed run must share with the original: anything that changes what is computed. The dataset and
# the ASM are compared by content (checksums in _identity), not by path; threads and device there too.
_FIXED = (
    "algo",
    "actor",
    "preset",
    "eval_every",
    "eval_episodes",
    "greedy",
    "eval_mode",
    "seed",
    "eval_num_envs",
    "checkpoint_every",
    "log_every",
    "batch_size",
    "lr",
    "gamma",
    "precision",
    "feature_cache_gb",
    "algo_kwargs",
    "model_kwargs",
    "env",
)
_ADDED = {"precision": "fp32", "eval_mode": "auto", "eval_num_envs": 16, "feature_cache_gb": 8.0, "env": None}
"""fields added after a run was made: the value such a run had"""
# spinrl's own files in a run directory (what --overwrite replaces; anything else there is kept)
BEST_FILES = ("policy_best.safetensors", "policy_best.pt", "best.json")
"""the best policy by evaluation, in the order they are written (best.json, naming its step, last)"""
_RUN_FILES = {
    "config.json",
    "metrics.csv",
    "policy.pt",
    "policy.safetensors",
    "checkpoints",
    *BEST_FILES,
    *loggers.LOGGER_FILES,
}


@dataclasses.dataclass
class EvalEnv:
    """Where a run evaluates: an env id with its options, or an env object (its episodes run one at a time)."""

    env_id: str
    """the id, or for an object its spec id (else its class name): records and messages"""
    kwargs: dict
    instance: Any = None
    """the ``gymnasium.Env`` given to ``fit(cfg, env=...)``, or None"""
    mode: str = "rollout"
    """rollout or exact (resolve_eval_mode)"""
    reference: dict | None = None
    """random/expert returns for the normalized score: the dataset's for its own env, the env's own otherwise"""

    def record(self) -> dict:
        """As config.json's ``eval_env`` (a resume must evaluate on the same env)."""
        return {"env_id": self.env_id, "env_kwargs": self.kwargs, "object": self.instance is not None}


def _where(record: dict | None) -> str:
    """An ``EvalEnv.record()`` in words, for messages."""
    if not record:
        return "no env"
    kind = "an env object " if record.get("object") else ""
    options = f" {record['env_kwargs']}" if record.get("env_kwargs") else ""
    return f"{kind}{record.get('env_id')}{options}"


@dataclasses.dataclass
class Setup:
    """Everything the loop needs, built from a config (also used by benchmarks and tests)."""

    cfg: TrainConfig
    dataset: OfflineDataset
    nets: Nets
    algo: ModuleType
    """the algorithm's module (spinrl.algorithms.iql, ...): its UPDATES, TARGETS and loss functions"""
    algo_cfg: Any
    """the algorithm's config dataclass (IQLConfig, AWACConfig or BCQConfig)"""
    optimizers: dict
    model_cfg: ModelConfig
    device: torch.device
    asm_info: dict | None
    identity: dict | None = None
    determinism: dict | None = None
    """the CUDA determinism settings applied (None on the CPU)"""
    eval_env: EvalEnv | None = None
    """where evaluations run (None: no evaluation)"""


def build(
    cfg: TrainConfig, dataset: OfflineDataset | None = None, device: torch.device | None = None, env: Any = None
) -> Setup:
    """Load the dataset (and ASM), seed, and build networks and optimizers for ``cfg`` (on ``device``, default
    ``cfg.device`` resolved; on CUDA with the settings under which the seed fixes the result). Evaluation runs
    on ``env`` (a ``gymnasium.Env``), else ``cfg.env``, else the dataset's env; its spaces are checked here."""
    cfg.validate()
    device = device if device is not None else resolve_device(cfg.device)
    determinism = cuda_determinism(device)  # before any tensor reaches the GPU (cuBLAS reads its setting once)
    if cfg.precision == "bf16" and (msg := bf16_warning(device)):
        warnings.warn(msg, stacklevel=2)
    ds = dataset if dataset is not None else load(cfg.dataset)
    res = cfg.resolved()
    model_cfg = ModelConfig(**res["model"])
    algo = ALGORITHMS[cfg.algo]
    try:
        algo_cfg = CONFIGS[cfg.algo](gamma=cfg.gamma, **cfg.algo_kwargs)
    except TypeError as e:
        raise ConfigError(f"algo_kwargs: {e}; see spinrl.algorithms.{cfg.algo} for valid fields") from None
    eval_env = _eval_env(cfg, ds, env)  # before training: a mismatch must not wait for the first evaluation
    seed_everything(cfg.seed)
    asm, asm_info = None, None
    if cfg.actor in ("spin", "spin-cached"):
        assert cfg.asm is not None  # validate(): spin actors need --asm
        asm, asm_info = load_asm(cfg.asm, ds.signature)
        # The frozen part's sizes are the ASM's; the rest (heads, critics) follow the preset.
        am = asm_info["model"]
        model_cfg = dataclasses.replace(
            model_cfg,
            d_model=am["d_model"],
            n_heads=am["n_heads"],
            n_blocks=am["n_blocks"],
            n_state_tokens=am["n_state_tokens"],
        )
    elif cfg.asm:
        raise ConfigError(f"--asm is only used by --actor spin or spin-cached, not --actor {cfg.actor}; drop --asm")
    actor = build_actor(cfg.actor, ds.observation_dim, ds.nvec, model_cfg, asm=asm).to(device)
    nets = build_nets(actor, ds.observation_dim, ds.nvec, model_cfg, algo.UPDATES, algo.TARGETS)
    lr = res["lr"]
    optimizers = {}
    for name in algo.UPDATES:
        net = getattr(nets, name)
        params = [p for p in net.parameters() if p.requires_grad]
        optimizers[name] = FusedAdam(params, lr=lr)  # one kernel for all tensors: ~7% of a small-net step
    return Setup(
        cfg,
        ds,
        nets,
        algo,
        algo_cfg,
        optimizers,
        model_cfg,
        device,
        asm_info,
        determinism=determinism,
        eval_env=eval_env,
    )


def run_device(cfg: TrainConfig) -> torch.device:
    """``cfg.device`` as a torch device. ``auto`` is CUDA when available, else the CPU; a resumed run with
    ``auto`` keeps the device its config.json records (runs made before ``auto`` record ``cpu``), since another
    device ends bit-identity and the resume would be refused."""
    return resolve_device(run_device_name(cfg.device, cfg.out, cfg.resume))


def _eval_env(cfg: TrainConfig, ds: OfflineDataset, env: Any = None) -> EvalEnv | None:
    """Where the run evaluates (None without evaluation), checked against the dataset: the env object, else
    ``cfg.env``, else the dataset's env (with the dataset's options when it is the dataset's own env)."""
    from spinrl import envs

    if cfg.eval_every == 0 or (env is None and cfg.env is None and ds.env_id is None):
        return None
    if env is not None:
        if cfg.eval_mode == "exact":
            raise ConfigError(
                "--eval-mode exact needs an env id with a known model (sepsis), not an env object; use rollout or auto"
            )
        vec = envs.wrap(env)  # MultiDiscrete actions and Box observations, or one line saying what is wrong
        target = EvalEnv(getattr(getattr(env, "spec", None), "id", None) or type(env).__name__, {}, instance=env)
        _check_spaces(ds, vec, target, "pass the env the data was collected in, or train with --eval-every 0")
        return target
    env_id = cfg.env or ds.env_id
    assert env_id is not None  # neither names an env: returned None above
    own = env_id == ds.env_id
    kwargs = dict(ds.env_kwargs) if own else {}
    try:
        vec = envs.make_vector(env_id, 1, **kwargs)
    except SpinError as e:  # no simulator here for the env id (same error type, the way out added)
        e.args = (f"{e}; to train without a simulator, pass --eval-every 0 (eval_every=0)",)
        raise
    try:
        target = EvalEnv(env_id, kwargs, mode=resolve_eval_mode(cfg.eval_mode, env_id, kwargs))  # exact w/o model fails
        _check_spaces(
            ds,
            vec,
            target,
            "fix the dataset's env_id/env_kwargs or train with --eval-every 0"
            if own
            else "pass the env the data was collected in (--env), or train with --eval-every 0",
        )
    finally:
        vec.close()
    if own:
        target.reference = ds.meta.get("reference")
    else:
        ref = envs.reference_scores(env_id, **kwargs)
        target.reference = None if ref is None else {"random": ref.random, "expert": ref.expert, "source": ref.source}
    return target


def _check_spaces(ds: OfflineDataset, vec, target: EvalEnv, fix: str) -> None:
    """Fail before training, not at the first evaluation, if the data does not fit the env (one line each)."""
    name = f"{target.env_id}{f' {target.kwargs}' if target.kwargs else ''}"
    if int(vec.observation_dim) != ds.observation_dim:
        raise ConfigError(
            f"dataset observations have {ds.observation_dim} features but {name} produces {vec.observation_dim}; {fix}"
        )
    if [int(m) for m in vec.nvec] != list(ds.nvec):
        raise ConfigError(
            f"dataset nvec {list(ds.nvec)} differs from {target.env_id}'s action space "
            f"{[int(m) for m in vec.nvec]}; {fix}"
        )


def gradient_step(s: Setup, batch: Batch) -> dict[str, torch.Tensor]:
    """One update of every network the algorithm trains, in its order, then the Polyak targets."""
    info: dict[str, torch.Tensor] = {}
    bf16 = s.cfg.precision == "bf16"
    shared: dict = {}  # values one loss computes and a later one reuses (IQL: the target critic's min Q)
    for name in s.algo.UPDATES:
        with torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, i = getattr(s.algo, f"{name}_loss")(s.nets, batch, s.algo_cfg, shared=shared)
        opt = s.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        info.update(i)
    for name in s.algo.TARGETS:
        polyak(getattr(s.nets, f"{name}_target"), getattr(s.nets, name), s.algo_cfg.polyak)
    return info


def _state_dicts(s: Setup) -> dict:
    nets = {
        f.name: getattr(s.nets, f.name).state_dict()
        for f in dataclasses.fields(s.nets)
        if getattr(s.nets, f.name) is not None
    }
    return {"nets": nets, "optimizers": {k: o.state_dict() for k, o in s.optimizers.items()}}


def _load_state_dicts(s: Setup, ck: dict) -> None:
    for name, sd in ck["nets"].items():
        getattr(s.nets, name).load_state_dict(sd)
    for name, sd in ck["optimizers"].items():
        s.optimizers[name].load_state_dict(sd)
        fast.upgrade_in_major_moments(s.optimizers[name])  # pre-out-major critic checkpoints


def make_policy(s: Setup) -> Policy:
    meta = {
        "algo": s.cfg.algo,
        "actor": s.cfg.actor,
        "obs_dim": s.dataset.observation_dim,
        "nvec": list(s.dataset.nvec),
        "model": dataclasses.asdict(s.model_cfg),
        "signature": s.dataset.signature,
        "reference": s.dataset.meta.get("reference"),
        "preset": s.cfg.preset,
    }
    return Policy(s.nets, s.cfg.algo, s.algo_cfg, meta, s.device)


def fitter(cfg: TrainConfig, env: Any = None) -> Iterator[dict]:
    """Train, yielding one metrics row every ``log_every`` steps and at every evaluation (d3rlpy's ``fitter``).

    ``env``: where to evaluate instead of the dataset's environment: an env id (the same as ``cfg.env``) or a
    ``gymnasium.Env`` instance with MultiDiscrete actions (its episodes run one at a time; not recorded in the
    config, so a resume must pass it again), checked against the dataset's spaces before training.

    The run directory is complete (config.json, metrics.csv, checkpoints/last.pt, policy.pt) when the
    generator is exhausted; stopping early leaves a resumable run. One process writes it at a time (a lock
    released when the generator ends). Nothing runs until it is iterated (a warning says so if it is dropped
    unstarted); ``fit(cfg)`` runs to completion.
    """
    cfg, env = _with_env(cfg, env)
    return Fitter(_rows(cfg, env), "spinrl.fitter(cfg)", "spinrl.fit(cfg)")


def train(cfg: TrainConfig, env: Any = None) -> Iterator[dict]:
    """``fitter(cfg)`` under its first name: a generator of metric rows (kept so ``for row in train(cfg)`` works)."""
    cfg, env = _with_env(cfg, env)
    return Fitter(_rows(cfg, env), "spinrl.train(cfg)", "spinrl.fit(cfg)")


def _with_env(cfg: TrainConfig, env: Any) -> tuple[TrainConfig, Any]:
    """An env id goes into the config (recorded, checked on resume); an env object is passed along."""
    if isinstance(env, str):
        return dataclasses.replace(cfg, env=env), None
    return cfg, env


def fit(cfg: TrainConfig, env: Any = None) -> dict:
    """Train to completion (d3rlpy's ``fit``) and return a summary; ``env`` as in :func:`fitter`.

    Returns:
        ``out`` (the run directory), ``policy`` (its policy.pt), ``steps``, ``rows`` (every metrics row yielded),
        ``last`` (the last row), ``final_eval`` (the last row with an evaluation, or None), ``best`` (best.json:
        the step and scores of the best evaluation, or None without evaluation) and ``policy_best`` (its
        policy_best.pt, or None).

    Raises:
        SpinError: a bad config, dataset, ASM or resume, or a diverged run (one line each).
    """
    rows = list(fitter(cfg, env))
    evals = [r for r in rows if r.get("eval_return_mean") is not None]
    out = Path(cfg.out)
    best = outdir._json(out / "best.json")  # None without evaluation
    return {
        "out": out,
        "policy": out / "policy.pt",
        "steps": rows[-1]["step"] if rows else 0,
        "rows": rows,
        "last": rows[-1] if rows else None,
        "final_eval": evals[-1] if evals else None,
        "best": best,
        "policy_best": out / "policy_best.pt" if best else None,
    }


def _rows(cfg: TrainConfig, env: Any = None) -> Generator[dict, None, None]:
    held: list = []
    try:
        yield from _train(cfg, held, env)
    finally:
        for h in reversed(held):  # the loggers, then the run directory's lock
            h.close() if isinstance(h, loggers.RunLogger) else h.release()


def _identity(s: Setup) -> dict:
    """What a resume must find unchanged beyond the flags: the data and ASM by content, threads, device."""
    asm = None
    if s.cfg.asm and s.cfg.actor in ("spin", "spin-cached"):
        asm = sha256_file(Path(s.cfg.asm) / "asm.pt")
    return {
        "dataset_checksum": s.dataset.meta.get("checksum"),
        "array_checksums": s.dataset.meta.get("checksums"),
        "asm_checksum": asm,
        "threads": torch.get_num_threads(),
        "device": str(s.device),
    }


def _check_resume(s: Setup, ck: dict, recorded: dict, out: Path) -> None:
    """Refuse a resume that would not continue the same computation (one line naming what changed)."""
    saved, cfg = ck["config"], s.cfg
    check_same(saved, to_jsonable(cfg), _FIXED, _ADDED)
    was, ident = ck.get("identity") or {}, s.identity or {}
    data_was = was.get("dataset_checksum") or (recorded.get("dataset") or {}).get("checksum")
    arrays_was = was.get("array_checksums")
    if (data_was and data_was != ident["dataset_checksum"]) or (arrays_was and arrays_was != ident["array_checksums"]):
        raise ConfigError(
            f"--resume: dataset {cfg.dataset} (checksum "
            f"{str(ident['dataset_checksum'])[:12]}) is not the "
            f"data the run in {out} was trained on ({str(data_was)[:12]}); "
            "pass that dataset or choose another --out"
        )
    if was.get("asm_checksum") and was["asm_checksum"] != ident["asm_checksum"]:
        raise ConfigError(
            f"--resume: --asm {cfg.asm} is not the ASM the "
            f"run in {out} was trained with (asm.pt checksum "
            "differs); pass that ASM or choose another --out"
        )
    if saved.get("asm") and not was and Path(saved["asm"]).resolve() != Path(cfg.asm or "").resolve():
        raise ConfigError(f"--resume with asm={cfg.asm!r} but the run used {saved['asm']!r}; use the same ASM")
    threads_was = was.get("threads", saved.get("threads"))
    if threads_was is not None and threads_was != (ident["threads"] if "threads" in was else cfg.threads):
        raise ConfigError(
            f"--resume with {ident['threads']} threads but the run used {threads_was}: a changed thread "
            f"count ends bit-identity; pass --threads {threads_was}"
        )
    if was.get("device") and was["device"] != ident["device"]:
        raise ConfigError(
            f"--resume on device {ident['device']} but the run used {was['device']}: another device ends "
            f"bit-identity; pass --device {was['device']}"
        )
    env_was, env_now = recorded.get("eval_env"), s.eval_env.record() if s.eval_env else None
    if "eval_env" in recorded and env_was != env_now:
        raise ConfigError(
            f"--resume evaluating on {_where(env_now)} but the run evaluated on {_where(env_was)}: its "
            "scores and best policy would mix two environments; pass the same --env (an env object: "
            "fit(cfg, env=...) again)"
        )
    if cfg.steps < ck["step"]:
        raise ConfigError(
            f"--steps {cfg.steps} is below the checkpoint's step {ck['step']}; pass --steps {ck['step']} or more"
        )


def _train(cfg: TrainConfig, held: list, env: Any = None) -> Iterator[dict]:
    cfg.validate()  # before the thread count reaches torch: 100000 threads crash later torch calls in this process
    assert cfg.threads != "auto"  # validate() resolved it to a count
    keep_freed_memory()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    loggers.require(cfg.logger_names)  # before anything is written: a missing extra leaves no half-made run dir
    s = build(cfg, device=run_device(cfg), env=env)
    s.identity = _identity(s)
    out = Path(cfg.out)
    ckpt_path = out / "checkpoints" / "last.pt"
    outdir.check_out(out, "run", cfg.overwrite)
    if not cfg.resume and ckpt_path.exists() and not cfg.overwrite:
        raise ConfigError(
            f"--out {out} already holds a run; pass --resume to continue it, --overwrite to replace it, "
            "or choose another --out"
        )
    if cfg.resume and (out / "policy.pt").exists() and not ckpt_path.exists():
        raise ConfigError(f"--out {out} holds a finished run without checkpoints; choose another --out")
    ds = s.dataset
    do_eval = s.eval_env is not None
    reference = s.eval_env.reference if s.eval_env is not None else None
    rng = np.random.default_rng(cfg.seed)
    step, elapsed, rows = 0, 0.0, []
    best: dict | None = None  # the best evaluation so far: step, scores and the policy file's content
    columns: list[str] | None = None
    acc: dict[str, torch.Tensor] = {}
    acc_n = 0
    asm_seconds = float(s.asm_info["wall_seconds"]) if s.asm_info else 0.0
    config_json = {
        "config": to_jsonable(cfg),
        "resolved": {
            **cfg.resolved(),
            "model": dataclasses.asdict(s.model_cfg),
            "algo": dataclasses.asdict(s.algo_cfg),
            "device": str(s.device),
            **({"cuda_determinism": s.determinism} if s.determinism else {}),
        },
        "dataset": {
            "path": cfg.dataset,
            "checksum": ds.meta.get("checksum"),
            **ds.signature,
            "level": ds.meta.get("level"),
        },
        "asm_wall_seconds": asm_seconds,
        "asm_chosen_epoch": s.asm_info.get("chosen_epoch") if s.asm_info else None,
        "eval_env": s.eval_env.record() if s.eval_env is not None else None,
        **environment_info(s.device),
    }
    if cfg.resume and ckpt_path.exists():
        held.append(outdir.Lock(out / outdir.LOCK, f"--out {out}").acquire())
        ck = load_checkpoint(ckpt_path, "training checkpoint", kind="train")
        recorded = outdir._json(out / "config.json") or {}
        _check_resume(s, ck, recorded if isinstance(recorded, dict) else {}, out)
        if isinstance(recorded, dict) and recorded.get("dataset"):
            config_json["dataset"] = recorded["dataset"]  # the record of the data the run was made on stays
        outdir.mark(out, "run")
        _load_state_dicts(s, ck)
        restore_rng(ck["rng"], rng)
        step, elapsed, rows, columns = ck["step"], ck["elapsed"], list(ck["rows"]), ck["columns"]
        best = ck.get("best")  # None in checkpoints written before the best policy was kept
        acc = {k: v.to(s.device) for k, v in ck["acc"].items()}
        acc_n = ck["acc_n"]
        if columns:
            write_metrics_csv(out / "metrics.csv", rows, columns)
    else:
        replace = cfg.overwrite and outdir.read_kind(out) == "run"
        held.append(outdir.hold(out, "run"))
        if replace:  # a replaced run's leftovers go; files spinrl did not write stay
            outdir.remove_own(out, _RUN_FILES - {"config.json", "metrics.csv"})
    write_json(out / "config.json", config_json)
    _sync_best(out, best)
    log = loggers.RunLogger(out, cfg.logger_names, job="train", config=config_json["config"])
    held.append(log)

    print(
        f"spinrl train: {cfg.algo}/{cfg.actor} preset={cfg.preset} d_model={s.model_cfg.d_model} "
        f"blocks={s.model_cfg.n_blocks} heads={s.model_cfg.n_heads} batch={cfg.resolved()['batch_size']} "
        f"lr={cfg.resolved()['lr']} steps={cfg.steps} device={s.device}"
        + (f" (resuming at step {step})" if step else ""),
        flush=True,
    )
    if msg := threads_warning(cfg.threads, s.device):  # once every input has been checked
        warnings.warn(msg, stacklevel=2)
    if not do_eval:
        why = "--eval-every 0" if cfg.eval_every == 0 else "the dataset names no environment; pass --env ID to evaluate"
        print(f"note: no evaluation ({why}), so no policy_best.pt is kept; policy.pt is the last policy", flush=True)
    bar = progress_bar(
        total=cfg.steps, desc=f"{cfg.algo}/{cfg.actor}", unit="step", disable=None if cfg.progress else True
    )
    bar.update(step)
    last_eval = next((r for r in reversed(rows) if r.get("eval_return_mean") is not None), None)
    for n in s.nets.__dict__.values():
        if isinstance(n, torch.nn.Module):
            n.train()
    interval_t = 0.0
    interval_steps = 0
    batch_size = cfg.resolved()["batch_size"]
    features = _feature_source(s)
    bad_step = torch.zeros((), dtype=torch.long, device=s.device)  # first step with a non-finite loss (0: none)
    good_step = step  # the step of the last checkpoint written with finite losses
    while step < cfg.steps:
        t0 = time.perf_counter()
        idx = ds.sample_indices(batch_size, rng)
        batch = Batch(*ds.batch_at(idx, device=s.device))
        if features is not None:
            features(batch, idx)
        info = gradient_step(s, batch)
        step += 1
        scalars = [v.detach() for v in info.values() if v.dim() == 0]
        for k, v in info.items():
            if v.dim() == 0:
                acc[k] = acc.get(k, torch.zeros((), device=s.device)) + v
        if scalars:  # on the device, no sync: read at the next row or checkpoint
            bad_step = torch.where(torch.isfinite(torch.stack(scalars)).all() | (bad_step > 0), bad_step, step)
        acc_n += 1
        dt = time.perf_counter() - t0
        elapsed += dt
        interval_t += dt
        interval_steps += 1
        bar.update(1)
        is_eval = do_eval and (step % cfg.eval_every == 0 or step == cfg.steps)
        is_log = step % cfg.log_every == 0 or is_eval or step == cfg.steps
        if not is_log:
            if step % cfg.ckpt_every == 0:
                _stop_if_diverged(bad_step, good_step, acc, ckpt_path)
                _checkpoint(s, ckpt_path, step, elapsed, rows, columns, acc, acc_n, rng, best)
                good_step = step
            continue
        _stop_if_diverged(bad_step, good_step, acc, ckpt_path)
        row: dict[str, Any] = {
            "step": step,
            "wall_seconds": None,
            "grad_steps_per_s": round(interval_steps / max(interval_t, 1e-9), 2),
        }
        row.update({k: float(v) / acc_n for k, v in sorted(acc.items())})
        acc, acc_n, interval_t, interval_steps = {}, 0, 0.0, 0
        if is_eval:
            t1 = time.perf_counter()
            res = _evaluate(s, step, reference)
            if best is None or res.mean > best["eval_return_mean"]:  # strictly: the first of equal scores stays
                best = _best(s, step, res)
                _save_best(out, best)
            elapsed += time.perf_counter() - t1
            row.update(
                {
                    "eval_return_mean": res.mean,
                    "eval_return_std": res.std,
                    "normalized_score": res.normalized_mean,
                    "normalized_std": None if res.normalized is None else float(res.normalized.std()),
                    "eval_method": "exact" if res.exact else "rollout",
                }
            )  # in the yielded rows, not the CSV
            last_eval = row
        row["wall_seconds"] = round(elapsed, 3)
        if columns is None:
            first = ("step", "wall_seconds", "grad_steps_per_s")
            columns = [
                *first,
                *sorted(k for k in row if k not in (*first, "eval_method") and k not in EVAL_COLUMNS),
                *EVAL_COLUMNS,
            ]
        rows.append(row)
        log.log(rows, columns)  # metrics.csv, and the row to the optional loggers
        post: dict[str, str] = {k: f"{row[k]:.3g}" for k in ("critic_loss", "actor_loss") if k in row}
        if last_eval is not None:
            post["eval"] = f"{last_eval['eval_return_mean']:.1f}"
            if last_eval.get("normalized_score") is not None:
                post["norm"] = f"{last_eval['normalized_score']:.1f}"
        bar.set_postfix(post)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            _checkpoint(s, ckpt_path, step, elapsed, rows, columns, acc, acc_n, rng, best)
            good_step = step
        yield row
    bar.close()
    log.close()
    policy = make_policy(s)
    policy.save(out / "policy.safetensors")  # the same weights for sharing, loadable without pickle
    policy.save(out / "policy.pt")  # last: its presence marks the run finished


def _best(s: Setup, step: int, res) -> dict:
    """The best evaluation's record: its step and scores, and a CPU copy of the policy file's content (kept in
    checkpoints, so a resumed run ends with the same policy_best as an uninterrupted one)."""
    scores = {
        "step": step,
        "eval_return_mean": res.mean,
        "eval_return_std": res.std,
        "normalized_score": res.normalized_mean,
        "eval_method": "exact" if res.exact else "rollout",
    }
    policy = make_policy(s).to_dict()
    policy["meta"] = {**policy["meta"], "best": scores}
    for part in ("actor", "critic"):
        policy[part] = {k: v.detach().to("cpu", copy=True) for k, v in policy[part].items()}
    return {**scores, "policy": policy}


def _save_best(out: Path, best: dict) -> None:
    """policy_best.safetensors, policy_best.pt, then best.json (each atomic; best.json, naming the step, last)."""
    write_policy(best["policy"], out / "policy_best.safetensors")
    write_policy(best["policy"], out / "policy_best.pt")
    write_json(out / "best.json", {**{k: v for k, v in best.items() if k != "policy"}, "policy": "policy_best.pt"})


def _sync_best(out: Path, best: dict | None) -> None:
    """Make the best files match the run's state at its start: a run killed after a new best but before its next
    checkpoint left files from a step the resume has not reached (the resume writes them again if that step
    still wins); a fresh run starts without any."""
    if best is not None:
        _save_best(out, best)
        return
    for name in BEST_FILES:
        (out / name).unlink(missing_ok=True)


def _stop_if_diverged(bad_step: torch.Tensor, good_step: int, acc: dict, ckpt_path: Path) -> None:
    """Stop at the first non-finite loss: NaN weights would be checkpointed, evaluated and reported as a result."""
    bad = int(bad_step)
    if bad:
        name = next((k for k, v in acc.items() if not torch.isfinite(v)), "a loss")
        kept = (
            (f"the last good checkpoint (step {good_step}) is kept in {ckpt_path}")
            if good_step
            else "no checkpoint was written"
        )
        raise SpinError(f"training diverged: {name} is not finite at step {bad}; {kept}; lower --lr or check the data")


def _feature_source(s: Setup):
    """For spin-cached: a function that hands each batch's cached (or recomputed) features to the actor."""
    if s.cfg.actor != "spin-cached":
        return None
    from spinrl.models.actors import CachedFeatureActor
    from spinrl.training.feature_cache import build_feature_cache, cache_bytes, cache_path

    actor = s.nets.actor
    assert isinstance(actor, CachedFeatureActor)  # build_actor's spin-cached actor
    assert s.cfg.asm is not None  # validate(): spin actors need --asm
    if s.asm_info and s.asm_info.get("masking", "bert") != "variable":
        print(
            "note: this ASM was pretrained with --masking bert; spin-cached reads its all-[MASK] input, which "
            "only --masking variable trains on",
            flush=True,
        )
    need = cache_bytes(s.dataset, actor.cfg.d_model)
    if need > s.cfg.feature_cache_gb * 1e9:
        print(
            f"note: feature cache would take {need / 1e9:.1f} GB > --feature-cache-gb {s.cfg.feature_cache_gb}; "
            "computing features per batch instead",
            flush=True,
        )

        def recompute(batch: Batch, idx: np.ndarray) -> None:
            actor.provide_features(
                [(batch.obs, actor.features(batch.obs)), (batch.next_obs, actor.features(batch.next_obs))]
            )

        return recompute
    cache = build_feature_cache(
        actor, s.dataset, cache_path(s.cfg.dataset, s.dataset, s.cfg.asm), s.device, progress=s.cfg.progress
    )

    def lookup(batch: Batch, idx: np.ndarray) -> None:
        rows = s.dataset.observation_rows(idx)
        f = torch.from_numpy(np.asarray(cache[rows], dtype=np.float32)).to(s.device)
        f2 = torch.from_numpy(np.asarray(cache[rows + 1], dtype=np.float32)).to(s.device)
        actor.provide_features([(batch.obs, f), (batch.next_obs, f2)])

    return lookup


def _evaluate(s: Setup, step: int, reference: dict | None):
    """Evaluation with its own generator seeded from (seed, step): it never touches training RNG."""
    policy = make_policy(s)
    gen = torch.Generator(device=s.device)
    gen.manual_seed(s.cfg.seed * 1_000_003 + step)
    torch_state = torch.get_rng_state()
    e = s.eval_env
    assert e is not None  # called only when the run evaluates

    def act(obs: np.ndarray) -> np.ndarray:
        return policy.act(obs, deterministic=s.cfg.greedy, generator=gen)

    try:
        if e.mode == "exact":
            return exact_evaluate(policy, e.env_id, e.kwargs, s.cfg.greedy, reference)
        return evaluate_act(
            act,
            e.env_id if e.instance is None else e.instance,
            e.kwargs,
            s.cfg.eval_episodes,
            s.cfg.seed,
            s.cfg.eval_num_envs,
            reference,
        )
    finally:
        torch.set_rng_state(torch_state)


def _checkpoint(
    s: Setup,
    path: Path,
    step: int,
    elapsed: float,
    rows: list,
    columns: list | None,
    acc: dict,
    acc_n: int,
    rng: np.random.Generator,
    best: dict | None = None,
) -> None:
    save_atomic(
        {
            "schema": CHECKPOINT_SCHEMA,
            "kind": "train",
            "config": to_jsonable(s.cfg),
            "step": step,
            "elapsed": elapsed,
            "rows": rows,
            "columns": columns,
            "acc": {k: v.detach().cpu() for k, v in acc.items()},
            "acc_n": acc_n,
            "rng": capture_rng(rng),
            "identity": s.identity,
            "best": best,
            **_state_dicts(s),
        },
        path,
    )


def run(cfg: TrainConfig, env: Any = None) -> Path:
    """Train to completion; returns the run directory."""
    for _ in train(cfg, env):
        pass
    return Path(cfg.out)
