"""Policy evaluation in the dataset's environment, batched across episodes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from spinrl import envs
from spinrl.evaluation.policy import Policy
from spinrl.evaluation.rollout import run_episodes


@dataclass
class EvalResult:
    returns: np.ndarray
    normalized: np.ndarray | None
    reference: dict | None

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def std(self) -> float:
        return float(self.returns.std())

    @property
    def normalized_mean(self) -> float | None:
        return None if self.normalized is None else float(self.normalized.mean())

    def as_dict(self) -> dict:
        return {
            "episodes": int(len(self.returns)),
            "return_mean": self.mean,
            "return_std": self.std,
            "normalized_score": self.normalized_mean,
            "normalized_std": None if self.normalized is None else float(self.normalized.std()),
            "reference": self.reference,
            "returns": self.returns.tolist(),
        }


def normalize(returns: np.ndarray, reference: dict | None) -> np.ndarray | None:
    """100 * (R - random) / (expert - random), or None without references."""
    if not reference or reference.get("random") is None or reference.get("expert") is None:
        return None
    return 100.0 * (np.asarray(returns) - reference["random"]) / (reference["expert"] - reference["random"])


def evaluate_act(
    act: Callable[[np.ndarray], np.ndarray],
    env_id: str,
    env_kwargs: dict | None = None,
    episodes: int = 10,
    seed: int = 0,
    num_envs: int = 16,
    reference: dict | None = None,
) -> EvalResult:
    """Run ``episodes`` episodes with reset seeds ``seed + 100 + k`` (method.md)."""
    vec = envs.make_vector(env_id, min(num_envs, episodes), **(env_kwargs or {}))
    eps = run_episodes(vec, act, [seed + 100 + k for k in range(episodes)])
    return EvalResult(eps.returns, normalize(eps.returns, reference), reference)


def evaluate(
    policy: Policy | str | Path,
    env: str | None = None,
    episodes: int = 10,
    seed: int = 0,
    greedy: bool = False,
    num_envs: int = 16,
    reference: dict | None = None,
    **env_kwargs,
) -> EvalResult:
    """Evaluate a policy (object or ``policy.pt`` path) in its dataset's environment (or ``env``).

    Actions are sampled as in the paper unless ``greedy``; action sampling is seeded by ``seed``.
    """
    from spinrl.errors import ConfigError

    if not isinstance(episodes, int) or episodes <= 0:
        raise ConfigError(f"--episodes must be a positive integer, got {episodes!r}")
    if not isinstance(policy, Policy):
        policy = Policy.load(policy)
    sig = policy.meta.get("signature", {})
    env_id = env or sig.get("env_id")
    if env_id is None:
        raise ConfigError("the policy's dataset names no environment; pass env='maze' (or another id) to evaluate it")
    kwargs = env_kwargs if env else (env_kwargs or sig.get("env_kwargs") or {})
    probe = envs.make_vector(env_id, 1, **kwargs)
    if (int(probe.observation_dim), [int(m) for m in probe.nvec]) != (policy.observation_dim, list(policy.nvec)):
        raise ConfigError(
            f"the policy was trained for {policy.observation_dim}-dim observations and nvec {list(policy.nvec)}, but "
            f"{env_id}{f' {kwargs}' if kwargs else ''} has {int(probe.observation_dim)} and {[int(m) for m in probe.nvec]}; "
            "evaluate it in its own environment (drop --env and env options)"
        )
    if reference is None and env is None:
        reference = policy.meta.get("reference")
    if reference is None:
        ref = envs.reference_scores(env_id, **kwargs)
        reference = None if ref is None else {"random": ref.random, "expert": ref.expert, "source": ref.source}
    gen = torch.Generator(device=policy.device)
    gen.manual_seed(seed)

    def act(obs: np.ndarray) -> np.ndarray:
        return policy.act(obs, deterministic=greedy, generator=gen)

    return evaluate_act(act, env_id, kwargs, episodes, seed, num_envs, reference)
