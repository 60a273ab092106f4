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
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from spinrl.algorithms.mam import MAMConfig, asm_loss
from spinrl.cli.args import to_jsonable
from spinrl.data import load
from spinrl.errors import CheckpointError, ConfigError
from spinrl.models import ActionStructureModel, ModelConfig
from spinrl.training.checkpoint import (
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


def pretrain_iter(cfg: PretrainConfig) -> Iterator[dict]:
    """Pretrain epoch by epoch, yielding each epoch's metrics; the ASM directory is complete at the end."""
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    res = cfg.resolved()
    out = Path(cfg.out)
    ckpt_path = out / "checkpoints" / "last.pt"
    if out.exists() and (out / "asm.json").exists() and not cfg.resume:
        raise ConfigError(f"--out {out} already holds a finished ASM; choose another --out or pass --resume")
    if out.exists() and ckpt_path.exists() and not cfg.resume:
        raise ConfigError(f"--out {out} holds an interrupted pretraining run; pass --resume to continue it or choose another --out")

    ds = load(cfg.dataset)
    train_ds, val_ds = ds.split(cfg.val_fraction, seed=cfg.seed)
    model_cfg = ModelConfig(**res["model"])
    seed_everything(cfg.seed)
    asm = ActionStructureModel(ds.observation_dim, ds.nvec, model_cfg).to(device)
    opt = torch.optim.Adam(asm.parameters(), lr=res["lr"])
    mam = MAMConfig(mask_prob=cfg.mask_prob, variable=cfg.masking == "variable")
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    B = res["batch_size"]
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
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.json", json.dumps(config_json, indent=2))
    max_epochs = res["max_epochs"]
    stop_reason = "max_epochs"
    bar = progress_bar(total=max_epochs, desc="pretrain ASM", unit="epoch", disable=None if cfg.progress else True)
    bar.update(state["epoch"])
    while state["epoch"] < max_epochs:
        if state["bad"] >= cfg.patience and state["epoch"] >= cfg.min_epochs:
            stop_reason = "early_stop"
            break
        t0 = time.perf_counter()
        asm.train()
        loss_sum = torch.zeros((), device=device)
        for _ in range(steps_per_epoch):
            s, a, _, _, _ = train_ds.sample(B, rng, device=device)
            loss, _ = asm_loss(asm, s, a, mam, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
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
        "curve": [{k: r[k] for k in ("epoch", "train_loss", "val_loss", "val_masked_acc", "wall_seconds")} for r in rows],
        **environment_info(device),
    }
    write_text_atomic(out / "asm.json", json.dumps(info, indent=2))
    try:
        plot_pretrain_curve(rows, state["best_epoch"], out / "pretrain_curve.png")
    except Exception:  # a plot must never lose a finished model
        pass


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
