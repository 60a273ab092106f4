"""The online DecQN loop: rounds of whole episodes, epsilon-greedy exploration, gradient updates from the
replay, evaluations and checkpoints at episode boundaries, exact resume (see the package docstring)."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Callable, Generator, Iterator

import numpy as np
import torch

from spinrl.algorithms.common import polyak
from spinrl.algorithms.decqn import DecQNConfig, q_loss
from spinrl.errors import CheckpointError, ConfigError
from spinrl.models.decqn import DecQNNet
from spinrl.training.behaviour.carry import _warn_if_original_run_has_replay
from spinrl.training.behaviour.config import (
    CARRY_FILE,
    CARRY_KIND,
    DEFAULT_REFILL,
    EVAL_SEED,
    METRIC_FIELDS,
    POLICY_KIND,
    STAND_HEIGHT,
    TEMPORAL_MAX_HOLD,
    BehaviourConfig,
    _check_identity,
    q_divergence,
    reward_max,
    training_return,
)
from spinrl.training.behaviour.replay import Replay, _add_complete, replay_capacity
from spinrl.training.fitter import Fitter
from spinrl.utils import loggers, outdir
from spinrl.utils.checkpoint import CHECKPOINT_SCHEMA, capture_rng, load_checkpoint, restore_rng, save_atomic
from spinrl.utils.memory import keep_freed_memory
from spinrl.utils.optim import FusedAdam
from spinrl.utils.rundir import write_json, write_metrics_csv


def epsilon_greedy(
    rng: np.random.Generator,
    K: int,
    nvec: np.ndarray,
    epsilon: float | None,
    mode: str,
    greedy: Callable[[], np.ndarray],
    hold: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Actions [K, N] for K envs, and which rows count as exploratory for the epsilon decay [K].

    joint: each row is uniform random with probability epsilon, else ``greedy()`` (called only when some
    row needs it); per-dimension: each entry independently, and every row counts (epsilon decays per env
    step); temporal: ``hold`` = (steps left [K], held actions [K, N]), updated in place: a row not holding
    starts holding a uniform random action with probability epsilon, for zipf(2) steps (at most
    TEMPORAL_MAX_HOLD), and only those starts count. epsilon None = warm-up: uniform random actions, no
    uniforms drawn (the RNG stream of every run).
    """
    if mode == "temporal" and epsilon is not None:
        assert hold is not None, "temporal exploration needs hold"
        left, held = hold
        start = (left == 0) & (rng.random(K) < epsilon)
        if start.any():
            held[start] = rng.integers(0, nvec, size=(int(start.sum()), len(nvec)))
            left[start] = np.minimum(rng.zipf(2.0, int(start.sum())), TEMPORAL_MAX_HOLD)
        holding = left > 0
        left[holding] -= 1
        if holding.all():
            return held.copy(), start
        with torch.no_grad():
            return np.where(holding[:, None], held, greedy()), start
    if epsilon is None:
        explore = np.ones((K, 1), bool)
    elif mode == "joint":
        explore = rng.random(K)[:, None] < epsilon
    else:
        explore = rng.random((K, len(nvec))) < epsilon
    a = rng.integers(0, nvec, size=(K, len(nvec)))
    if not explore.all():
        with torch.no_grad():
            a = np.where(explore, a, greedy())
    return a, (explore[:, 0] if mode == "joint" else np.ones(K, bool))


def _greedy(net: DecQNNet, obs: np.ndarray) -> np.ndarray:
    """The network's greedy actions [K, N] for observations [K, obs_dim]."""
    return net.greedy(torch.from_numpy(obs)).numpy()


class _Run:
    """Mutable state of one run (what ``last.pt`` stores)."""

    def __init__(self, cfg: BehaviourConfig, obs_dim: int, nvec: np.ndarray, capacity: int):
        torch.manual_seed(cfg.seed)
        self.online = DecQNNet(obs_dim, nvec.tolist(), cfg.hidden, cfg.obs_transform)
        self.target = DecQNNet(obs_dim, nvec.tolist(), cfg.hidden, cfg.obs_transform)
        self.target.load_state_dict(self.online.state_dict())
        for p in self.target.parameters():
            p.requires_grad_(False)
        # as train/pretrain; 1.08x the updates/s of Adam(foreach=True) here (python benchmarks/decqn_update.py)
        self.opt = FusedAdam(self.online.parameters(), lr=cfg.lr)
        self.rng = np.random.default_rng(cfg.seed)
        self.replay = Replay(capacity, obs_dim, len(nvec), prioritized=cfg.replay == "prioritized")
        self.step = 0
        self.rounds = 0
        self.updates = 0
        self.epsilon = float(cfg.eps_start)
        self.wall = 0.0
        self.rows: list[dict] = []
        self.losses: list[float] = []  # since the last metrics row
        self.q_means: list[float] = []
        self.train_returns: list[float] = []
        self.train_rewards: list[float] = []  # the same episodes' returns under the training reward
        self.next_eval = cfg.eval_every
        self.next_ckpt = cfg.checkpoint_every
        self.min_replay = cfg.batch_size  # a continued run first refills its replay to --warmup
        self.continued_at: list[int] = []  # env steps where a carry restarted the replay
        self.skipped = 0  # updates dropped while a continued run refilled its replay


def _policy_payload(cfg: BehaviourConfig, run: _Run, obs_dim: int, nvec, returns: np.ndarray) -> dict:
    return {
        "schema": CHECKPOINT_SCHEMA,
        "kind": POLICY_KIND,
        "env": cfg.env,
        "bins": int(cfg.bins),
        "obs_dim": int(obs_dim),
        "nvec": [int(m) for m in nvec],
        "hidden": int(cfg.hidden),
        "obs_transform": cfg.obs_transform,
        "env_step": int(run.step),
        "eval_returns": [float(r) for r in returns],
        "eval_return_mean": float(np.mean(returns)),
        "eval_return_std": float(np.std(returns)),
        "state_dict": run.online.state_dict(),
    }


def load_policy(path: str | os.PathLike) -> tuple[DecQNNet, dict]:
    """A saved DecQN policy file -> (network in eval mode, its metadata without the weights)."""
    obj = load_checkpoint(path, what="DecQN policy")
    if obj.get("kind") != POLICY_KIND:
        raise CheckpointError(
            f"{path} is not a DecQN policy file (kind {obj.get('kind')!r}); pass a policies/step_*.pt file"
        )
    net = DecQNNet(obj["obs_dim"], obj["nvec"], obj["hidden"], obj.get("obs_transform", "none"))
    try:
        net.load_state_dict(obj["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: weights do not match the recorded shapes ({str(e).splitlines()[0][:120]})"
        ) from None
    net.eval()
    return net, {k: v for k, v in obj.items() if k != "state_dict"}


def greedy_returns(net: DecQNNet, vec, episodes: int, seed0: int = EVAL_SEED) -> np.ndarray:
    """Greedy returns of ``episodes`` episodes batched through ``vec`` (resets EVAL_SEED + k)."""
    from spinrl.evaluation.rollout import run_episodes

    def act(obs):
        return net.greedy(torch.from_numpy(obs)).numpy()

    return run_episodes(vec, act, [seed0 + k for k in range(episodes)]).returns


def _write_metrics(out: Path, rows: list[dict]) -> None:
    write_metrics_csv(out / "metrics.csv", rows, METRIC_FIELDS)


def _save_full(out: Path, cfg: BehaviourConfig, run: _Run) -> None:
    """Replay .npy files first, then last.pt naming them, then drop older replay folders."""
    ck = out / "checkpoints"
    meta = run.replay.save(ck / f"replay-{run.step:09d}")
    state = {
        "schema": CHECKPOINT_SCHEMA,
        "kind": "decqn-behaviour-run",
        "config": asdict(cfg),
        "online": run.online.state_dict(),
        "target": run.target.state_dict(),
        "optimizer": run.opt.state_dict(),
        "rng": capture_rng(run.rng),
        "replay": meta,
        "step": run.step,
        "rounds": run.rounds,
        "updates": run.updates,
        "epsilon": run.epsilon,
        "wall": run.wall,
        "rows": json.dumps(run.rows),
        "losses": list(run.losses),
        "q_means": list(run.q_means),
        "train_returns": list(run.train_returns),
        "train_rewards": list(run.train_rewards),
        "next_eval": run.next_eval,
        "next_ckpt": run.next_ckpt,
        "min_replay": run.min_replay,
        "continued_at": list(run.continued_at),
        "skipped": run.skipped,
    }
    save_atomic(state, ck / "last.pt")
    for old in ck.glob("replay-*"):
        if old.name != meta["folder"]:
            shutil.rmtree(old, ignore_errors=True)


def _restore(out: Path, cfg: BehaviourConfig, run: _Run, carry: bool = False) -> None:
    """Load ``out``'s last.pt into ``run`` (replay included), or with ``carry`` a carry folder (no replay)."""
    path = out / (CARRY_FILE if carry else "checkpoints/last.pt")
    st = load_checkpoint(path, what="behaviour carry" if carry else "behaviour checkpoint")
    if st.get("kind") != (CARRY_KIND if carry else "decqn-behaviour-run"):
        raise CheckpointError(f"{path} is not a behaviour-{'carry' if carry else 'run checkpoint'} file")
    _check_identity(st["config"], cfg, str(out), "continue" if carry else "resume")
    was = st["config"].get("threads", cfg.threads)
    if not carry and was != cfg.threads:
        raise ConfigError(
            f"--threads {cfg.threads} differs from the run in {out} ({was}): a changed thread count ends "
            f"bit-identity; resume with --threads {was}"
        )
    if cfg.env_steps < int(st["step"]):
        raise ConfigError(
            f"--env-steps {cfg.env_steps} is below the {'carried' if carry else 'checkpointed'} step "
            f"{int(st['step'])}; pass --env-steps {int(st['step'])} or more"
        )
    run.online.load_state_dict(st["online"])
    run.target.load_state_dict(st["target"])
    run.opt.load_state_dict(st["optimizer"])
    if not carry:
        run.replay.load(out / "checkpoints" / st["replay"]["folder"], st["replay"])
    restore_rng(st["rng"], run.rng)
    run.step, run.rounds, run.updates = int(st["step"]), int(st["rounds"]), int(st["updates"])
    run.epsilon, run.wall = float(st["epsilon"]), float(st["wall"])
    run.rows = json.loads(st["rows"])
    run.losses, run.train_returns = list(st["losses"]), list(st["train_returns"])
    run.train_rewards = list(st.get("train_rewards", []))  # checkpoints from before the field: none
    run.q_means = list(st.get("q_means", []))  # checkpoints written before q_mean was logged have none
    run.next_eval, run.next_ckpt = int(st["next_eval"]), int(st["next_ckpt"])
    run.min_replay, run.continued_at = int(st.get("min_replay", cfg.batch_size)), list(st.get("continued_at", []))
    run.skipped = int(st.get("skipped", 0))
    if carry:  # the replay is gone: refill it before learning resumes
        refill = DEFAULT_REFILL if cfg.refill is None else cfg.refill
        run.min_replay = min(max(cfg.batch_size, refill), run.replay.capacity)
        run.continued_at.append(run.step)


def train_behaviour(cfg: BehaviourConfig) -> Iterator[dict]:
    """Run (or resume) DecQN training; yields one metrics row per evaluation.

    Raises:
        ConfigError: invalid flags, an existing run without --resume, or a resume with other settings.
        CheckpointError: a missing or corrupted checkpoint.
        MissingExtraError: a chosen logger's extra is not installed.
    """
    return Fitter(_rows(cfg), "train_behaviour(cfg)", "list(train_behaviour(cfg))")


def _rows(cfg: BehaviourConfig) -> Generator[dict, None, None]:
    held: list = []
    try:
        yield from _train_behaviour(cfg, held)
    finally:
        for log in held:
            log.close()


def _train_behaviour(cfg: BehaviourConfig, held: list) -> Iterator[dict]:
    cfg.validate()
    names = loggers.parse_loggers(cfg.loggers)
    loggers.require(names)  # before anything is written
    from spinrl import envs

    keep_freed_memory()
    torch.set_num_threads(int(cfg.threads))
    out = Path(cfg.out)
    last = out / "checkpoints" / "last.pt"
    outdir.check_out(out, "behaviour", cfg.overwrite)
    if cfg.resume and not last.exists():
        raise ConfigError(f"--resume: {last} does not exist; start without --resume")
    if not cfg.resume and (last.exists() or (out / "metrics.csv").exists()):
        raise ConfigError(f"--out {out} already holds a run; pass --resume to continue it or choose another --out")
    carry = Path(cfg.continue_from) if cfg.continue_from and not cfg.resume else None
    if carry is not None:
        _warn_if_original_run_has_replay(carry)
    vec = envs.make_vector(cfg.env, cfg.num_envs, bins=cfg.bins)
    eval_vec = envs.make_vector(cfg.env, cfg.eval_episodes, bins=cfg.bins)
    nvec, obs_dim = vec.nvec, vec.observation_dim
    saved = load_checkpoint(last, what="behaviour checkpoint") if cfg.resume else None
    if saved is not None:
        capacity = int(saved["replay"]["capacity"])
    else:
        capacity = replay_capacity(cfg.replay_capacity, obs_dim, len(nvec))
    run = _Run(cfg, obs_dim, nvec, capacity)
    out.mkdir(parents=True, exist_ok=True)
    lock = outdir.Lock(out / outdir.LOCK, f"--out {out}").acquire()  # one writer; released at exit
    if cfg.resume:
        try:
            _restore(out, cfg, run)
        except BaseException:
            lock.release()
            raise
        _write_metrics(out, run.rows)  # drop rows written after the checkpoint (they will be redone)
    outdir.mark(out, "behaviour")
    (out / "policies").mkdir(exist_ok=True)
    if carry is not None:
        _restore(carry, cfg, run, carry=True)
        for f in sorted((carry / "policies").glob("step_*.pt")):  # earlier checkpoints stay medium candidates
            shutil.copyfile(f, out / "policies" / f.name)
        _write_metrics(out, run.rows)
    resolved = {
        **asdict(cfg),
        "replay_capacity_resolved": capacity,
        "nvec": [int(m) for m in nvec],
        "obs_dim": obs_dim,
        "continued_at": run.continued_at,
    }
    if saved is not None:  # a plain --resume keeps where the run came from (a carry's report names it)
        for name in ("continue_from", "refill"):
            resolved[name] = resolved[name] if resolved[name] is not None else saved["config"].get(name)
    del saved
    resolved.pop("resume")
    resolved.pop("progress")
    write_json(out / "config.json", resolved, newline=True)
    log = loggers.RunLogger(out, names, job="behaviour", config=resolved, step_key="env_step")
    held.append(log)
    algo = DecQNConfig(gamma=cfg.gamma, n_step=cfg.n_step)
    from spinrl.utils.progress import progress_bar

    bar = progress_bar(
        total=cfg.env_steps,
        desc=f"DecQN {cfg.env} bins {cfg.bins}",
        unit="step",
        disable=None if cfg.progress else True,
        initial=run.step,
    )
    last_eval = run.rows[-1]["eval_return_mean"] if run.rows else None
    t_start = time.time() - run.wall
    K = cfg.num_envs
    from spinrl.envs.dmc import observation_slices

    head = observation_slices(cfg.env)["head_height"] if cfg.shaping == "head-height" else None
    while run.step < cfg.env_steps:
        # ---- one round: K whole episodes, acting through one batched policy call per step
        obs = vec.reset([(cfg.seed * 1_000_003 + run.rounds * K + i) % EVAL_SEED for i in range(K)])
        hold = (np.zeros(K, np.int64), np.zeros((K, len(nvec)), np.int64))  # --explore temporal, per episode
        S, A, R = [obs], [], []  # observations, actions, training rewards per step
        active = np.ones(K, bool)
        ret, ret_train = np.zeros(K), np.zeros(K)
        while active.any():
            before = run.step
            warm = run.step < cfg.warmup
            a, explored = epsilon_greedy(
                run.rng, K, nvec, None if warm else run.epsilon, cfg.explore, partial(_greedy, run.online, obs), hold
            )
            if not warm:  # epsilon x decay per exploratory action (docs/benchmarks.md s.1)
                run.epsilon = max(cfg.eps_min, run.epsilon * cfg.eps_decay ** int((explored & active).sum()))
            obs, r, te, tr = vec.step(a)
            r = np.where(active, r, 0.0)
            S.append(obs)
            A.append(a)
            R.append(
                r
                if head is None
                else r + active * cfg.shaping_scale * np.clip(obs[:, head].ravel() / STAND_HEIGHT, 0.0, 1.0)
            )  # training reward (--shaping)
            ret += r
            ret_train += R[-1]
            run.step += int(active.sum())
            ended = active & (te | tr)
            _add_complete(run.replay, S, A, R, active & ~ended, ended, te, cfg.n_step, cfg.gamma)
            active &= ~ended
            bar.update(run.step - before)
            # one gradient update per `update_every` env steps after warm-up
            due = (run.step - cfg.warmup) // cfg.update_every - run.skipped if run.step >= cfg.warmup else 0
            if run.min_replay > cfg.batch_size and run.replay.size < run.min_replay:  # refilling after a carry:
                run.skipped += max(0, due - run.updates)  # these updates are dropped, not queued for later
                due = run.updates
            while run.updates < due and run.replay.size >= run.min_replay:
                if run.replay.tree is None:
                    batch, weights = run.replay.sample(run.rng, cfg.batch_size), None
                else:
                    batch, slots, weights = run.replay.sample_prioritized(
                        run.rng, cfg.batch_size, cfg.importance_exponent
                    )
                loss, info = q_loss(run.online, run.target, batch, algo, weights)
                if weights is not None:
                    run.replay.update_priorities(slots, info["td_abs"].numpy(), cfg.priority_exponent)
                run.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(run.online.parameters(), cfg.grad_clip, foreach=True)
                run.opt.step()
                polyak(run.target, run.online, cfg.tau)
                run.losses.append(info["loss"])
                run.q_means.append(info["q_mean"])
                run.updates += 1
        run.rounds += 1
        run.train_returns.extend(ret.tolist())
        run.train_rewards.extend(ret_train.tolist())
        run.wall = time.time() - t_start
        # ---- episode boundary: evaluate, save policy, checkpoint
        finished = run.step >= cfg.env_steps
        row = None
        if run.step >= run.next_eval or finished:
            returns = greedy_returns(run.online, eval_vec, cfg.eval_episodes)
            save_atomic(_policy_payload(cfg, run, obs_dim, nvec, returns), out / "policies" / f"step_{run.step:07d}.pt")
            row = {
                "env_step": run.step,
                "wall_seconds": round(time.time() - t_start, 2),
                "eval_return_mean": round(float(returns.mean()), 4),
                "eval_return_std": round(float(returns.std()), 4),
                "epsilon": round(run.epsilon, 6),
                "loss": round(float(np.mean(run.losses)), 6) if run.losses else None,
                "q_mean": round(float(np.mean(run.q_means)), 6) if run.q_means else None,
                "updates": run.updates,
                "episodes": run.rounds * K,
                "train_return_mean": round(float(np.mean(run.train_returns)), 4) if run.train_returns else None,
                "train_reward_return_mean": round(float(np.mean(run.train_rewards)), 4) if run.train_rewards else None,
            }
            run.rows.append(row)
            run.losses, run.q_means, run.train_returns, run.train_rewards = [], [], [], []
            while run.next_eval <= run.step:
                run.next_eval += cfg.eval_every
            log.log(run.rows, METRIC_FIELDS)  # metrics.csv, and the row to the optional loggers
            last_eval = row["eval_return_mean"]
            bar.set_postfix(
                eval=f"{last_eval:.1f}",
                eps=f"{run.epsilon:.3f}",
                q="-"
                if row["q_mean"] is None
                else f"{row['q_mean']:.2f}"
                + (
                    " DIVERGING"
                    if q_divergence(
                        row["q_mean"], cfg.gamma, reward_max(asdict(cfg)), training_return(row, asdict(cfg))
                    )
                    else ""
                ),
            )
        if run.step >= run.next_ckpt or finished:
            while run.next_ckpt <= run.step:
                run.next_ckpt += cfg.checkpoint_every
            run.wall = time.time() - t_start
            _save_full(out, cfg, run)
        if row is not None:  # after the checkpoint: a consumer that stops here loses nothing
            yield row
    bar.close()
    log.close()
    lock.release()
