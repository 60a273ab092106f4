"""ASM pretraining by masked action modelling, with an automatic stop on validation loss.

The paper trains a fixed number of epochs and gives no stopping rule, although too short hurts and
too long wastes SPIN's speed advantage. We hold out whole episodes, measure the masked loss on them
after every epoch with a fixed corruption seed (so epochs are comparable), keep the best epoch's
weights, and stop after ``patience`` epochs without an improvement of at least ``min_delta``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from spinrl.algorithms.mam import MAMConfig, asm_loss
from spinrl.utils.jsonable import to_jsonable
from spinrl.utils.optim import FusedAdam
from spinrl.data import load
from spinrl.errors import CheckpointError, ConfigError, MissingExtraError
from spinrl.models import ActionStructureModel, ModelConfig
from spinrl.utils.checkpoint import (
    CHECKPOINT_SCHEMA,
    capture_rng,
    load_checkpoint,
    resolve_device,
    restore_rng,
    save_atomic,
    seed_everything,
    write_text_atomic,
)
from spinrl.training.config import PretrainConfig
from spinrl.training.runinfo import environment_info
from spinrl.utils.progress import progress_bar
from spinrl.utils.memory import keep_freed_memory
from spinrl.utils.hardware import threads_warning

# Settings that define the result; a resume with other values would silently mix two runs.
_FIXED = ("dataset", "preset", "patience", "min_delta", "min_epochs", "steps_per_epoch", "batch_size", "lr",
          "grad_clip", "mask_prob", "masking", "val_fraction", "val_batches", "seed", "model_kwargs")


def _write_metrics(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()))
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())


@dataclasses.dataclass
class _Dist:
    """Data-parallel context (torchrun): every rank draws the same global minibatch indices and trains on
    its slice; gradients are averaged with weights that make the update the single-process one."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def pretrain_iter(cfg: PretrainConfig, _dist: _Dist | None = None) -> Iterator[dict]:
    """Pretrain epoch by epoch, yielding each epoch's metrics; the ASM directory is complete at the end."""
    cfg.validate()
    dist = _dist or _Dist()
    keep_freed_memory()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if dist.world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    res = cfg.resolved()
    out = Path(cfg.out)
    ckpt_path = out / "checkpoints" / "last.pt"
    if out.exists() and (out / "asm.json").exists() and not cfg.resume:
        raise ConfigError(f"--out {out} already holds a finished ASM; choose another --out or pass --resume")
    if out.exists() and ckpt_path.exists() and not cfg.resume:
        raise ConfigError(f"--out {out} holds an interrupted pretraining run; pass --resume to continue it or choose another --out")
    if dist.world > 1:  # no rank may see another's first checkpoint as "an interrupted run"
        torch.distributed.barrier()

    ds = load(cfg.dataset)
    train_ds, val_ds = ds.split(cfg.val_fraction, seed=cfg.seed)
    model_cfg = ModelConfig(**res["model"])
    seed_everything(cfg.seed)
    asm = ActionStructureModel(ds.observation_dim, ds.nvec, model_cfg).to(device)
    opt = FusedAdam(asm.parameters(), lr=res["lr"])
    mam = MAMConfig(mask_prob=cfg.mask_prob, variable=cfg.masking == "variable")
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed if dist.rank == 0 else cfg.seed + 1_000_003 * dist.rank)  # own corruption per rank
    B = res["batch_size"]
    if dist.world > 1 and B % dist.world:
        raise ConfigError(f"--batch-size {B} must be divisible by the {dist.world} processes (the global batch is split across them)")
    steps_per_epoch = cfg.steps_per_epoch or max(1, train_ds.num_transitions // B)
    # Fixed validation minibatches and corruption: the curve measures the model, not the noise.
    val_rng = np.random.default_rng(cfg.seed + 10_007)
    val_idx = [val_rng.integers(0, val_ds.num_transitions, size=B) for _ in range(cfg.val_batches)]

    rows: list[dict] = []
    state = {"epoch": 0, "best": float("inf"), "best_epoch": 0, "bad": 0, "elapsed": 0.0}
    config_json = {"config": to_jsonable(cfg), "resolved": res, **environment_info(device)}
    if cfg.resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, "pretraining checkpoint", kind="asm_pretrain")
        saved = ck["config"]
        for k in _FIXED:
            if saved.get(k) != to_jsonable(cfg).get(k):
                raise ConfigError(f"--resume with {k}={to_jsonable(cfg).get(k)!r} but the run used {saved.get(k)!r}; use the same value")
        asm.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        restore_rng(ck["rng"], rng, gen)
        state = dict(ck["state"])
        rows = list(ck["rows"])
    elif dist.main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.json", json.dumps(config_json, indent=2))
    if dist.main and (msg := threads_warning(cfg.threads, device)):  # once inputs are checked
        warnings.warn(msg, stacklevel=2)
    max_epochs = res["max_epochs"]
    stop_reason = "max_epochs"
    bar = progress_bar(total=max_epochs, desc="pretrain ASM", unit="epoch", disable=None if cfg.progress and dist.main else True)
    bar.update(state["epoch"])
    while state["epoch"] < max_epochs:
        if state["bad"] >= cfg.patience and state["epoch"] >= cfg.min_epochs:
            stop_reason = "early_stop"
            break
        t0 = time.perf_counter()
        asm.train()
        loss_sum = torch.zeros((), device=device)
        for _ in range(steps_per_epoch):
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
        state["elapsed"] += time.perf_counter() - t0
        improved = v_loss < state["best"] - cfg.min_delta
        if improved:
            state["best"], state["best_epoch"], state["bad"] = v_loss, state["epoch"], 0
            if dist.main:
                save_atomic({"schema": CHECKPOINT_SCHEMA, "kind": "asm", "model": asm.state_dict()}, out / "asm.pt")
        else:
            state["bad"] += 1
        row = {
            "epoch": state["epoch"],
            "wall_seconds": round(state["elapsed"], 3),
            "train_loss": float(loss_sum) / steps_per_epoch,
            "val_loss": v_loss,
            "val_masked_acc": float(correct.sum() / count.sum().clamp(min=1)),
            "best": int(improved),
            **{f"val_acc_{i}": acc_N[i] for i in range(len(acc_N))},
        }
        rows.append(row)
        if not dist.main:
            bar.update(1)
            yield row
            continue
        _write_metrics(out / "metrics.csv", rows)
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
            },
            ckpt_path,
        )
        bar.update(1)
        bar.set_postfix(train=f"{row['train_loss']:.3f}", val=f"{v_loss:.3f}", acc=f"{row['val_masked_acc']:.2f}", best=state["best_epoch"])
        yield row
    else:
        stop_reason = "max_epochs"
    if state["bad"] >= cfg.patience and state["epoch"] >= cfg.min_epochs:
        stop_reason = "early_stop"
    bar.close()
    if not dist.main:
        return
    info = {
        "signature": ds.signature,
        "dataset": {"path": str(cfg.dataset), "checksum": ds.meta.get("checksum"), "level": ds.meta.get("level")},
        "model": res["model"],
        "masking": cfg.masking,
        "chosen_epoch": state["best_epoch"],
        "best_val_loss": state["best"],
        "epochs_run": state["epoch"],
        "stop_reason": stop_reason,
        "patience": cfg.patience,
        "min_delta": cfg.min_delta,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": B,
        "wall_seconds": round(state["elapsed"], 3),
        **({"world_size": dist.world, "per_rank_batch": B // dist.world} if dist.world > 1 else {}),
        "curve": [{k: r[k] for k in ("epoch", "train_loss", "val_loss", "val_masked_acc", "wall_seconds")} for r in rows],
        **environment_info(device),
    }
    write_text_atomic(out / "asm.json", json.dumps(info, indent=2))
    try:
        plot_pretrain_curve(rows, state["best_epoch"], out / "pretrain_curve.png")
    except Exception as e:  # a plot must never lose a finished model, but say it is missing
        print(f"warning: pretrain_curve.png not written ({type(e).__name__}: {e}); the ASM is saved", flush=True)


def _distributed_backward(asm, opt, train_ds, B: int, rng, mam, gen, device, dist: _Dist) -> torch.Tensor:
    """Gradients of the global masked loss from this rank's slice of the global minibatch.

    Every rank draws the same B indices (same seed, same stream) and keeps its B/K; each rank's mean
    loss is re-weighted by its share of the chosen positions, so the all-reduced mean gradient equals
    the gradient of the loss averaged over all chosen positions of the global batch (the single-process
    objective). Returns the global loss (for logging).
    """
    b = B // dist.world
    idx = train_ds.sample_indices(B, rng)[dist.rank * b:(dist.rank + 1) * b]
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
        raise ConfigError("--distributed needs torchrun: torchrun --nproc_per_node K -m spinrl pretrain DATASET --out DIR --distributed")
    device = resolve_device(cfg.device)
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
        raise MissingExtraError("--distributed --dist-backend ray needs Ray Train: pip install 'spinrl[ray]'") from None
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    # Ray runs workers in their own directories: pass absolute paths.
    cfg = dataclasses.replace(cfg, dataset=os.path.abspath(cfg.dataset), out=os.path.abspath(cfg.out), progress=False,
                              threads=cfg.threads or 1)
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


def plot_pretrain_curve(rows: list[dict], chosen: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ax[0].plot(ep, [r["train_loss"] for r in rows], label="train")
    ax[0].plot(ep, [r["val_loss"] for r in rows], label="validation")
    ax[0].axvline(chosen, color="k", ls="--", lw=1, label=f"chosen epoch {chosen}")
    ax[0].set_xlabel("epoch")
    ax[0].set_ylabel("masked cross-entropy")
    ax[0].legend()
    ax[1].plot(ep, [r["val_masked_acc"] for r in rows])
    ax[1].axvline(chosen, color="k", ls="--", lw=1)
    ax[1].set_xlabel("epoch")
    ax[1].set_ylabel("validation masked accuracy")
    fig.suptitle("ASM pretraining (masked action modelling)")
    fig.tight_layout()
    tmp = path.parent / f".{path.name}.tmp.png"  # rename into place: a crash never leaves a partial PNG
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
