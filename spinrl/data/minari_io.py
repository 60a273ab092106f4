"""Export to and import from local Minari datasets (optional extra ``minari``).

A Minari episode stores L + 1 observations and L actions, rewards, terminations and truncations,
the same per-episode layout as :class:`~spinrl.data.OfflineDataset`, so the conversion is a
copy per episode. Our metadata travels as JSON in the Minari metadata key ``spinrl_meta``; the
reference scores also go to Minari's ``ref_min_score``/``ref_max_score``, and the environment to Minari's
``env_spec`` (spinrl's envs under their Gymnasium ids, e.g. ``spinrl/Maze-v0``), so that
``minari.load_dataset(id).recover_environment()`` rebuilds it after ``import spinrl``.

Datasets live under ``$MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``); nothing is downloaded.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from spinrl.data.constructors import from_episodes
from spinrl.data.dataset import OfflineDataset
from spinrl.data.storage import _json_default
from spinrl.errors import DatasetError, MissingExtraError

META_KEY = "spinrl_meta"


def _minari() -> Any:
    try:
        import minari
    except ImportError:
        raise MissingExtraError("minari", "minari") from None
    return minari


def _check_id(dataset_id: str) -> None:
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError):
        raise DatasetError(
            f"Minari dataset id {dataset_id!r} is malformed; use (namespace/)name-v<version>, "
            "e.g. spinrl/maze12/medium-expert-v0"
        ) from None


def env_spec_json(env_id: str | None, env_kwargs: dict | None) -> str | None:
    """Gymnasium's JSON spec of the dataset's environment, or None where it has none that Gymnasium can store."""
    if not env_id:
        return None
    import gymnasium as gym

    from spinrl.envs.registration import gymnasium_id

    gid, kw = gymnasium_id(env_id, env_kwargs or {})
    try:
        spec = gym.spec(gid)
        return dataclasses.replace(spec, kwargs={**spec.kwargs, **kw}).to_json()
    except (gym.error.Error, ValueError, TypeError, ModuleNotFoundError) as e:
        warnings.warn(
            f"Minari export: no env_spec for env_id {env_id!r} ({type(e).__name__}: {str(e)[:120]}); "
            "recover_environment will not rebuild it",
            stacklevel=3,
        )
        return None


def export_minari(ds: OfflineDataset, dataset_id: str, data_format: str = "hdf5") -> Path:
    """Create the local Minari dataset ``dataset_id`` from ``ds``; returns its directory.

    Action space ``MultiDiscrete(nvec)``, observation space ``Box(-inf, inf, obs_shape, float32)``.

    Raises:
        MissingExtraError: minari (or its storage backend, e.g. h5py for hdf5) is not installed.
        DatasetError: malformed id, or a dataset with that id already exists.
    """
    minari = _minari()
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer
    from minari.storage.datasets_root_dir import get_dataset_path

    _check_id(dataset_id)
    path = Path(get_dataset_path(dataset_id))
    if path.exists():
        raise DatasetError(f"a Minari dataset {dataset_id} already exists at {path}; choose another id or version")
    obs_shape = tuple(ds.observations.shape[1:])
    action_space = gym.spaces.MultiDiscrete(np.asarray(ds.nvec, dtype=np.int64))
    observation_space = gym.spaces.Box(-np.inf, np.inf, shape=obs_shape, dtype=np.float32)
    lengths = np.asarray(ds.episode_lengths, dtype=np.int64)
    t_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])

    def buffers():
        for e, (t0, L) in enumerate(zip(t_start, lengths)):
            o0 = t0 + e
            yield EpisodeBuffer(
                id=e,
                observations=np.asarray(ds.observations[o0 : o0 + L + 1], dtype=np.float32),
                actions=np.asarray(ds.actions[t0 : t0 + L], dtype=np.int64),
                rewards=np.asarray(ds.rewards[t0 : t0 + L], dtype=np.float64),
                terminations=np.asarray(ds.terminations[t0 : t0 + L], dtype=bool),
                truncations=np.asarray(ds.truncations[t0 : t0 + L], dtype=bool),
                infos={},
            )

    meta = copy.deepcopy(ds.meta)
    meta.pop("checksums", None)
    meta.pop("checksum", None)
    behaviour = meta.get("behaviour")
    description = (
        f"spinrl dataset: env {meta.get('env_id')} {meta.get('env_kwargs') or ''}, level {meta.get('level')}, "
        f"behaviour {behaviour}; {ds.num_episodes} episodes, {ds.num_transitions} transitions. "
        f"Full spinrl metadata is JSON in the '{META_KEY}' metadata key."
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # author/permalink/env_spec "recommended" notes
            mds = minari.create_dataset_from_buffers(
                dataset_id,
                buffer=[],
                env=None,
                action_space=action_space,
                observation_space=observation_space,
                algorithm_name=str(behaviour) if behaviour else "unknown",
                description=description,
                data_format=data_format,
                jpeg_encoding=False,
            )
            # Episode by episode, so a big dataset is never duplicated in memory as buffers.
            for buf in buffers():
                mds.storage.update_episodes([buf])
            extra: dict[str, Any] = {META_KEY: json.dumps(meta, sort_keys=True, default=_json_default)}
            spec = env_spec_json(meta.get("env_id"), meta.get("env_kwargs"))
            if spec is not None:
                extra["env_spec"] = spec
            ref = meta.get("reference") or {}
            if ref.get("random") is not None and ref.get("expert") is not None:
                extra["ref_min_score"] = float(ref["random"])
                extra["ref_max_score"] = float(ref["expert"])
            mds.storage.update_metadata(extra)
    except ImportError as e:
        shutil.rmtree(path, ignore_errors=True)
        raise MissingExtraError(getattr(e, "name", None) or "h5py", "minari") from None
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)  # never leave a half-written dataset behind
        raise
    return path


def import_minari(dataset_id: str) -> OfflineDataset:
    """Load the local Minari dataset ``dataset_id`` (MultiDiscrete actions, flat Box observations).

    Metadata written by :func:`export_minari` is restored; otherwise it is built from Minari's.

    Raises:
        MissingExtraError: minari is not installed.
        DatasetError: not found locally, action space not MultiDiscrete, observations not a Box.
    """
    minari = _minari()
    import gymnasium as gym

    _check_id(dataset_id)
    try:
        mds = minari.load_dataset(dataset_id, download=False)
    except FileNotFoundError:
        from minari.storage.datasets_root_dir import get_dataset_path

        raise DatasetError(
            f"Minari dataset {dataset_id} not found at {get_dataset_path(dataset_id)}; set MINARI_DATASETS_PATH "
            "or download it with 'minari download'"
        ) from None
    act_space = mds.action_space
    if not isinstance(act_space, gym.spaces.MultiDiscrete) or np.asarray(act_space.nvec).ndim != 1:
        raise DatasetError(
            f"Minari dataset {dataset_id} has action space {act_space}; spinrl imports only a 1-D MultiDiscrete "
            "action space (factored discrete actions)"
        )
    if np.any(np.asarray(act_space.start) != 0):
        raise DatasetError(f"MultiDiscrete start {act_space.start} is not 0; shift actions to start at 0 first")
    obs_space = mds.observation_space
    if not isinstance(obs_space, gym.spaces.Box):
        raise DatasetError(
            f"Minari dataset {dataset_id} has observation space "
            f"{obs_space}; spinrl imports only a Box observation space"
        )
    obs_l, act_l, rew_l, term_l, trunc_l, lens = [], [], [], [], [], []
    for ep in mds.iterate_episodes():
        L = len(ep.rewards)
        o = np.asarray(ep.observations)
        if o.shape[0] != L + 1:
            raise DatasetError(f"Minari episode {ep.id} has {o.shape[0]} observations for {L} steps (expected {L + 1})")
        obs_l.append(o.astype(np.float32, copy=False))
        act_l.append(np.asarray(ep.actions).reshape(L, -1))
        rew_l.append(np.asarray(ep.rewards, dtype=np.float32))
        term_l.append(np.asarray(ep.terminations, dtype=bool))
        trunc_l.append(np.asarray(ep.truncations, dtype=bool))
        lens.append(L)
    if not lens:
        raise DatasetError(f"Minari dataset {dataset_id} has no episodes")
    raw = mds.storage.metadata
    if META_KEY in raw:
        meta = json.loads(raw[META_KEY])
    else:
        spec = raw.get("env_spec")
        env_id = None
        if spec:
            try:
                env_id = json.loads(spec).get("id") if isinstance(spec, str) else getattr(spec, "id", None)
            except (ValueError, AttributeError):
                env_id = None
        meta = {"env_id": env_id, "env_kwargs": {}, "level": None, "behaviour": raw.get("algorithm_name")}
        if raw.get("ref_min_score") is not None and raw.get("ref_max_score") is not None:
            meta["reference"] = {
                "random": float(raw["ref_min_score"]),
                "expert": float(raw["ref_max_score"]),
                "source": f"minari {dataset_id}",
            }
    meta["nvec"] = [int(m) for m in act_space.nvec]
    meta.pop("checksums", None)
    meta.pop("checksum", None)
    gen = meta.get("generator")
    gen = dict(gen) if isinstance(gen, dict) else {}
    gen.setdefault("imported_from", f"minari:{dataset_id}")
    gen["minari_dataset_id"] = dataset_id
    meta["generator"] = gen
    return from_episodes(
        np.concatenate(obs_l),
        np.concatenate(act_l).astype(np.int64),
        np.concatenate(rew_l),
        np.concatenate(term_l),
        np.concatenate(trunc_l),
        np.asarray(lens, dtype=np.int64),
        meta,
    )
