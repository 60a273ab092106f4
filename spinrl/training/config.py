"""Training and pretraining configs: the single source of truth for the CLI, the API and run dirs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from spinrl.errors import ConfigError
from spinrl.models.config import ModelConfig
from spinrl.utils.checks import MAX_BATCH, MAX_EPISODES, check_finite, check_int, check_seed
from spinrl.utils.loggers import parse_loggers

ALGOS = ("iql", "awac", "bcq")
ACTORS = ("factored", "autoregressive", "saint", "spin", "spin-cached")

# Presets. `paper` is docs/method.md exactly. `cpu` is what 2 CPU cores can afford: d_model 64 / 2 blocks
# (per-step costs of both presets: docs/SPEED.md, written by benchmarks/train_step.py); critics, heads,
# batch and learning rates stay as in the paper.
PRESETS: dict[str, dict] = {
    "paper": {
        "model": ModelConfig(),
        "batch_size": 256,
        "lr": 3e-4,
        "asm_batch_size": 1024,
        "asm_lr": 4e-4,
        "asm_max_epochs": 100,
    },
    "cpu": {
        "model": ModelConfig(d_model=64, n_heads=4, n_blocks=2, head_hidden=128),
        "batch_size": 256,
        "lr": 3e-4,
        "asm_batch_size": 512,
        "asm_lr": 4e-4,
        "asm_max_epochs": 40,
    },
}


def preset(name: str) -> dict:
    if name not in PRESETS:
        raise ConfigError(f"--preset {name!r} is unknown; choose one of {', '.join(PRESETS)}")
    p = dict(PRESETS[name])
    p["model"] = dataclasses.replace(p["model"])
    return p


@dataclass
class TrainConfig:
    """Train a policy on an offline dataset with IQL, AWAC or BCQ and one of five actors."""

    dataset: str = ""
    """path of the dataset directory (made by `spinrl data make` or imported)"""
    out: str = ""
    """run directory: config.json, metrics.csv, checkpoints/, policy.pt"""
    overwrite: bool = False
    """write into --out even if spinrl did not make it as a run directory, or replace the run there (files
    spinrl did not write are kept)"""
    algo: Literal["iql", "awac", "bcq"] = "iql"
    """offline RL algorithm"""
    actor: Literal["factored", "autoregressive", "saint", "spin", "spin-cached"] = "factored"
    """policy architecture; spin = saint with the ASM's frozen state encoder and blocks (needs --asm);
    spin-cached = heads on the frozen ASM's all-[MASK] features, cached per dataset state (ours)"""
    asm: str | None = None
    """ASM directory from `spinrl pretrain` (required for --actor spin and spin-cached)"""
    preset: Literal["cpu", "paper"] = "cpu"
    """model sizes and batch: paper = the paper's exactly (slow on CPU); cpu = d_model 64, 2 blocks
    (docs/method.md, section "Presets")"""
    steps: int = 20000
    """gradient steps"""
    eval_every: int = 2000
    """evaluate (and checkpoint) every this many gradient steps; 0 disables evaluation"""
    eval_episodes: int = 10
    """episodes per evaluation, reset with seeds seed+100+k"""
    greedy: bool = False
    """evaluate with the most likely action instead of sampled actions (the paper samples)"""
    eval_mode: Literal["auto", "rollout", "exact"] = "auto"
    """rollout = eval_episodes sampled episodes; exact = the expected return computed on the env's known model
    (sepsis only: no sampling error); auto = exact where the model is known, else rollout"""
    env: str | None = None
    """evaluate on this environment instead of the dataset's (e.g. for imported data that names none): spinrl's
    id, a registered Gymnasium id, or module:ID (imports the module that registers it); its options are the
    dataset's env_kwargs when it is the dataset's own env, else its defaults (an env made with other options can be
    passed as an object: spinrl.fit(cfg, env=gymnasium.make(...))); its spaces must match the dataset's"""
    seed: int = 0
    """seed of everything: initialization, minibatches, dropout, action sampling"""
    resume: bool = False
    """continue from the run directory's last checkpoint (bit-identical to an uninterrupted run); on the command
    line, flags not given keep the run's own values"""
    checkpoint_every: int | None = None
    """gradient steps between checkpoints (default: eval_every, or 5000 without evaluation)"""
    log_every: int = 500
    """gradient steps between loss rows in metrics.csv"""
    batch_size: int | None = None
    """minibatch size (default: the preset's)"""
    lr: float | None = None
    """Adam learning rate of actor, critics and value net (default: the preset's)"""
    gamma: float = 0.99
    """discount"""
    device: str = "auto"
    """torch device: auto = CUDA when available, else cpu (with CUDA, the settings under which a seed fixes the
    result are applied); cpu, cuda, cuda:1. The device used is recorded in config.json (resolved.device), and a
    resumed run with auto keeps the device it was made on"""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16 = compute the losses under bfloat16 autocast (weights and optimizer stay fp32); pays only for the
    paper-size transformer actors on hardware with native bf16 (AVX512-BF16/AMX CPUs, GPUs; warns elsewhere:
    docs/SPEED.md), its effect on returns is in docs/BF16.md"""
    threads: int | Literal["auto"] | None = "auto"
    """torch CPU threads; auto = the cores idle at start (at least one, at most torch's own count), resolved when the
    run starts and written into its config.json as the number; an explicit count above the idle cores warns"""
    feature_cache_gb: float = 8.0
    """spin-cached: largest feature cache (fp16, beside the dataset) to build; above it, features are
    recomputed per batch without gradients"""
    tensorboard: bool = False
    """also write TensorBoard scalars (extra: tensorboard); the same as --loggers tensorboard"""
    loggers: tuple[str, ...] = ()
    """optional loggers beside metrics.csv (always written): any of tensorboard, wandb, mlflow (each its own
    extra), e.g. --loggers tensorboard,wandb; W&B honours WANDB_MODE/WANDB_PROJECT, MLflow MLFLOW_TRACKING_URI
    (default: OUT/mlruns)"""
    progress: bool = True
    """show a progress bar on a terminal"""
    eval_num_envs: int = 16
    """evaluation episodes stepped together"""
    algo_kwargs: dict = field(default_factory=dict)
    """algorithm hyper-parameters overriding its config (e.g. beta=3.0); on the command line --iql-beta 3.0 etc."""
    model_kwargs: dict = field(default_factory=dict)
    """model sizes overriding the preset (e.g. d_model=64); on the command line --model-d-model 64 etc."""

    def validate(self) -> None:
        if not self.dataset:
            raise ConfigError("dataset path is required: spinrl train DATASET --out RUNDIR ...")
        if not self.out:
            raise ConfigError("--out RUNDIR is required (the run directory to write)")
        if self.algo not in ALGOS:
            raise ConfigError(f"--algo {self.algo!r} is unknown; choose one of {', '.join(ALGOS)}")
        if self.actor not in ACTORS:
            raise ConfigError(f"--actor {self.actor!r} is unknown; choose one of {', '.join(ACTORS)}")
        if self.actor in ("spin", "spin-cached") and not self.asm:
            raise ConfigError(
                f"--actor {self.actor} needs --asm DIR (pretrain one with `spinrl pretrain DATASET --out DIR`)"
            )
        preset(self.preset)
        for name in ("steps", "eval_episodes", "log_every", "eval_num_envs"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        if self.eval_every < 0:
            raise ConfigError(f"--eval-every must be >= 0 (0 disables evaluation), got {self.eval_every}")
        if self.env is not None and (not isinstance(self.env, str) or not self.env.strip()):
            raise ConfigError(
                f"--env must be an environment id (a string), got {self.env!r}; pass an env object as "
                "spinrl.fit(cfg, env=...)"
            )
        for name in ("checkpoint_every", "batch_size"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v <= 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"--precision {self.precision!r} is unknown; choose fp32 or bf16")
        check_finite(self.lr, "--lr")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        check_finite(self.feature_cache_gb, "--feature-cache-gb")
        check_seed(self.seed)
        check_int(self.steps, "--steps")
        check_int(self.batch_size, "--batch-size", hi=MAX_BATCH, none_ok=True)
        check_int(self.eval_episodes, "--eval-episodes", hi=MAX_EPISODES)
        from spinrl.utils.hardware import check_threads, resolve_threads

        self.threads = resolve_threads(self.threads)  # once: the run, its config.json and a --resume see the number
        check_threads(self.threads)
        parse_loggers(self.loggers)
        if not 0.0 < self.gamma <= 1.0:
            raise ConfigError(f"--gamma must be in (0, 1], got {self.gamma}")
        fields = {f.name for f in dataclasses.fields(ModelConfig)}
        for k in self.model_kwargs:
            if k not in fields:
                raise ConfigError(f"model_kwargs has unknown key {k!r}; valid keys: {', '.join(sorted(fields))}")

    @property
    def logger_names(self) -> tuple[str, ...]:
        """--loggers with --tensorboard folded in."""
        return parse_loggers(self.loggers) + (
            ("tensorboard",) if self.tensorboard and "tensorboard" not in parse_loggers(self.loggers) else ()
        )

    @property
    def ckpt_every(self) -> int:
        return self.checkpoint_every or (self.eval_every if self.eval_every > 0 else 5000)

    def resolved(self) -> dict:
        """Preset values filled in: what the run actually used."""
        p = preset(self.preset)
        model = dataclasses.replace(p["model"], **self.model_kwargs)
        return {
            "batch_size": self.batch_size or p["batch_size"],
            "lr": self.lr or p["lr"],
            "model": dataclasses.asdict(model),
        }


@dataclass
class PretrainConfig:
    """Pretrain an Action Structure Model by masked action modelling, stopping on a validation plateau or a budget."""

    dataset: str = ""
    """path of the dataset directory"""
    out: str = ""
    """ASM directory: asm.pt, asm.json (signature, chosen epoch, wall time), metrics.csv, curve PNG"""
    overwrite: bool = False
    """write into --out even if spinrl did not make it as an ASM directory (files spinrl did not write are kept)"""
    preset: Literal["cpu", "paper"] = "cpu"
    """model sizes: paper = d_model 256, 3 blocks, batch 1024; cpu = d_model 64, 2 blocks, batch 512
    (docs/method.md, section "Presets")"""
    max_epochs: int | None = None
    """budget in validations ("epochs" of steps_per_epoch steps; default: the preset's, cpu 40, paper 100)"""
    max_steps: int | None = None
    """budget in gradient steps (0 = save the random initial ASM: the paper's epoch-0 control); none by default"""
    max_minutes: float | None = None
    """budget in wall-clock minutes of training (checked after each validation); none by default"""
    patience: int = 5
    """stop on a plateau: this many validations without an improvement larger than min_delta"""
    min_delta: float = 1e-3
    """smallest decrease of the validation masked loss that counts as an improvement"""
    min_epochs: int = 3
    """never stop on a plateau before this many validations"""
    steps_per_epoch: int | None = None
    """gradient steps between validations (default: one pass over the training transitions, at most 1,000)"""
    batch_size: int | None = None
    """minibatch size (default: the preset's)"""
    lr: float | None = None
    """Adam learning rate (default: the preset's; paper 4e-4)"""
    grad_clip: float = 1.0
    """gradient-norm clip"""
    mask_prob: float = 0.15
    """probability that a sub-action is chosen for corruption (80% [MASK], 10% random, 10% kept)"""
    masking: Literal["bert", "variable"] = "bert"
    """bert = the paper's fixed mask_prob; variable = per-sample ratio ~ U(0, 1] with a quarter of the rows
    fully masked, so the all-[MASK] input that spin-cached uses is in-distribution (ours)"""
    val_fraction: float = 0.1
    """fraction of episodes held out for validation"""
    val_batches: int = 8
    """validation minibatches per epoch (fixed corruption seed, so epochs are comparable)"""
    seed: int = 0
    """seed of initialization, minibatches and masking"""
    resume: bool = False
    """continue from the last epoch checkpoint; on the command line, flags not given keep the run's own values"""
    device: str = "auto"
    """torch device: auto = CUDA when available, else cpu (with CUDA, the settings under which a seed fixes the
    result are applied); cpu, cuda, cuda:1. The device used is recorded in config.json (resolved.device), and a
    resumed run with auto keeps the device it was made on"""
    threads: int | Literal["auto"] | None = "auto"
    """torch CPU threads; auto = the cores idle at start (at least one, at most torch's own count), written into
    the ASM directory's config as the number"""
    loggers: tuple[str, ...] = ()
    """optional loggers beside metrics.csv (always written): any of tensorboard, wandb, mlflow (each its own
    extra), e.g. --loggers tensorboard,wandb; W&B honours WANDB_MODE/WANDB_PROJECT, MLflow MLFLOW_TRACKING_URI
    (default: OUT/mlruns)"""
    progress: bool = True
    """show a progress bar on a terminal"""
    model_kwargs: dict = field(default_factory=dict)
    """model sizes overriding the preset; on the command line --model-d-model 64 etc."""

    def validate(self) -> None:
        if not self.dataset:
            raise ConfigError("dataset path is required: spinrl pretrain DATASET --out DIR")
        if not self.out:
            raise ConfigError("--out DIR is required (the ASM directory to write)")
        preset(self.preset)
        for name in ("max_epochs", "steps_per_epoch", "batch_size"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v <= 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 0):
            raise ConfigError(f"--max-steps must be an integer >= 0 (0 = the random ASM), got {self.max_steps!r}")
        if self.max_minutes is not None and not (0 < self.max_minutes < float("inf")):
            raise ConfigError(f"--max-minutes must be a positive finite number, got {self.max_minutes!r}")
        for name in ("patience", "val_batches", "min_epochs"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        check_finite(self.min_delta, "--min-delta")
        check_finite(self.lr, "--lr")
        check_seed(self.seed)
        from spinrl.utils.hardware import check_threads, resolve_threads

        self.threads = resolve_threads(self.threads)  # once: the run, its config.json and a --resume see the number
        check_threads(self.threads)
        parse_loggers(self.loggers)
        if self.min_delta < 0:
            raise ConfigError(f"--min-delta must be >= 0, got {self.min_delta}")
        if not 0.0 < self.mask_prob <= 1.0:
            raise ConfigError(f"--mask-prob must be in (0, 1], got {self.mask_prob}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        fields = {f.name for f in dataclasses.fields(ModelConfig)}
        for k in self.model_kwargs:
            if k not in fields:
                raise ConfigError(f"model_kwargs has unknown key {k!r}; valid keys: {', '.join(sorted(fields))}")

    def resolved(self) -> dict:
        p = preset(self.preset)
        model = dataclasses.replace(p["model"], **self.model_kwargs)
        return {
            "batch_size": self.batch_size or p["asm_batch_size"],
            "lr": self.lr or p["asm_lr"],
            "max_epochs": self.max_epochs or p["asm_max_epochs"],
            "model": dataclasses.asdict(model),
        }
