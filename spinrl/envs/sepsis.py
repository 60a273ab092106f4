"""ICU-Sepsis (docs/benchmarks.md section 4), re-implemented as a vectorized tabular MDP.

We read the package's ``dynamics.npz`` without importing ``icu_sepsis`` (its import pulls the old
``gym`` and prints a deprecation banner). Action index = fluid * 5 + vaso, the package's convention.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from typing import Sequence

import numpy as np

from spinrl.envs.core import counter_uniform, seed_keys
from spinrl.errors import MissingExtraError, SpinError

TERMINAL_STATES = (713, 714, 715)  # death, survival, s_inf (package constants)
MAX_STEPS = 500  # package's MAX_EPISODE_STEPS
# exact_values() on icu-sepsis 2.0.1 (6 s to recompute; tests/test_envs.py checks it)
SEPSIS_EXACT = {"random": 0.7800709044, "clinicians": 0.7818448901, "optimal": 0.8751416995}


@lru_cache(maxsize=1)
def load_dynamics() -> dict[str, np.ndarray]:
    """The package's MDP arrays (cached); raises MissingExtraError when the extra is absent."""
    spec = importlib.util.find_spec("icu_sepsis")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("icu-sepsis", "sepsis")
    root = list(spec.submodule_search_locations)[0]
    path = os.path.join(root, "envs", "assets", "dynamics.npz")
    if not os.path.exists(path):
        raise SpinError(
            f"icu-sepsis is installed but {path} is missing; reinstall with: pip install --force-reinstall icu-sepsis"
        )
    with np.load(path) as d:
        out = {k: np.asarray(d[k]) for k in ("tx_mat", "r_mat", "d_0", "expert_policy", "state_cluster_centers")}
    out["tx_cum"] = np.cumsum(out["tx_mat"], axis=2)
    out["d0_cum"] = np.cumsum(out["d_0"])
    out["features"] = out["state_cluster_centers"].astype(np.float32)
    return out


def _sample(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling, rows of ``cum`` [B, S] with uniforms ``u`` [B]."""
    idx = (cum < (u * cum[:, -1])[:, None]).sum(1)
    return np.minimum(idx, cum.shape[1] - 1)


class SepsisCore:
    """Vectorized ICU-Sepsis dynamics over B patients (counter-based randomness per env)."""

    max_steps = MAX_STEPS

    def __init__(self, num_envs: int):
        self.dyn = load_dynamics()
        self.nvec = np.array([5, 5], dtype=np.int64)
        self.observation_dim = int(self.dyn["features"].shape[1])
        self.state = np.zeros(num_envs, dtype=np.int64)
        self.keys = seed_keys([0] * num_envs)

    def reset(self, seeds: Sequence[int]) -> None:
        self.keys = seed_keys(seeds)
        u = counter_uniform(self.keys, 0, 7)
        self.state = _sample(np.broadcast_to(self.dyn["d0_cum"], (len(seeds), self.dyn["d0_cum"].size)), u)

    def step(self, actions: np.ndarray, alive: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = actions[:, 0] * 5 + actions[:, 1]
        s = self.state
        nxt = _sample(self.dyn["tx_cum"][s, a], counter_uniform(self.keys, t + 1, 0))
        reward = self.dyn["r_mat"][s, a, nxt]
        self.state = np.where(alive, nxt, s)
        return reward, np.isin(nxt, TERMINAL_STATES)

    def observe(self) -> np.ndarray:
        return self.dyn["features"][self.state]


def state_index(obs: np.ndarray) -> np.ndarray:
    """Exact inverse of the observation: the state whose feature centre equals each row (vectorized)."""
    f = load_dynamics()["features"]  # terminal states share the zero vector and map to 713 (death)
    o = np.asarray(obs, dtype=np.float32)
    d2 = (o * o).sum(1, keepdims=True) - 2 * o @ f.T + (f * f).sum(1)
    idx = d2.argmin(1)
    if not np.allclose(f[idx], o, atol=1e-5):
        raise SpinError("sepsis obs: a row matches no state's feature centre; pass observations from the sepsis env")
    return idx


def sepsis_policy_act(p_random: float = 0.0):
    """Clinicians' policy (``expert_policy``), replaced by a uniform action with probability p_random."""
    pol = load_dynamics()["expert_policy"]
    cum = np.cumsum(np.where(pol.sum(1, keepdims=True) > 0, pol, 1.0), axis=1)

    def act(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        a = _sample(cum[state_index(obs)], rng.random(len(obs)))
        a = np.where(rng.random(a.size) < p_random, rng.integers(0, 25, a.size), a)
        return np.stack([a // 5, a % 5], axis=1).astype(np.int64)

    return act


def policy_value(probs_SA: np.ndarray | None) -> float:
    """Exact expected return from the initial distribution of a policy given as action probabilities per
    state [716, 25] (action = fluid * 5 + vaso), or of the optimal policy for None (value iteration).

    Finite horizon = the episode cap; the probabilities of terminal states are ignored.
    """
    d = load_dynamics()
    P, R = d["tx_mat"], d["r_mat"]
    if probs_SA is not None:
        probs_SA = np.asarray(probs_SA, dtype=np.float64)
        if probs_SA.shape != P.shape[:2]:
            raise SpinError(f"sepsis policy_value: probabilities must have shape {P.shape[:2]}, got {probs_SA.shape}")
    exp_r = (P * R).sum(2)  # [S, A] expected immediate reward
    live = np.ones(P.shape[0])
    live[list(TERMINAL_STATES)] = 0.0
    if probs_SA is not None:  # the policy's own chain: [S, S] instead of [S * A, S] per backup
        P_pi, r_pi = np.einsum("sa,sat->st", probs_SA, P) * live, (probs_SA * exp_r).sum(1)
    else:
        P2 = np.ascontiguousarray(P.reshape(-1, P.shape[2])) * live
    v = np.zeros(P.shape[0])
    for _ in range(MAX_STEPS):
        new = r_pi + P_pi @ v if probs_SA is not None else (exp_r + (P2 @ v).reshape(exp_r.shape)).max(1)
        if np.abs(new - v).max() < 1e-10:
            break
        v = new
    return float(d["d_0"] @ v)


def all_state_observations() -> np.ndarray:
    """The observation of every state [716, 47] (row s is state s; terminal states share the zero vector)."""
    return load_dynamics()["features"]


@lru_cache(maxsize=1)
def exact_values() -> dict[str, float]:
    """Exact expected returns from the initial distribution (policy evaluation on the known MDP).

    ``optimal`` comes from value iteration. Why it matters: in ICU-Sepsis the clinicians' policy
    scores about the same as uniform random (~0.78), so only the optimal value (~0.88) gives a usable
    normalisation range.
    """
    pol = load_dynamics()["expert_policy"]
    pol = np.where(pol.sum(1, keepdims=True) > 0, pol, 1.0 / pol.shape[1])
    return {
        "random": policy_value(np.full_like(pol, 1.0 / pol.shape[1])),
        "clinicians": policy_value(pol),
        "optimal": policy_value(None),
    }
