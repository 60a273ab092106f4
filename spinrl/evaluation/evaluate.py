"""Policy evaluation in the dataset's environment, batched across episodes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from spinrl import envs
from spinrl.evaluation.policy import Policy
from spinrl.evaluation.rollout import run_episodes
from spinrl.utils.checks import MAX_EPISODES, check_int, check_seed
from spinrl.utils.hardware import check_threads, torch_threads

EVAL_MODES = ("auto", "rollout", "exact")


@dataclass
class EvalResult:
    """Returns of the evaluated episodes; with ``exact`` one expected return computed on the env's model
    (no sampling error, so the stds are 0)."""

    returns: np.ndarray
    normalized: np.ndarray | None
    reference: dict | None
    exact: bool = False
    video: dict | None = None  # {"path", "frames", "return", "seed"} of a rendered episode (evaluate(video=...))

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
            "method": "exact" if self.exact else "rollout",
            "episodes": 0 if self.exact else int(len(self.returns)),
            "return_mean": self.mean,
            "return_std": self.std,
            "normalized_score": self.normalized_mean,
            "normalized_std": None if self.normalized is None else float(self.normalized.std()),
            "reference": self.reference,
            "returns": self.returns.tolist(),
            **({"video": self.video} if self.video else {}),
        }


def normalize(returns: np.ndarray, reference: dict | None) -> np.ndarray | None:
    """100 * (R - random) / (expert - random), or None without references."""
    if not reference or reference.get("random") is None or reference.get("expert") is None:
        return None
    return 100.0 * (np.asarray(returns) - reference["random"]) / (reference["expert"] - reference["random"])


def evaluate_act(
    act: Callable[[np.ndarray], np.ndarray],
    env_id: str | Any,
    env_kwargs: dict | None = None,
    episodes: int = 10,
    seed: int = 0,
    num_envs: int = 16,
    reference: dict | None = None,
) -> EvalResult:
    """Run ``episodes`` episodes with reset seeds ``seed + 100 + k`` (docs/method.md, section
    "Evaluation and time to target").
    ``env_id``: an env id, or a ``gymnasium.Env`` instance (checked, its episodes run one at a time)."""
    if isinstance(env_id, str):
        vec = envs.make_vector(env_id, min(num_envs, episodes), **(env_kwargs or {}))
    else:
        vec = envs.wrap(env_id)
    eps = run_episodes(vec, act, [seed + 100 + k for k in range(episodes)])
    return EvalResult(eps.returns, normalize(eps.returns, reference), reference)


def resolve_eval_mode(mode: str, env_id: str, env_kwargs: dict | None = None) -> str:
    """``auto`` -> ``exact`` where the env's model is known (sepsis: 10 sampled episodes of a 0/1 outcome
    cannot tell policies 0.1 apart), else ``rollout``; ``exact`` elsewhere is an error."""
    from spinrl.errors import ConfigError

    if mode not in EVAL_MODES:
        raise ConfigError(f"--eval-mode must be one of {', '.join(EVAL_MODES)}, got {mode!r}")
    known = envs.has_exact_return(env_id, **(env_kwargs or {}))
    if mode == "exact" and not known:
        raise ConfigError(f"--eval-mode exact: {env_id} has no known model (only sepsis has); use rollout or auto")
    if mode == "auto":
        return "exact" if known else "rollout"
    return mode


def exact_evaluate(
    policy: Policy,
    env_id: str,
    env_kwargs: dict | None = None,
    greedy: bool = False,
    reference: dict | None = None,
) -> EvalResult:
    """The policy's expected return from the env's model (``envs.exact_return``), as a one-value result:
    the action distributions are computed in closed form (``Policy.action_probs``), so nothing is sampled."""

    def probs(obs: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(obs, dtype=torch.float32, device=policy.device)
        return policy.action_probs(t, deterministic=greedy).cpu().numpy()

    ret = np.array([envs.exact_return(env_id, probs, **(env_kwargs or {}))])
    return EvalResult(ret, normalize(ret, reference), reference, exact=True)


def evaluate(
    policy: Policy | str | Path,
    env: str | Any | None = None,
    episodes: int = 10,
    seed: int = 0,
    greedy: bool = False,
    num_envs: int = 16,
    reference: dict | None = None,
    mode: str = "auto",
    threads: int | None = None,
    video: str | Path | None = None,
    **env_kwargs,
) -> EvalResult:
    """Evaluate a policy (object or ``policy.pt`` path) in its dataset's environment (or ``env``).

    Actions are sampled as in the paper unless ``greedy``; action sampling is seeded by ``seed``.
    ``env``: an env id (spinrl's, ``spinrl/Maze-v0``, or any registered Gymnasium id; ``module:ID``
    imports the module that registers it) or a ``gymnasium.Env`` instance, whose episodes run one at a
    time and which has no reference scores unless ``reference`` is given.
    ``mode`` (see ``resolve_eval_mode``): ``exact`` computes the expected return on the env's known model
    and ignores ``episodes``. ``threads``: torch CPU threads for the run (the caller's count is restored),
    1 beside another job; None keeps the process's. ``video``: an ``.mp4`` path (extra ``video``): episode 0
    (reset seed ``seed + 100``) is rolled out once more on its own and rendered (maze, dmc, or an env
    instance made with ``render_mode="rgb_array"``); the result's ``video`` describes it.
    """
    from spinrl.errors import ConfigError

    if not isinstance(episodes, int) or episodes <= 0:
        raise ConfigError(f"--episodes must be a positive integer, got {episodes!r}")
    check_int(episodes, "--episodes", hi=MAX_EPISODES)
    check_seed(seed)
    check_threads(threads)
    if video is not None:
        from spinrl.evaluation.video import check_video_path

        check_video_path(video)  # before any rollout: a bad path must not cost an evaluation
    with torch_threads(threads):
        return _evaluate(policy, env, episodes, seed, greedy, num_envs, reference, mode, env_kwargs, video)


def _evaluate(policy, env, episodes, seed, greedy, num_envs, reference, mode, env_kwargs, video=None) -> EvalResult:
    from spinrl.errors import ConfigError

    if not isinstance(policy, Policy):
        policy = Policy.load(policy)
    sig = policy.meta.get("signature", {})
    instance = env is not None and not isinstance(env, str)
    if instance:  # an env object: checked, stepped as a batch of one, no known model or references
        if env_kwargs:
            raise ConfigError(
                f"env options {sorted(env_kwargs)} apply to an env id, not to an env object; make the env with them"
            )
        if mode == "exact":
            raise ConfigError(
                "--mode exact needs an env id with a known model (sepsis), not an env object; use rollout or auto"
            )
        if video is not None and getattr(env, "render_mode", None) != "rgb_array":
            raise ConfigError(
                f"video: the env's render_mode is {getattr(env, 'render_mode', None)!r}; make it with "
                "render_mode='rgb_array'"
            )
        probe = envs.wrap(env)
        env_id = getattr(getattr(env, "spec", None), "id", None) or type(env).__name__
        kwargs: dict = {}
    else:
        env_id = env or sig.get("env_id")
        if env_id is None:
            raise ConfigError(
                "the policy's dataset names no environment; pass env='maze' (or another id) to evaluate it"
            )
        kwargs = env_kwargs if env else (env_kwargs or sig.get("env_kwargs") or {})
        probe = envs.make_vector(env_id, 1, **kwargs)
        probe.close()
    if (int(probe.observation_dim), [int(m) for m in probe.nvec]) != (policy.observation_dim, list(policy.nvec)):
        raise ConfigError(
            f"the policy was trained for {policy.observation_dim}-dim observations and nvec {list(policy.nvec)}, but "
            f"{env_id}{f' {kwargs}' if kwargs else ''} has "
            f"{int(probe.observation_dim)} and {[int(m) for m in probe.nvec]}; "
            "evaluate it in its own environment (drop --env and env options)"
        )
    video_env = None if video is None else env if instance else envs.make(env_id, render_mode="rgb_array", **kwargs)
    result = _run(
        policy,
        env_id,
        kwargs,
        probe if instance else None,
        episodes,
        seed,
        greedy,
        num_envs,
        reference,
        mode,
        env is None,
    )
    if video_env is not None:
        from spinrl.evaluation.video import record_video

        gen = torch.Generator(device=policy.device)
        gen.manual_seed(seed)
        result.video = record_video(
            video_env, lambda obs: policy.act(obs, deterministic=greedy, generator=gen), seed + 100, video
        )
        if not instance:
            video_env.close()
    return result


def _run(policy, env_id, kwargs, vec, episodes, seed, greedy, num_envs, reference, mode, own_env) -> EvalResult:
    """The evaluation proper: ``vec`` is a wrapped env object, or None to make ``env_id`` with ``kwargs``."""
    if vec is not None:
        gen = torch.Generator(device=policy.device)
        gen.manual_seed(seed)
        eps = run_episodes(
            vec,
            lambda obs: policy.act(obs, deterministic=greedy, generator=gen),
            [seed + 100 + k for k in range(episodes)],
        )
        return EvalResult(eps.returns, normalize(eps.returns, reference), reference)
    env = None if own_env else env_id
    if reference is None and env is None:
        reference = policy.meta.get("reference")
    if reference is None:
        ref = envs.reference_scores(env_id, **kwargs)
        reference = None if ref is None else {"random": ref.random, "expert": ref.expert, "source": ref.source}
    gen = torch.Generator(device=policy.device)
    gen.manual_seed(seed)
    if resolve_eval_mode(mode, env_id, kwargs) == "exact":
        return exact_evaluate(policy, env_id, kwargs, greedy, reference)

    def act(obs: np.ndarray) -> np.ndarray:
        return policy.act(obs, deterministic=greedy, generator=gen)

    return evaluate_act(act, env_id, kwargs, episodes, seed, num_envs, reference)
