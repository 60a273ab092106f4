"""ASM pretraining by masked action modelling, with a budget, a plateau stop and a structure check.

The paper trains a fixed 100 epochs and gives no stopping rule, although too short hurts and too long
wastes SPIN's speed advantage. We hold out whole episodes and measure the masked loss on them every
``steps_per_epoch`` gradient steps (a pass over the training data, at most 1,000 steps) with a fixed
corruption seed, so the points are comparable; we keep the best point's weights and stop on a plateau
(``patience`` validations without an improvement of ``min_delta``) or at the first budget reached
(validations, gradient steps, minutes). ``asm.json`` says which, and warns when a budget stopped a loss
that was still falling. At the end the chosen ASM's leave-one-out reconstruction on the held-out
episodes is compared with an independence baseline and the random initial ASM
(``spinrl.evaluation.structure``): that tells a user whether their data have structure SPIN can use.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Generator, Iterator

import numpy as np
import torch

from spinrl.algorithms.mam import MAMConfig, asm_loss
from spinrl.data import load
from spinrl.errors import ConfigError, MissingExtraError
from spinrl.evaluation.structure import marginal_modes, structure_diagnostics
from spinrl.models import ActionStructureModel, ModelConfig
from spinrl.training.config import PretrainConfig
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
    save_safetensors,
    seed_everything,
)
from spinrl.utils.determinism import cuda_determinism, run_device_name
from spinrl.utils.hardware import threads_warning
from spinrl.utils.jsonable import to_jsonable
from spinrl.utils.memory import keep_freed_memory
from spinrl.utils.optim import FusedAdam
from spinrl.utils.progress import progress_bar
from spinrl.utils.rundir import check_same, save_figure, write_json

# Settings that define the result; a resume with other values would silently mix two runs.
_FIXED = (
    "preset",
    "patience",
    "min_delta",
    "min_epochs",
    "steps_per_epoch",
    "batch_size",
    "lr",
    "grad_clip",
    "mask_prob",
    "masking",
    "val_fraction",
    "val_batches",
    "seed",
    "model_kwargs",
    "max_steps",
)


@dataclasses.dataclass
class _Dist:
    """Data-parallel context (torchrun): every rank draws the same global minibatch indices and trains on
    its slice; gradients are averaged with weights that make the update the single-process one."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def fitter_asm(cfg: PretrainConfig) -> Iterator[dict]:
    """Pretrain the ASM validation by validation, yielding each one's metrics row (``fitter`` for stage 1);
    the ASM directory is complete when the generator is exhausted. ``fit_asm(cfg)`` runs to completion."""
    return Fitter(_rows(cfg, None), "spinrl.fitter_asm(cfg)", "spinrl.fit_asm(cfg)")


def fit_asm(cfg: PretrainConfig) -> dict:
    """Pretrain the ASM to completion (``fit`` for stage 1) and return a summary.

    Returns:
        ``out`` (the ASM directory), ``rows`` (every validation's metrics) and ``asm`` (its asm.json: chosen
        step, stop reason, whether the loss was still falling, the structure diagnostics).
    """
    rows = list(fitter_asm(cfg))
    return {"out": Path(cfg.out), "rows": rows, "asm": json.loads((Path(cfg.out) / "asm.json").read_text())}


def pretrain_iter(cfg: PretrainConfig, _dist: _Dist | None = None) -> Iterator[dict]:
    """Pretrain validation by validation, yielding each one's metrics; the ASM directory is complete at the end.

    The directory's one-writer lock is released when the generator ends or is closed (not only at process
    exit: a Ray worker process outlives its task)."""
    return Fitter(_rows(cfg, _dist), "pretrain_iter(cfg)", "spinrl.fit_asm(cfg)")


def _rows(cfg: PretrainConfig, _dist: _Dist | None) -> Generator[dict, None, None]:
    held: list = []
    try:
        yield from _pretrain_iter(cfg, _dist, held)
    finally:
        for log in held:
            log.close()
        if (_dist or _Dist()).main and cfg.out:
            outdir.release(cfg.out)


def _pretrain_iter(cfg: PretrainConfig, _dist: _Dist | None, held: list) -> Iterator[dict]:
    cfg.validate()
    assert cfg.threads != "auto"  # validate() resolved it to a count
    dist = _dist or _Dist()
    names = loggers.parse_loggers(cfg.loggers) if dist.main else ()
    loggers.require(names)  # before anything is written
    keep_freed_memory()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(run_device_name(cfg.device, cfg.out, cfg.resume))  # a resume keeps the run's device
    if dist.world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    determinism = cuda_determinism(device)  # before any tensor reaches the GPU (cuBLAS reads its setting once)
    res = cfg.resolved()
    out = Path(cfg.out)
    ckpt_path = out / "checkpoints" / "last.pt"
    if dist.main:  # never write into a directory spinrl did not make (creates nothing)
        outdir.check_out(out, "asm", cfg.overwrite)
    if out.exists() and (out / "asm.json").exists() and not cfg.resume:
        raise ConfigError(f"--out {out} already holds a finished ASM; choose another --out or pass --resume")
    if out.exists() and ckpt_path.exists() and not cfg.resume:
        raise ConfigError(
            f"--out {out} holds an interrupted pretraining run; pass --resume to continue it or choose another --out"
        )
    if dist.world > 1:  # no rank may see another's first checkpoint as "an interrupted run"
        torch.distributed.barrier()

    ds = load(cfg.dataset)
    train_ds, val_ds = ds.split(cfg.val_fraction, seed=cfg.seed)
    model_cfg = ModelConfig(**res["model"])
    seed_everything(cfg.seed)
    asm = ActionStructureModel(ds.observation_dim, ds.nvec, model_cfg).to(device)
    init_state = {k: v.detach().clone() for k, v in asm.state_dict().items()}  # the random ASM (diagnostics)
    opt = FusedAdam(asm.parameters(), lr=res["lr"])
    mam = MAMConfig(mask_prob=cfg.mask_prob, variable=cfg.masking == "variable")
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed if dist.rank == 0 else cfg.seed + 1_000_003 * dist.rank)  # own corruption per rank
    B = res["batch_size"]
    if dist.world > 1 and B % dist.world:
        raise ConfigError(
            f"--batch-size {B} must be divisible by the {dist.world} processes (the global batch is split across them)"
        )
    steps_per_epoch = cfg.steps_per_epoch or min(1000, max(1, train_ds.num_transitions // B))
    max_steps = cfg.max_steps if cfg.max_steps is not None else float("inf")
    # Fixed validation minibatches and corruption: the curve measures the model, not the noise.
    val_rng = np.random.default_rng(cfg.seed + 10_007)
    val_idx = [val_rng.integers(0, val_ds.num_transitions, size=B) for _ in range(cfg.val_batches)]

    rows: list[dict] = []
    state: dict[str, Any] = {
        "epoch": 0,
        "step": 0,
        "best": float("inf"),
        "best_epoch": 0,
        "best_step": 0,
        "bad": 0,
        "elapsed": 0.0,
    }
    resolved = {**res, "device": str(device), **({"cuda_determinism": determinism} if determinism else {})}
    config_json = {"config": to_jsonable(cfg), "resolved": resolved, **environment_info(device)}
    if cfg.resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, "pretraining checkpoint", kind="asm_pretrain")
        saved = ck["config"]
        check_same(saved, to_jsonable(cfg), _FIXED)
        _check_same_data(ck, saved, cfg, ds)
        if saved.get("threads") != cfg.threads:
            raise ConfigError(
                f"--resume with --threads {cfg.threads} but the "
                f"run used {saved.get('threads')}: another thread "
                "count ends bit-identity with an uninterrupted "
                f"run; pass --threads {saved.get('threads')}"
            )
        if dist.main:
            outdir.hold(out, "asm")  # one writer (lock released at exit), marked as spinrl's ASM directory
        asm.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        restore_rng(ck["rng"], rng, gen)
        state = {**state, **ck["state"]}
        rows = list(ck["rows"])
    elif dist.main:
        outdir.hold(out, "asm")
        write_json(out / "config.json", config_json)
    if dist.main:
        log = loggers.RunLogger(out, names, job="pretrain", config=config_json["config"])
        held.append(log)
    if dist.main and (msg := threads_warning(cfg.threads, device)):  # once inputs are checked
        warnings.warn(msg, stacklevel=2)
    max_epochs = res["max_epochs"]
    max_seconds = cfg.max_minutes * 60 if cfg.max_minutes is not None else float("inf")
    # in gradient steps: a validation round can last minutes on a large dataset
    bar = progress_bar(
        total=int(min(max_steps, max_epochs * steps_per_epoch)),
        desc="pretrain ASM",
        unit="step",
        disable=None if cfg.progress and dist.main else True,
    )
    bar.update(state["step"])
    while True:
        stop_reason = _stop_reason(state, cfg, max_epochs, max_steps, max_seconds)
        if stop_reason:
            break
        n_steps = int(min(steps_per_epoch, max_steps - state["step"]))
        t0 = time.perf_counter()
        asm.train()
        loss_sum = torch.zeros((), device=device)
        for _ in range(n_steps):
            if dist.world == 1:
                s, a, _, _, _ = train_ds.sample(B, rng, device=device)
                loss, _ = asm_loss(asm, s, a, mam, gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
            else:
                loss = _distributed_backward(asm, opt, train_ds, B, rng, mam, gen, device, dist)
            torch.nn.utils.clip_grad_norm_(asm.parameters(), cfg.grad_clip)
            opt.step()
            loss_sum += loss.detach()
            bar.update(1)
        asm.eval()
        vgen = torch.Generator(device=device)
        vgen.manual_seed(cfg.seed + 20_011)
        v_loss, correct, count = 0.0, torch.zeros(len(ds.nvec)), torch.zeros(len(ds.nvec))
        with torch.no_grad():
            for idx in val_idx:
                s, a, _, _, _ = val_ds.batch_at(idx, device=device)
                loss, info = asm_loss(asm, s, a, mam, vgen)
                v_loss += float(loss)
                correct += info["masked_correct"].cpu()
                count += info["masked_count"].cpu()
        v_loss /= len(val_idx)
        acc_N = (correct / count.clamp(min=1)).tolist()
        state["epoch"] += 1
        state["step"] += n_steps
        state["elapsed"] += time.perf_counter() - t0
        improved = v_loss < state["best"] - cfg.min_delta
        if improved:
            state["best"], state["best_epoch"], state["best_step"] = v_loss, state["epoch"], state["step"]
            state["bad"] = 0
            if dist.main:
                save_atomic({"schema": CHECKPOINT_SCHEMA, "kind": "asm", "model": asm.state_dict()}, out / "asm.pt")
        else:
            state["bad"] += 1
        row = {
            "epoch": state["epoch"],
            "step": state["step"],
            "wall_seconds": round(state["elapsed"], 3),
            "train_loss": float(loss_sum) / n_steps,
            "val_loss": v_loss,
            "val_masked_acc": float(correct.sum() / count.sum().clamp(min=1)),
            "best": int(improved),
            **{f"val_acc_{i}": acc_N[i] for i in range(len(acc_N))},
        }
        rows.append(row)
        if not dist.main:
            yield row
            continue
        log.log(rows)  # metrics.csv, and the row to the optional loggers
        save_atomic(
            {
                "schema": CHECKPOINT_SCHEMA,
                "kind": "asm_pretrain",
                "config": to_jsonable(cfg),
                "model": asm.state_dict(),
                "optimizer": opt.state_dict(),
                "rng": capture_rng(rng, gen),
                "state": state,
                "rows": rows,
                "dataset_checksum": ds.meta.get("checksum"),
            },
            ckpt_path,
        )
        bar.set_postfix(
            train=f"{row['train_loss']:.3f}",
            val=f"{v_loss:.3f}",
            acc=f"{row['val_masked_acc']:.2f}",
            best=state["best_step"],
        )
        yield row
    bar.close()
    if not dist.main:
        return
    log.close()
    # still falling: the last validation was the best
    still_falling = stop_reason != "plateau" and state["bad"] == 0 and state["epoch"] > 0
    if state["epoch"] == 0:  # a zero budget: the random ASM itself (the paper's epoch-0 point)
        save_atomic({"schema": CHECKPOINT_SCHEMA, "kind": "asm", "model": asm.state_dict()}, out / "asm.pt")
    best = load_checkpoint(out / "asm.pt", "ASM", kind="asm")["model"]
    asm.load_state_dict(best)
    random_asm = ActionStructureModel(ds.observation_dim, ds.nvec, model_cfg).to(device)
    random_asm.load_state_dict(init_state)
    diag_batches = [val_ds.batch_at(idx, device=device)[:2] for idx in val_idx]
    diagnostics = structure_diagnostics(asm, random_asm, diag_batches, marginal_modes(train_ds.actions, ds.nvec))
    asm_info = {
        "signature": ds.signature,
        "dataset": {"path": str(cfg.dataset), "checksum": ds.meta.get("checksum"), "level": ds.meta.get("level")},
        "model": res["model"],
        "masking": cfg.masking,
        "chosen_epoch": state["best_epoch"],
        "chosen_step": state["best_step"],
        "best_val_loss": state["best"] if state["epoch"] else None,
        "epochs_run": state["epoch"],
        "steps_run": state["step"],
        "stop_reason": stop_reason,
        "stop_explained": _STOP_TEXT[stop_reason],
        "still_falling": still_falling,
        "patience": cfg.patience,
        "min_delta": cfg.min_delta,
        "steps_per_epoch": steps_per_epoch,
        "max_steps": cfg.max_steps,
        "max_minutes": cfg.max_minutes,
        "max_epochs": max_epochs,
        "batch_size": B,
        "wall_seconds": round(state["elapsed"], 3),
        "structure": diagnostics,
        **({"world_size": dist.world, "per_rank_batch": B // dist.world} if dist.world > 1 else {}),
        "curve": [
            {k: r[k] for k in ("epoch", "step", "train_loss", "val_loss", "val_masked_acc", "wall_seconds") if k in r}
            for r in rows
        ],
        **environment_info(device),
        **({"cuda_determinism": determinism} if determinism else {}),
    }
    # the chosen weights again for sharing, loadable without pickle (load_checkpoint reads either file)
    save_safetensors({"schema": CHECKPOINT_SCHEMA, "kind": "asm", "model": best}, out / "asm.safetensors")
    write_json(out / "asm.json", asm_info)
    if still_falling:
        warnings.warn(stop_summary(asm_info), stacklevel=2)
    if not rows:
        return
    try:
        plot_pretrain_curve(rows, state["best_step"], out / "pretrain_curve.png")
    except Exception as e:  # a plot must never lose a finished model, but say it is missing
        print(f"warning: pretrain_curve.png not written ({type(e).__name__}: {e}); the ASM is saved", flush=True)


def _check_same_data(ck: dict, saved: dict, cfg: PretrainConfig, ds) -> None:
    """Resume only on the same data: by content (the dataset checksum) where the checkpoint has it, else by the
    resolved path (checkpoints from before checksums were stored)."""
    if ck.get("dataset_checksum") is not None:
        if ck["dataset_checksum"] != ds.meta.get("checksum"):
            raise ConfigError(
                f"--resume on dataset {cfg.dataset} whose checksum "
                "differs from the one the run trained on "
                f"({str(ck['dataset_checksum'])[:12]}...): the data "
                "changed; pretrain a new ASM with another --out"
            )
    elif Path(str(saved.get("dataset"))).resolve() != Path(cfg.dataset).resolve():
        raise ConfigError(
            f"--resume with dataset={cfg.dataset!r} but the run used {saved.get('dataset')!r}; use the same dataset"
        )


_STOP_TEXT = {
    "plateau": "stopped on a plateau: patience validations without an improvement of min_delta",
    "epoch_budget": "stopped by the budget of max_epochs validations",
    "step_budget": "stopped by the budget of max_steps gradient steps",
    "time_budget": "stopped by the budget of max_minutes",
}


def _stop_reason(state: dict, cfg: PretrainConfig, max_epochs: int, max_steps: float, max_seconds: float) -> str | None:
    """Why pretraining stops now, or None to go on (the plateau first: it is the only converged stop)."""
    if state["bad"] >= cfg.patience and state["epoch"] >= cfg.min_epochs:
        return "plateau"
    if state["step"] >= max_steps:
        return "step_budget"
    if state["epoch"] >= max_epochs:
        return "epoch_budget"
    if state["elapsed"] >= max_seconds:
        return "time_budget"
    return None


def stop_summary(info: dict) -> str:
    """What the command prints last: where it stopped, why, and whether the loss was still falling."""
    if info["steps_run"] == 0:
        return "ASM not trained (a budget of 0 steps): the random initial ASM was saved, as the paper's epoch-0 control"
    msg = (
        f"ASM {info['stop_explained']} after {info['steps_run']} gradient steps "
        f"({info['epochs_run']} validation{'s' if info['epochs_run'] != 1 else ''}); "
        f"chosen step {info['chosen_step']}, best validation masked loss {info['best_val_loss']:.4f}"
    )
    if info.get("still_falling"):
        msg += (
            f"; WARNING: the validation loss was still falling when the budget stopped it (best at step "
            f"{info['chosen_step']}): raise --max-steps / --max-epochs / --max-minutes for a converged ASM"
        )
    return msg


def _distributed_backward(asm, opt, train_ds, B: int, rng, mam, gen, device, dist: _Dist) -> torch.Tensor:
    """Gradients of the global masked loss from this rank's slice of the global minibatch.

    Every rank draws the same B indices (same seed, same stream) and keeps its B/K; each rank's mean
    loss is re-weighted by its share of the chosen positions, so the all-reduced mean gradient equals
    the gradient of the loss averaged over all chosen positions of the global batch (the single-process
    objective). Returns the global loss (for logging).
    """
    b = B // dist.world
    idx = train_ds.sample_indices(B, rng)[dist.rank * b : (dist.rank + 1) * b]
    s, a, _, _, _ = train_ds.batch_at(idx, device=device)
    loss, info = asm_loss(asm, s, a, mam, gen)
    count = info["masked_count"].sum().detach().reshape(1)
    total = count.clone()
    torch.distributed.all_reduce(total)
    weight = count / total.clamp(min=1.0) * dist.world
    opt.zero_grad(set_to_none=True)
    (loss * weight.squeeze()).backward()
    for p in asm.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)
        p.grad /= dist.world
    global_loss = (loss.detach() * weight.squeeze()).reshape(1)
    torch.distributed.all_reduce(global_loss)
    return global_loss.squeeze() / dist.world


def pretrain_distributed(cfg: PretrainConfig) -> Path | None:
    """Data-parallel pretraining under ``torchrun --nproc_per_node K`` (gloo on CPU, nccl on GPU).

    The configured batch is the global batch, split across the K processes; rank 0 writes the same ASM
    directory a single process would. Returns the directory on rank 0 and None on the others. A resumed
    distributed run continues correctly but is not bit-identical (other ranks' corruption streams restart).

    Raises:
        ConfigError: not started by torchrun (no RANK/WORLD_SIZE in the environment).
    """
    import torch.distributed as tdist

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ConfigError(
            "--distributed needs torchrun: torchrun --nproc_per_node "
            "K -m spinrl pretrain DATASET --out DIR --distributed"
        )
    device = resolve_device(run_device_name(cfg.device, cfg.out, cfg.resume))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    tdist.init_process_group(backend=backend)
    try:
        return _pretrain_in_group(cfg)
    finally:
        tdist.destroy_process_group()


def _pretrain_in_group(cfg: PretrainConfig) -> Path | None:
    """Pretrain as one rank of an initialized process group (torchrun or a Ray Train worker)."""
    import torch.distributed as tdist

    dist = _Dist(rank=tdist.get_rank(), world=tdist.get_world_size())
    for _ in pretrain_iter(cfg, dist):
        pass
    tdist.barrier()
    return Path(cfg.out) if dist.main else None


def _ray_worker(config: dict) -> None:
    """Ray Train's per-worker loop: Ray has initialized the process group (gloo on CPU, nccl on GPU)."""
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    _pretrain_in_group(PretrainConfig(**config))


def pretrain_ray(cfg: PretrainConfig, workers: int, use_gpu: bool = False, address: str | None = None) -> Path:
    """Data-parallel pretraining under Ray Train (``TorchTrainer``), same layout and global batch as torchrun.

    Starts (or joins, with ``address``) a Ray cluster, runs ``workers`` ranks with one CPU each (and one GPU
    each with ``use_gpu``), and returns the ASM directory written by rank 0. Needs the ``ray`` extra.

    Raises:
        MissingExtraError: Ray Train is not installed.
    """
    import shutil
    import tempfile

    try:
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError:
        raise MissingExtraError("ray[train]", "ray") from None
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    # Ray runs workers in their own directories: pass absolute paths. auto is the GPU only where Ray gives one.
    device = run_device_name(cfg.device, cfg.out, cfg.resume)
    device = ("cuda" if use_gpu else "cpu") if device == "auto" else device
    cfg = dataclasses.replace(
        cfg,
        dataset=os.path.abspath(cfg.dataset),
        out=os.path.abspath(cfg.out),
        progress=False,
        threads=cfg.threads or 1,
        device=device,
    )
    cfg.validate()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    storage = tempfile.mkdtemp(prefix="spinrl-ray-train-")
    try:
        trainer = TorchTrainer(
            _ray_worker,
            train_loop_config=dataclasses.asdict(cfg),
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": 1}),
            run_config=RunConfig(storage_path=storage, name="pretrain"),
        )
        result = trainer.fit()
        if result.error is not None:
            raise result.error
    finally:
        shutil.rmtree(storage, ignore_errors=True)
        if started:
            ray.shutdown()
    return Path(cfg.out)


def pretrain(cfg: PretrainConfig) -> Path:
    """Run pretraining to completion and return the ASM directory."""
    for _ in pretrain_iter(cfg):
        pass
    return Path(cfg.out)


def plot_pretrain_curve(rows: list[dict], chosen_step: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["step"] for r in rows]
    chosen = chosen_step
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ax[0].plot(ep, [r["train_loss"] for r in rows], label="train")
    ax[0].plot(ep, [r["val_loss"] for r in rows], label="validation")
    ax[0].axvline(chosen, color="k", ls="--", lw=1, label=f"chosen step {chosen}")
    ax[0].set_xlabel("gradient step")
    ax[0].set_ylabel("masked cross-entropy")
    ax[0].legend()
    ax[1].plot(ep, [r["val_masked_acc"] for r in rows])
    ax[1].axvline(chosen, color="k", ls="--", lw=1)
    ax[1].set_xlabel("gradient step")
    ax[1].set_ylabel("validation masked accuracy")
    fig.suptitle("ASM pretraining (masked action modelling)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
