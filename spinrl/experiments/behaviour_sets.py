"""Behaviour policies for the DM Control dataset levels, chosen from a DecQN run's policy checkpoints.

A *behaviour directory* is either a run directory of ``spinrl behaviour train`` (``policies/step_*.pt``)
or an exported set (``behaviour.json`` + ``expert.pt`` + ``medium.pt``, e.g. the committed
``behaviour_checkpoints/<task>-<bins>``). Selection (docs/benchmarks.md s.1, "ours" where unpublished):
expert = the checkpoint with the best greedy evaluation return (earliest on ties); medium = among the
checkpoints whose greedy return is 35-55% of the expert's, the one closest to 45% (earliest on ties): the
earliest in the band sits at its lower edge on a steep learning curve, and users expect medium ~45. Data are
collected epsilon-greedily with epsilon 0.05 (DecQN's own exploration floor, so data look like the agent's
experience and are not deterministic); our reference returns (uniform random and the noisy expert) are
computed once and cached in ``behaviour.json``.

Two guards against noisy ten-episode evaluations (quadruped's returns are bimodal: a greedy episode gives
~130 or ~960): ``export`` re-evaluates the best checkpoints and the medium candidates on SELECT_EPISODES
fresh episodes and chooses by those (the max over a hundred noisy means overstates the expert: a winner's
curse), and the references run until their standard errors are small against expert - random (20 random
quadruped episodes averaged 31; a thousand average ~120).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spinrl.envs.core import BehaviourPolicy
from spinrl.errors import CheckpointError, ConfigError
from spinrl.utils import outdir
from spinrl.utils.checkpoint import load_checkpoint, write_text_atomic
from spinrl.utils.hardware import check_threads, torch_threads
from spinrl.utils.rundir import sha256_file

MEDIUM_RANGE = (0.35, 0.55)
"""medium = a checkpoint with greedy return in this fraction of the expert's ..."""
MEDIUM_TARGET = 0.45
"""... the one closest to this fraction (earliest on ties)."""
DATA_EPSILON = 0.05
"""Probability of a uniform random joint action while collecting data (ours; DecQN's epsilon floor)."""
REFERENCE_EPISODES = 100
"""Episodes per reference return (random and expert) at least, added in blocks of this size ..."""
REFERENCE_PRECISION = 0.02
"""... until the standard error of each mean is at most this fraction of expert - random ..."""
REFERENCE_MAX_EPISODES = 1000
"""... or this many episodes."""
REFERENCE_SEED = 3_000_000_000
SELECT_TOP = 5
"""``export`` re-evaluates this many best checkpoints (by their training evaluation) and medium candidates ..."""
SELECT_EPISODES = 50
"""... with this many greedy episodes each, on seeds no training evaluation used."""
SELECT_SEED = 2_500_000_000
CARRY_BUCKET = 0.05
"""A carry keeps, of the checkpoints at or above 35% of the best return so far, the earliest per bucket of
this fraction of the best (the later expert can only be better, so a medium could be any of them)."""
CARRY_FLOOR = 0.5
"""... where "best" is at least this fraction of the public expert reference (a run is expected to get there)."""
INDEX = "behaviour.json"
SETS_VARIABLE = "SPINRL_BEHAVIOUR_SETS"
COMMITTED = Path("behaviour_checkpoints")
"""Where behaviour sets (``<task>-<bins>``) are looked for when ``$SPINRL_BEHAVIOUR_SETS`` is unset: relative to the
current directory, so from a checkout's root the repository's committed sets (an installed package holds none)."""


def sets_root() -> Path:
    """The folder of behaviour sets that dmc medium/expert data use when --behaviour is omitted (absolute)."""
    return Path(os.environ.get(SETS_VARIABLE) or COMMITTED).resolve()


def committed_set(env: str, bins: int) -> Path | None:
    """The behaviour set under :func:`sets_root` for a dmc task and bin count, or None (used when --behaviour is
    omitted)."""
    folder = sets_root() / f"{env.split(':', 1)[1]}-{int(bins)}"
    return folder if (folder / INDEX).exists() else None


def reference_rule() -> dict:
    """How reference returns are measured; part of a dataset's cache name, so a new rule never reuses old data."""
    return {
        "min_episodes": REFERENCE_EPISODES,
        "precision": REFERENCE_PRECISION,
        "max_episodes": REFERENCE_MAX_EPISODES,
    }


@dataclass
class Checkpoint:
    file: str  # relative to the behaviour directory
    env_step: int
    eval_return_mean: float
    eval_return_std: float


def _scan(run_dir: Path) -> list[Checkpoint]:
    files = sorted((run_dir / "policies").glob("step_*.pt"))
    out = []
    for f in files:
        meta = load_checkpoint(f, what="DecQN policy")
        out.append(
            Checkpoint(
                f"policies/{f.name}",
                int(meta["env_step"]),
                float(meta["eval_return_mean"]),
                float(meta["eval_return_std"]),
            )
        )
    return out


def select(
    checkpoints: list[Checkpoint], lo: float = MEDIUM_RANGE[0], hi: float = MEDIUM_RANGE[1], aim: float = MEDIUM_TARGET
) -> tuple[Checkpoint, Checkpoint | None]:
    """(expert, medium or None): best greedy return; in [lo, hi] x expert's, the closest to aim x expert's."""
    if not checkpoints:
        raise CheckpointError("no policies/step_*.pt checkpoints found; run `spinrl behaviour train` first")
    expert = max(checkpoints, key=lambda c: (c.eval_return_mean, -c.env_step))
    target = expert.eval_return_mean
    band = [c for c in checkpoints if lo * target <= c.eval_return_mean <= hi * target]
    medium = min(band, key=lambda c: (abs(c.eval_return_mean - aim * target), c.env_step)) if band else None
    return expert, medium


def run_summary(run_dir: Path) -> dict:
    """Config, env steps, wall time and the metrics rows of a run directory (for docs/datasets.md)."""
    import csv

    with open(run_dir / "metrics.csv") as f:
        rows = [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in csv.DictReader(f)]
    cfg = json.loads((run_dir / "config.json").read_text())
    last = rows[-1] if rows else {}
    return {
        "config": cfg,
        "env_steps": int(last.get("env_step") or 0),
        "wall_seconds": last.get("wall_seconds"),
        "metrics": rows,
    }


class BehaviourSet:
    """The expert and medium DecQN policies of one behaviour directory, plus cached references."""

    def __init__(self, root: str | Path, env: str | None = None, bins: int | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(
                f"--behaviour {root}: not a directory; pass a `spinrl behaviour train` run or an exported set"
            )
        if (self.root / "carry.pt").exists():
            raise ConfigError(
                f"--behaviour {root} is a carry of a run in "
                "progress, not a behaviour set; continue it with "
                f"`spinrl behaviour train --continue-from {root}` and export that run"
            )
        index_path = self.root / INDEX
        self.index = json.loads(index_path.read_text()) if index_path.exists() else {}
        if (self.root / "policies").is_dir():  # a run directory: (re)select from its current policies
            cks = _scan(self.root)
            listing = [c.file for c in cks]
            rule = {"medium_range": list(MEDIUM_RANGE), "medium_target": MEDIUM_TARGET}
            if self.index.get("listing") != listing or self.index.get("rule") != rule:
                cfg = json.loads((self.root / "config.json").read_text())
                expert, medium = select(cks)
                self.index = {
                    "env": cfg["env"],
                    "bins": int(cfg["bins"]),
                    "listing": listing,
                    "rule": rule,
                    "expert": expert.__dict__,
                    "medium": None if medium is None else medium.__dict__,
                    "curve": [c.__dict__ for c in cks],
                    **({"reference": self.index["reference"]} if "reference" in self.index else {}),
                }
                write_text_atomic(index_path, json.dumps(self.index, indent=2) + "\n")
        elif not self.index:
            raise ConfigError(f"--behaviour {root}: neither a run directory (policies/) nor an exported set ({INDEX})")
        self.env, self.bins = self.index["env"], int(self.index["bins"])
        if env is not None and env != self.env:
            raise ConfigError(
                f"--behaviour {root} was trained on {self.env}, not {env}; pass a behaviour directory of {env}"
            )
        if bins is not None and int(bins) != self.bins:
            raise ConfigError(
                f"--behaviour {root} was trained with --bins {self.bins}, not {bins}; "
                f"use --bins {self.bins} or a behaviour run trained at {bins} bins"
            )

    def checkpoint(self, level: str) -> Checkpoint:
        c = self.index.get(level)
        if c is None:
            ex = self.index["expert"]["eval_return_mean"]
            got = ", ".join(f"{r['env_step']}: {r['eval_return_mean']:.0f}" for r in self.index.get("curve", [])[-8:])
            raise ConfigError(
                f"--behaviour {self.root}: no checkpoint has a greedy "
                f"return in {MEDIUM_RANGE[0]:.0%}-{MEDIUM_RANGE[1]:.0%} "
                f"of the expert's {ex:.1f} "
                f"({ex * MEDIUM_RANGE[0]:.0f}-{ex * MEDIUM_RANGE[1]:.0f}); evaluate more often "
                f"(--eval-every) or train longer (recent: {got})"
            )
        return Checkpoint(c["file"], int(c["env_step"]), float(c["eval_return_mean"]), float(c["eval_return_std"]))

    def policy(self, level: str, epsilon: float = DATA_EPSILON) -> BehaviourPolicy:
        """Epsilon-greedy DecQN policy of ``level`` (medium or expert) as a batched BehaviourPolicy."""
        import torch

        from spinrl.training.behaviour import load_policy

        ck = self.checkpoint(level)
        net, meta = load_policy(self.root / ck.file)
        nvec = np.asarray(meta["nvec"], dtype=np.int64)

        def act(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            with torch.no_grad():
                a = net.greedy(torch.from_numpy(np.asarray(obs, dtype=np.float32))).numpy()
            explore = rng.random(len(a)) < epsilon
            rand = rng.integers(0, nvec, size=a.shape)
            return np.where(explore[:, None], rand, a)

        desc = (
            f"DecQN {level}: {self.root.name}/{ck.file} (env step {ck.env_step}, greedy return "
            f"{ck.eval_return_mean:.1f}), epsilon-greedy with epsilon {epsilon}"
        )
        return BehaviourPolicy(act, nvec, desc)

    def provenance(self) -> dict:
        """What the metadata of a dataset records about its behaviour policies."""
        out = {}
        for level in ("medium", "expert"):
            c = self.index.get(level)
            if c is not None:
                out[level] = {**c, "sha256": sha256_file(self.root / c["file"])}
        return out

    def reference(self, epsilon: float = DATA_EPSILON) -> dict:
        """Our random and expert returns (see REFERENCE_PRECISION), computed once and cached in the index."""
        ref = self.index.get("reference")
        expert = self.index["expert"]
        rule = reference_rule()
        if (
            ref
            and ref.get("epsilon") == epsilon
            and ref.get("expert_file") == expert["file"]
            and ref.get("rule") == rule
        ):
            return ref
        from spinrl import envs
        from spinrl.evaluation.rollout import run_episodes
        from spinrl.utils.progress import progress_bar

        block = REFERENCE_EPISODES
        vec = envs.make_vector(self.env, min(block, 50), bins=self.bins)
        rnd = envs.behaviour_policy(self.env, "random", bins=self.bins)
        pol = self.policy("expert", epsilon)
        rng0, rng1 = np.random.default_rng(0), np.random.default_rng(1)
        r0, r1 = np.zeros(0), np.zeros(0)
        bar = progress_bar(desc=f"reference returns {self.env}", unit="episode")
        while True:  # blocks of episodes until both means are precise enough against expert - random
            seeds = [REFERENCE_SEED + k for k in range(len(r0), len(r0) + block)]
            r0 = np.concatenate([r0, run_episodes(vec, lambda o: rnd.act(o, rng0), seeds).returns])
            r1 = np.concatenate([r1, run_episodes(vec, lambda o: pol.act(o, rng1), seeds).returns])
            bar.update(2 * block)
            se = max(r0.std(), r1.std()) / np.sqrt(len(r0))
            gap = abs(r1.mean() - r0.mean())
            bar.set_postfix_str(f"random {r0.mean():.1f}, expert {r1.mean():.1f}, s.e. {se:.1f}")
            if se <= REFERENCE_PRECISION * gap or len(r0) + block > REFERENCE_MAX_EPISODES:
                break
        bar.close()
        n = len(r0)
        ref = {
            "random": float(r0.mean()),
            "expert": float(r1.mean()),
            "random_std": float(r0.std()),
            "expert_std": float(r1.std()),
            "episodes": n,
            "random_se": float(r0.std() / np.sqrt(n)),
            "expert_se": float(r1.std() / np.sqrt(n)),
            "rule": rule,
            "epsilon": epsilon,
            "expert_file": expert["file"],
            "source": f"ours: uniform random / DecQN expert {self.root.name} "
            f"({expert['file']}, epsilon {epsilon}), {n} episodes each",
        }
        self.index["reference"] = ref
        write_text_atomic(self.root / INDEX, json.dumps(self.index, indent=2) + "\n")
        return ref

    def reselect(self, top: int = SELECT_TOP, episodes: int = SELECT_EPISODES, progress: bool = True) -> None:
        """Choose expert and medium again by ``episodes`` fresh greedy episodes per candidate (run directories).

        Expert: the best re-evaluated of the ``top`` best checkpoints. Medium: of the ``top`` candidates the
        training evaluations put closest to 45% of the re-evaluated expert, those whose re-evaluated return
        is 35-55% of it, the closest to 45% (none: no medium). Cached in the index with the candidates.
        """
        if not (self.root / "policies").is_dir():
            raise ConfigError(f"{self.root}: re-selection needs the run directory (policies/), not an exported set")
        rule = {"top": int(top), "episodes": int(episodes), "seed": SELECT_SEED}
        if (
            self.index.get("selection", {}).get("rule") == rule
            and self.index["selection"].get("listing") == self.index["listing"]
        ):
            return
        from spinrl import envs
        from spinrl.training.behaviour import greedy_returns, load_policy
        from spinrl.utils.progress import progress_bar

        cks = _scan(self.root)
        vec = envs.make_vector(self.env, min(int(episodes), 25), bins=self.bins)
        evals: dict[str, np.ndarray] = {}
        bar = progress_bar(desc="re-evaluate checkpoints", unit="policy", disable=None if progress else True)

        def score(c: Checkpoint) -> float:
            if c.file not in evals:
                evals[c.file] = greedy_returns(load_policy(self.root / c.file)[0], vec, int(episodes), SELECT_SEED)
                bar.update(1)
                bar.set_postfix_str(
                    f"{c.env_step:,}: {evals[c.file].mean():.1f} (training eval {c.eval_return_mean:.1f})"
                )
            return float(evals[c.file].mean())

        best = sorted(cks, key=lambda c: (-c.eval_return_mean, c.env_step))[: int(top)]
        expert = max(best, key=lambda c: (score(c), -c.env_step))
        target = score(expert)
        lo, hi = MEDIUM_RANGE
        near = sorted(cks, key=lambda c: (abs(c.eval_return_mean - MEDIUM_TARGET * target), c.env_step))[: int(top)]
        band = [c for c in near if lo * target <= score(c) <= hi * target]
        medium = min(band, key=lambda c: (abs(score(c) - MEDIUM_TARGET * target), c.env_step)) if band else None
        bar.close()

        def entry(c: Checkpoint) -> dict:
            r = evals[c.file]
            return {
                **c.__dict__,
                "selection_return_mean": float(r.mean()),
                "selection_return_std": float(r.std()),
                "selection_episodes": int(len(r)),
            }

        self.index["expert"] = entry(expert)
        self.index["medium"] = None if medium is None else entry(medium)
        self.index["selection"] = {
            "rule": rule,
            "listing": self.index["listing"],
            "candidates": [entry(c) for c in cks if c.file in evals],
        }
        self.index.pop("reference", None)  # belongs to the expert chosen before
        write_text_atomic(self.root / INDEX, json.dumps(self.index, indent=2) + "\n")

    def export(
        self,
        out: str | Path,
        top: int = SELECT_TOP,
        episodes: int = SELECT_EPISODES,
        progress: bool = True,
        threads: int = 1,
    ) -> Path:
        """Re-select (``episodes`` > 0), compute references, copy the chosen policy files and the index to ``out``.

        ``threads``: torch CPU threads for the rollouts' forward passes (restored afterwards), 1 as in ``data
        make``: the policies are small, and beside a training job extra threads only spin."""
        check_threads(threads)
        with torch_threads(threads):
            return self._export(Path(out), top, episodes, progress)

    def _export(self, out: Path, top: int, episodes: int, progress: bool) -> Path:
        if episodes > 0:
            self.reselect(top, episodes, progress)
        out.mkdir(parents=True, exist_ok=True)
        self.reference()
        index = {k: v for k, v in self.index.items() if k != "listing"}
        if "selection" in index:
            index["selection"] = {k: v for k, v in index["selection"].items() if k != "listing"}
        index["source_run"] = str(self.root)
        index["run"] = run_summary(self.root)
        for level in ("medium", "expert"):
            c = self.index.get(level)
            if c is None:
                continue
            shutil.copyfile(self.root / c["file"], out / f"{level}.pt")
            index[level] = {**c, "file": f"{level}.pt", "run_file": c["file"]}
        index["reference"] = {**index["reference"], "expert_file": "expert.pt"}
        write_text_atomic(out / INDEX, json.dumps(index, indent=2) + "\n")
        return out


def carry_candidates(
    checkpoints: list[Checkpoint], lo: float = MEDIUM_RANGE[0], bucket: float = CARRY_BUCKET, floor: float = 0.0
) -> list[Checkpoint]:
    """The policy files a carry keeps: the best so far, and per ``bucket`` x b the earliest at >= lo x b,
    b = max(best so far, ``floor``).

    The final expert is at least the best so far, so medium candidates lie at or above lo x best; thinning
    to one per bucket keeps the carry a few MB while the medium lands within bucket/2 of its target.
    ``floor`` is the least expert the run is expected to reach (carry() uses half the public expert
    reference), so an early carry does not keep near-random policies that no medium could be.
    """
    if not checkpoints:
        raise CheckpointError("no policies/step_*.pt checkpoints found; run `spinrl behaviour train` first")
    best = max(checkpoints, key=lambda c: (c.eval_return_mean, -c.env_step))
    b = max(best.eval_return_mean, floor)
    keep: dict[int, Checkpoint] = {}
    if b > 0:
        for c in sorted(checkpoints, key=lambda c: c.env_step):
            if c.eval_return_mean >= lo * b:
                keep.setdefault(int((c.eval_return_mean / b - lo) // bucket), c)
    keep[-1] = best
    return sorted({c.file: c for c in keep.values()}.values(), key=lambda c: c.env_step)


def carry(run_dir: str | Path | CarryConfig, out: str | Path | None = None, overwrite: bool = False) -> dict:
    """``spinrl behaviour carry``: the run's state without its replay, plus medium candidates, in ``out``.

    Takes a :class:`CarryConfig` or the same names as arguments. Returns the summary also written to
    ``out/carry.json`` (env, steps, wall time, kept files, best return). ``out`` must be empty, new or an
    earlier carry (else ``overwrite``); one writer at a time.
    """
    if isinstance(run_dir, CarryConfig):
        return carry(run_dir.run, run_dir.out, run_dir.overwrite)
    if out is None:
        raise ConfigError("carry needs an output folder (--out)")
    run_dir = Path(run_dir)
    if not (run_dir / "checkpoints" / "last.pt").exists():
        raise ConfigError(f"{run_dir}: no checkpoints/last.pt; pass a `spinrl behaviour train` run directory")
    outdir.check_out(out, "carry", overwrite)
    Path(out).mkdir(parents=True, exist_ok=True)
    with outdir.Lock(Path(out) / outdir.LOCK, f"--out {out}"):
        info = _carry(run_dir, Path(out))
        outdir.mark(out, "carry")
    return info


def _carry(run_dir: Path, out: Path) -> dict:
    from spinrl.training.behaviour import changed_flags, save_carry

    cfg = json.loads((run_dir / "config.json").read_text())
    from spinrl.envs import DMC_REFERENCE

    public = DMC_REFERENCE.get((cfg["env"].split(":", 1)[1], int(cfg["bins"])))
    st_step = int(load_checkpoint(run_dir / "checkpoints" / "last.pt", what="behaviour checkpoint")["step"])
    # Only policies up to the checkpoint can be carried (a kill between an evaluation and its checkpoint
    # leaves a newer policy file that the continued run will redo), so choose among those.
    kept = carry_candidates(
        [c for c in _scan(run_dir) if c.env_step <= st_step], floor=CARRY_FLOOR * public[1] if public else 0.0
    )
    out = save_carry(run_dir, out, [c.file for c in kept])
    summary = run_summary(run_dir)
    summary["metrics"] = [r for r in summary["metrics"] if (r.get("env_step") or 0) <= st_step]
    summary["env_steps"] = st_step
    summary["wall_seconds"] = summary["metrics"][-1]["wall_seconds"] if summary["metrics"] else 0.0
    info = {
        "env": summary["config"]["env"],
        "bins": int(summary["config"]["bins"]),
        "env_step": st_step,
        "best": max(kept, key=lambda c: (c.eval_return_mean, -c.env_step)).__dict__,
        "kept": [c.__dict__ for c in kept],
        "run": summary,
        "continue": f"spinrl behaviour train {summary['config']['env']} --bins {summary['config']['bins']} "
        + " ".join(filter(None, [f"--hidden {summary['config']['hidden']}", changed_flags(summary["config"])]))
        + f" --continue-from {out} --out NEW_RUN --env-steps N",
    }
    write_text_atomic(out / "carry.json", json.dumps(info, indent=1) + "\n")
    return info


@dataclass
class BehaviourExportConfig:
    """Choose expert/medium checkpoints of a run, compute references, copy them to --out.

    ``spinrl behaviour export``; in Python :func:`export_set`.
    """

    run: str
    """run directory of `spinrl behaviour train`"""
    out: str
    """output folder, e.g. behaviour_checkpoints/cheetah-run-3"""
    select_top: int = SELECT_TOP
    """re-evaluate this many best checkpoints and medium candidates before choosing"""
    select_episodes: int = SELECT_EPISODES
    """fresh greedy episodes per re-evaluated checkpoint; 0 keeps the training evaluations' choice"""
    threads: int = 1
    """torch CPU threads for the policies' forward passes; more only spin beside other jobs"""

    def __post_init__(self) -> None:
        if self.select_top < 1 or self.select_episodes < 0:
            raise ConfigError(
                "--select-top must be >= 1 and --select-episodes >= 0 (0 keeps the training evaluations' choice)"
            )
        check_threads(self.threads)  # before the run folder is read


def export_set(cfg: BehaviourExportConfig) -> tuple[BehaviourSet, Path]:
    """Export the behaviour set of ``cfg.run`` to ``cfg.out``; returns the set (its ``index`` holds the choice)
    and the folder written."""
    bset = BehaviourSet(cfg.run)
    out = bset.export(cfg.out, top=cfg.select_top, episodes=cfg.select_episodes, threads=cfg.threads)
    return bset, out


@dataclass
class CarryConfig:
    """A run's state without its replay (a few MB), to continue it elsewhere with `spinrl behaviour train
    --continue-from`.

    ``spinrl behaviour carry``; in Python :func:`carry`.
    """

    run: str
    """run directory of `spinrl behaviour train`"""
    out: str
    """output folder, e.g. behaviour_checkpoints/carry/humanoid-stand-3"""
    overwrite: bool = False
    """write into --out even if it is a directory spinrl did not write (files spinrl did not write are kept)"""
