"""Batched episode rollouts: one policy call per step for a whole batch of episodes.

DM Control physics cannot batch, so vectorization here means batching the *policy*; Maze and CoNE
also step all episodes in one numpy call (see ``spinrl.envs.make_vector``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np


@dataclass
class Episodes:
    """Recorded episodes in the dataset's native layout (L + 1 observations per episode)."""

    returns: np.ndarray
    lengths: np.ndarray
    observations: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[np.ndarray] = field(default_factory=list)
    terminated: list[bool] = field(default_factory=list)


def run_episodes(
    vec_env,
    act: Callable[[np.ndarray], np.ndarray],
    seeds: Sequence[int],
    record: bool = False,
    on_episode: Callable[[int], None] | None = None,
) -> Episodes:
    """Run ``len(seeds)`` episodes, ``vec_env.num_envs`` at a time, episode k reset with ``seeds[k]``.

    Args:
        vec_env: from ``spinrl.envs.make_vector``; ended rows keep reporting done until reset.
        act: batched policy, obs [B, obs_dim] -> actions [B, N].
        seeds: one reset seed per episode.
        record: keep observations, actions and rewards (for dataset generation).
        on_episode: called with the number of steps of each finished episode (progress bars).
    """
    seeds = list(seeds)
    B = vec_env.num_envs
    out = Episodes(returns=np.zeros(len(seeds)), lengths=np.zeros(len(seeds), dtype=np.int64))
    for lo in range(0, len(seeds), B):
        chunk = seeds[lo : lo + B]
        obs = vec_env.reset(list(chunk) + [chunk[-1]] * (B - len(chunk)))
        n = len(chunk)
        active = np.zeros(B, dtype=bool)
        active[:n] = True
        ret = np.zeros(B)
        length = np.zeros(B, dtype=np.int64)
        term_flag = np.zeros(B, dtype=bool)
        obs_hist, act_hist, rew_hist = [obs.copy()], [], []
        while active.any():
            a = np.asarray(act(obs))
            obs, r, te, tr = vec_env.step(a)
            ret += np.where(active, r, 0.0)
            length += active
            if record:
                obs_hist.append(obs.copy())
                act_hist.append(a.copy())
                rew_hist.append(np.asarray(r, dtype=np.float64).copy())
            done = active & (te | tr)
            term_flag |= done & te
            if on_episode is not None:
                for j in np.flatnonzero(done):
                    on_episode(int(length[j]))
            active &= ~done
        out.returns[lo : lo + n] = ret[:n]
        out.lengths[lo : lo + n] = length[:n]
        if record:
            S, A, R = np.stack(obs_hist), np.stack(act_hist), np.stack(rew_hist)
            for i in range(n):  # assembly per finished episode, not per step
                L = int(length[i])
                out.observations.append(S[: L + 1, i])
                out.actions.append(A[:L, i])
                out.rewards.append(R[:L, i])
                out.terminated.append(bool(term_flag[i]))
    return out
