"""Environment rollouts into a dataset: ``spinrl.collect`` for any Gymnasium env with a MultiDiscrete
action space."""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np

from spinrl.data.constructors import from_episodes
from spinrl.data.dataset import OfflineDataset
from spinrl.errors import DatasetError


def collect(
    env: Any,
    policy: Callable[[np.ndarray], Any],
    episodes: int,
    seed: int = 0,
    progress: bool = True,
    **meta: Any,
) -> OfflineDataset:
    """Roll out ``policy(obs) -> action`` in any Gymnasium env with a ``MultiDiscrete`` action space.

    Episode k is reset with seed ``seed + k``. Extra keyword arguments go into the metadata. An env made by
    ``gymnasium.make`` records its id and options (``env.spec``) as ``env_id``/``env_kwargs`` unless given,
    so training can evaluate on it (in another process, an id registered by your module is ``module:ID``).
    """
    import gymnasium as gym

    if not isinstance(env.action_space, gym.spaces.MultiDiscrete):
        raise DatasetError(
            f"collect needs a MultiDiscrete action space, the env has {type(env.action_space).__name__}; "
            "discretize it first (e.g. spinrl.envs.make('dmc:...', bins=3))"
        )
    if episodes <= 0:
        raise DatasetError(f"episodes must be positive, got {episodes}")
    nvec = np.asarray(env.action_space.nvec).reshape(-1)
    obs_l, act_l, rew_l, term_l, trunc_l, lens = [], [], [], [], [], []
    from spinrl.utils.progress import progress_bar

    bar = progress_bar(total=episodes, desc="collect", unit="ep", disable=not progress)
    for k in range(episodes):
        o, _ = env.reset(seed=seed + k)
        ep_obs = [np.asarray(o, dtype=np.float32).reshape(-1)]
        n = 0
        while True:
            a = np.asarray(policy(o)).reshape(-1)
            if not np.issubdtype(a.dtype, np.integer):  # 0.7 would be truncated to 0 without a word
                if not (np.issubdtype(a.dtype, np.number) and np.isfinite(a).all() and (a == np.round(a)).all()):
                    raise DatasetError(
                        f"policy returned non-integer action {a.tolist()[:8]} in episode {k}; "
                        "return sub-action indices (integers in [0, nvec))"
                    )
            o, r, te, tr, _ = env.step(a)
            ep_obs.append(np.asarray(o, dtype=np.float32).reshape(-1))
            act_l.append(a.astype(np.int64))
            rew_l.append(float(r))
            term_l.append(bool(te))
            trunc_l.append(bool(tr) and not bool(te))
            n += 1
            if te or tr:
                break
        obs_l.extend(ep_obs)
        lens.append(n)
        bar.update(1)
    bar.close()
    env_id, env_kwargs = meta.pop("env_id", None), meta.pop("env_kwargs", None)
    spec = getattr(env, "spec", None)
    if env_id is None and spec is not None:  # made by gymnasium.make: its id and options rebuild it for evaluation
        env_id = spec.id
        if env_kwargs is None:
            env_kwargs = {k: v for k, v in (spec.kwargs or {}).items() if k != "render_mode"}
            try:
                json.dumps(env_kwargs)
            except TypeError:
                raise DatasetError(
                    f"the env's options {sorted(env_kwargs)} are not JSON values; pass env_kwargs= "
                    "with the JSON options that rebuild it (or env_kwargs={})"
                ) from None
    md = {
        "env_id": env_id,
        "env_kwargs": env_kwargs or {},
        "nvec": [int(m) for m in nvec],
        "generator": {"function": "spinrl.data.collect", "episodes": episodes, "seed": seed},
        **meta,
    }
    return from_episodes(
        np.stack(obs_l), np.stack(act_l), np.array(rew_l), np.array(term_l), np.array(trunc_l), np.array(lens), md
    )
