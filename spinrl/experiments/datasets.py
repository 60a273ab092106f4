"""``spinrl data make``: offline datasets from scripted or learned behaviour policies, batched."""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import numpy as np

from spinrl import envs
from spinrl.data import OfflineDataset, from_episodes
from spinrl.data.cache import data_dir, dataset_name
from spinrl.errors import ConfigError
from spinrl.utils.checks import check_int, check_seed
from spinrl.utils.hardware import check_threads
from spinrl.utils.progress import progress_bar

if TYPE_CHECKING:
    import gymnasium as gym

    from spinrl.evaluation.rollout import Episodes

LEVELS = ("random", "medium", "expert", "medium-expert", "random-medium-expert")
SOURCES = {
    "random": ("random",),
    "medium": ("medium",),
    "expert": ("expert",),
    "medium-expert": ("medium", "expert"),
    "random-medium-expert": ("random", "medium", "expert"),
}


@dataclass
class DataMakeConfig:
    """Generate an offline dataset in an environment with behaviour policies of a given level."""

    env: str = "maze"
    """environment id: maze, cone, sepsis or dmc:<domain>-<task> (see `spinrl envs`)"""
    level: Literal["random", "medium", "expert", "medium-expert", "random-medium-expert"] = "medium-expert"
    """random | medium | expert | medium-expert (half each) | random-medium-expert (whole episodes, thirds)"""
    episodes: int | None = None
    """number of episodes (give this or --transitions)"""
    transitions: int | None = None
    """exact number of transitions (the last episode of each source is cut short and marked truncated)"""
    seed: int = 0
    """seed of the behaviour policies' randomness and of every episode reset"""
    out: str | None = None
    """output dataset directory (default: a named directory under $SPINRL_DATA)"""
    overwrite: bool = False
    """write into --out even if it is a directory spinrl did not write as a dataset (its other files are kept)"""
    env_kwargs: dict = field(default_factory=dict)
    """environment keyword arguments, e.g. actuators=12 (given on the CLI as --actuators 12)"""
    num_envs: int = 64
    """episodes stepped together (one batched policy call per step)"""
    rme_fractions: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    """random-medium-expert: share of episodes/transitions from random, medium and expert"""
    progress: bool = True
    """show a progress bar on a terminal"""
    threads: int = 1
    """torch CPU threads for the behaviour policies' batched forward passes (restored afterwards); the nets are
    small, so more threads only add synchronisation, and on a busy machine spinning threads slow them many-fold"""
    behaviour: str | None = None
    """dmc only: behaviour directory (a `spinrl behaviour train` run or an exported set) supplying the medium
    and expert DecQN policies (default: <task>-<bins> in $SPINRL_BEHAVIOUR_SETS, else in ./behaviour_checkpoints)"""

    def validate(self) -> None:
        if self.level not in LEVELS:
            raise ConfigError(f"--level {self.level!r} is unknown; choose one of {', '.join(LEVELS)}")
        if (self.episodes is None) == (self.transitions is None):
            raise ConfigError("give exactly one of --episodes N or --transitions N")
        n = self.episodes if self.episodes is not None else self.transitions
        name = "--episodes" if self.episodes is not None else "--transitions"
        check_int(n, name, hi=10**10)
        check_seed(self.seed)
        if self.num_envs <= 0:
            raise ConfigError(f"--num-envs must be positive, got {self.num_envs}")
        check_int(self.threads, "--threads")
        check_threads(self.threads)
        if self.behaviour is not None and not str(self.env).startswith("dmc:"):
            raise ConfigError(
                f"--behaviour is for dmc tasks; {self.env} has scripted medium/expert policies, drop --behaviour"
            )
        if str(self.env).startswith("dmc:") and self.level != "random" and self.resolved_behaviour() is None:
            from spinrl.experiments.behaviour_sets import SETS_VARIABLE, sets_root

            raise ConfigError(
                f"--level {self.level} on {self.env} needs --behaviour DIR (no set {self.env[4:]}-"
                f"{self.env_kwargs.get('bins', 3)} in {sets_root()}; set {SETS_VARIABLE} to a folder of "
                "behaviour sets, default ./behaviour_checkpoints, "
                "or train one with `spinrl behaviour train`)"
            )
        fr = np.asarray(self.rme_fractions, dtype=float)
        if fr.shape != (3,) or np.any(fr < 0) or fr.sum() <= 0:
            raise ConfigError("--rme-fractions must be three non-negative numbers (random, medium, expert)")

    def resolved_behaviour(self) -> str | None:
        """--behaviour, else for dmc <task>-<bins> in $SPINRL_BEHAVIOUR_SETS or ./behaviour_checkpoints (if any)."""
        if self.behaviour is not None or not str(self.env).startswith("dmc:"):
            return self.behaviour
        from spinrl.experiments.behaviour_sets import committed_set

        found = committed_set(self.env, self.env_kwargs.get("bins", 3))
        return None if found is None else str(found)

    def default_out(self) -> Path:
        size = f"{self.transitions}t" if self.transitions is not None else f"{self.episodes}ep"
        behaviour = self.resolved_behaviour()
        if behaviour:  # digest of the chosen policies and the reference rule: never reuse a stale cached dataset
            from spinrl.experiments.behaviour_sets import BehaviourSet, reference_rule

            prov = BehaviourSet(behaviour, env=self.env, bins=self.env_kwargs.get("bins", 3)).provenance()
            if self.level == "random":  # random data depend on the set only through the expert's reference
                prov = {k: v for k, v in prov.items() if k == "expert"}
            key = {**{k: v["sha256"] for k, v in sorted(prov.items())}, "reference_rule": reference_rule()}
            digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()
            size += f"-{Path(behaviour).resolve().name}-{digest[:8]}"
        return data_dir() / dataset_name(self.env, self.env_kwargs, self.level, size, self.seed)


def _split(total: int, fractions: np.ndarray) -> list[int]:
    """Integer shares of ``total`` proportional to ``fractions`` that sum exactly to ``total``."""
    raw = fractions / fractions.sum() * total
    base = np.floor(raw).astype(int)
    base[np.argsort(-(raw - base))[: total - base.sum()]] += 1
    return base.tolist()


def _trim(eps: Episodes, n_transitions: int) -> Episodes:
    """Keep whole episodes up to ``n_transitions``; cut the last one short and mark it truncated."""
    from spinrl.evaluation.rollout import Episodes

    out = Episodes(returns=np.zeros(0), lengths=np.zeros(0, dtype=np.int64))
    left = n_transitions
    for o, a, r, t in zip(eps.observations, eps.actions, eps.rewards, eps.terminated):
        if left <= 0:
            break
        L = min(len(a), left)
        out.observations.append(o[: L + 1])
        out.actions.append(a[:L])
        out.rewards.append(r[:L])
        out.terminated.append(t and L == len(a))
        left -= L
    return out


def generate(cfg: DataMakeConfig, progress: bool | None = None) -> OfflineDataset:
    """Roll out the level's behaviour policies and return the dataset (not yet saved)."""
    cfg.validate()
    from spinrl.utils.hardware import torch_threads

    # torch runs only the DecQN behaviour policies of a behaviour set: scripted policies never load it
    with torch_threads(cfg.threads) if cfg.resolved_behaviour() else nullcontext():
        return _generate(cfg, progress)


def _generate(cfg: DataMakeConfig, progress: bool | None) -> OfflineDataset:
    vec = envs.make_vector(cfg.env, cfg.num_envs, **cfg.env_kwargs)  # first: a missing extra fails before torch loads
    from spinrl.evaluation.rollout import Episodes, run_episodes

    sources = SOURCES[cfg.level]
    if cfg.level == "random-medium-expert":
        fractions = np.asarray(cfg.rme_fractions, dtype=float)
    else:
        fractions = np.ones(len(sources))
    total = cfg.episodes if cfg.episodes is not None else cfg.transitions
    assert total is not None  # validate(): exactly one of episodes and transitions
    shares = _split(int(total), fractions)
    unit = "ep" if cfg.episodes is not None else "transitions"
    show = cfg.progress if progress is None else progress
    bar = progress_bar(
        total=int(total), desc=f"data make {cfg.env} {cfg.level}", unit=unit, disable=None if show else True
    )
    parts: list[Episodes] = []
    counts: list[list] = []  # [source, episodes] in dataset order, so levels can be summarised per source
    descriptions = {}
    t0 = time.time()
    bset = None
    behaviour = cfg.resolved_behaviour()
    if behaviour is not None:
        from spinrl.experiments.behaviour_sets import BehaviourSet

        bset = BehaviourSet(behaviour, env=cfg.env, bins=cfg.env_kwargs.get("bins", 3))
        for src in sources:  # fail before any rollout if a level has no checkpoint
            if src != "random":
                bset.checkpoint(src)
    for j, (src, share) in enumerate(zip(sources, shares)):
        if share == 0:
            continue
        if bset is not None and src != "random":
            policy = bset.policy(src)
        else:
            policy = envs.behaviour_policy(cfg.env, src, **cfg.env_kwargs)
        descriptions[src] = policy.description
        rng = np.random.default_rng([cfg.seed, j])
        seed_base = (cfg.seed * 7919 + j) * 1_000_003

        def act(obs, _p=policy, _r=rng):
            return _p.act(obs, _r)

        collected = Episodes(returns=np.zeros(0), lengths=np.zeros(0, dtype=np.int64))
        done_units = 0
        k = 0
        while done_units < share:
            n_ep = (share - done_units) if cfg.episodes is not None else cfg.num_envs
            n_ep = min(n_ep, cfg.num_envs) if cfg.episodes is None else n_ep
            seeds = [seed_base + k + i for i in range(n_ep)]
            if cfg.env.startswith("dmc:"):  # MuJoCo tasks seed a legacy RandomState: 32-bit seeds only
                seeds = [x % 2**32 for x in seeds]
            k += n_ep
            eps = run_episodes(
                vec,
                act,
                seeds,
                record=True,
                on_episode=(lambda L: bar.update(1)) if cfg.episodes is not None else None,
            )
            for name in ("observations", "actions", "rewards", "terminated"):
                getattr(collected, name).extend(getattr(eps, name))
            if cfg.episodes is not None:
                done_units += n_ep
            else:
                got = int(eps.lengths.sum())
                bar.update(min(got, share - done_units))
                done_units += got
        if cfg.transitions is not None:
            collected = _trim(collected, share)
        parts.append(collected)
        counts.append([src, len(collected.actions)])
    bar.close()
    obs = [o for p in parts for o in p.observations]
    acts = [a for p in parts for a in p.actions]
    rews = [r for p in parts for r in p.rewards]
    terms = [t for p in parts for t in p.terminated]
    lengths = np.array([len(a) for a in acts], dtype=np.int64)
    term_arr = np.zeros(int(lengths.sum()), dtype=bool)
    trunc_arr = np.zeros(int(lengths.sum()), dtype=bool)
    ends = np.cumsum(lengths) - 1
    term_arr[ends] = np.asarray(terms, dtype=bool)
    trunc_arr[ends] = ~np.asarray(terms, dtype=bool)
    if bset is not None:  # our own references for our own datasets (docs/benchmarks.md s.1)
        r = bset.reference()
        ref: envs.ReferenceScores | None = envs.ReferenceScores(r["random"], r["expert"], r["source"])
    else:
        ref = envs.reference_scores(cfg.env, **cfg.env_kwargs)
    gen = asdict(cfg)
    gen["out"] = None
    gen["behaviour"] = behaviour
    gen.pop("progress", None)
    gen["wall_seconds"] = round(time.time() - t0, 3)
    meta = {
        "env_id": cfg.env,
        "env_kwargs": dict(cfg.env_kwargs),
        "nvec": [int(m) for m in vec.nvec],
        "level": cfg.level,
        "behaviour": descriptions,
        "episode_sources": counts,
        **({"behaviour_checkpoints": bset.provenance(), "public_reference": _public(cfg)} if bset is not None else {}),
        "generator": gen,
        "reference": None if ref is None else {"random": ref.random, "expert": ref.expert, "source": ref.source},
    }
    return from_episodes(
        np.concatenate(obs).astype(np.float32),
        np.concatenate(acts).astype(np.int64),
        np.concatenate(rews),
        term_arr,
        trunc_arr,
        lengths,
        meta,
    )


def _public(cfg: DataMakeConfig) -> dict | None:
    """The public benchmark's references for comparison (our scores use our own references)."""
    ref = envs.reference_scores(cfg.env, **cfg.env_kwargs)
    return None if ref is None else {"random": ref.random, "expert": ref.expert, "source": ref.source}


def make_dataset(cfg: DataMakeConfig, progress: bool | None = None) -> Path:
    """Generate and save atomically; returns the dataset path."""
    ds = generate(cfg, progress=progress)
    out = Path(cfg.out) if cfg.out else cfg.default_out()
    return ds.save(out, overwrite=cfg.overwrite)


def cached_dataset(cfg: DataMakeConfig, progress: bool | None = None) -> Path:
    """The dataset for ``cfg`` from the cache, generated on first use."""
    out = Path(cfg.out) if cfg.out else cfg.default_out()
    if (out / "meta.json").exists():
        return out
    return make_dataset(cfg, progress=progress)


# ------------------------------------------------------------------ the other data verbs: one config each
@dataclass
class DataInfoConfig:
    """Summary of a dataset (episodes, returns, normalized score, action histograms).

    ``spinrl data info``; in Python ``load_dataset(cfg.path, verify=cfg.verify).summary()``.
    """

    path: str
    """dataset directory"""
    verify: bool = True
    """check the checksums (--no-verify skips it: faster on huge datasets)"""


@dataclass
class DataValidateConfig:
    """Verify a dataset's checksums and contents (and with --env its fit to the environment).

    ``spinrl data validate``; in Python :func:`validate_dataset`, which raises a one-line error on any problem.
    """

    path: str
    """dataset directory"""
    env: bool = False
    """also check against the environment"""


def validate_dataset(cfg: DataValidateConfig) -> OfflineDataset:
    """Load ``cfg.path`` with every check (and compare it with its environment if ``cfg.env``); returns it."""
    from spinrl.data import load
    from spinrl.errors import SpinError

    ds = load(cfg.path, verify=True)
    if cfg.env:
        if ds.env_id is None:
            raise SpinError(f"{cfg.path} names no environment (meta.json env_id); drop --env")
        env = envs.make(ds.env_id, **ds.env_kwargs)
        obs_dim = int(cast(tuple[int, ...], env.observation_space.shape)[0])
        if obs_dim != ds.observation_dim:
            raise SpinError(
                f"observations have {ds.observation_dim} features but {ds.env_id} produces {obs_dim}; "
                "the dataset belongs to another environment or kwargs"
            )
        nvec = [int(m) for m in cast("gym.spaces.MultiDiscrete", env.action_space).nvec]
        if nvec != list(ds.nvec):
            raise SpinError(f"nvec {list(ds.nvec)} does not match {ds.env_id}'s action space {nvec}")
    return ds


@dataclass
class ImportDmcConfig:
    """Import the public factorised-DMC pickle format (restricted unpickler).

    ``spinrl data import-dmc``; in Python :func:`import_dmc`.
    """

    path: str
    """file <root>/<bins>_bins/<domain>-<task>-<level>"""
    out: str
    """output dataset directory"""
    env: str | None = None
    """env id (default: inferred from the file name)"""
    bins: int | None = None
    """bins per dimension (default: from the <bins>_bins folder)"""
    level: str | None = None
    """dataset level (default: inferred from the file name)"""
    done_means: Literal["auto", "truncation", "termination"] = "auto"
    """how to read the done flag: auto = truncation when the episode ran to the time limit, else termination
    (DMC never terminates: pass truncation for DMC files with short episodes)"""
    time_limit: int | None = None
    """episode time limit for --done-means auto (dmc: 1000)"""
    overwrite: bool = False
    """write into --out even if it is a directory spinrl did not write (files spinrl did not write are kept)"""


def import_dmc(cfg: ImportDmcConfig) -> tuple[Path, str]:
    """Import and save ``cfg.path``; returns the dataset directory and the import report."""
    from spinrl.data.interop import import_public_dmc

    ds, report = import_public_dmc(
        cfg.path, env_id=cfg.env, bins=cfg.bins, level=cfg.level, done_means=cfg.done_means, time_limit=cfg.time_limit
    )
    return ds.save(cfg.out, overwrite=cfg.overwrite), report


@dataclass
class ExportDmcConfig:
    """Export a dataset to the public pickle layout <root>/<bins>_bins/<domain>-<task>-<level>.

    ``spinrl data export-dmc``; in Python :func:`export_dmc`.
    """

    path: str
    """dataset directory"""
    root: str
    """root folder of the public layout"""


def export_dmc(cfg: ExportDmcConfig) -> Path:
    """Write the dataset at ``cfg.path`` under ``cfg.root``; returns the file written."""
    from spinrl.data import load
    from spinrl.data.interop import export_public_dmc

    return export_public_dmc(load(cfg.path), cfg.root)


@dataclass
class ExportMinariConfig:
    """Export a dataset to a local Minari dataset (extra: minari).

    ``spinrl data export-minari``; in Python :func:`export_to_minari`.
    """

    path: str
    """dataset directory"""
    dataset_id: str
    """Minari id, e.g. spinrl/maze12/medium-expert-v0"""


def export_to_minari(cfg: ExportMinariConfig) -> Path:
    """Create the local Minari dataset ``cfg.dataset_id``; returns its directory."""
    from spinrl.data import load
    from spinrl.data.minari_io import export_minari

    return export_minari(load(cfg.path), cfg.dataset_id)


@dataclass
class ImportMinariConfig:
    """Import a local Minari dataset with a MultiDiscrete action space (extra: minari).

    ``spinrl data import-minari``; in Python :func:`import_from_minari`.
    """

    dataset_id: str
    """Minari id of a local dataset"""
    out: str
    """output dataset directory"""
    overwrite: bool = False
    """write into --out even if it is a directory spinrl did not write (files spinrl did not write are kept)"""


def import_from_minari(cfg: ImportMinariConfig) -> tuple[Path, OfflineDataset]:
    """Import and save ``cfg.dataset_id``; returns the dataset directory and the dataset."""
    from spinrl.data.minari_io import import_minari

    ds = import_minari(cfg.dataset_id)
    return ds.save(cfg.out, overwrite=cfg.overwrite), ds
