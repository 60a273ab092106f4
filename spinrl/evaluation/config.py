"""The settings of ``spinrl eval`` (rollouts, the exact expected return, or dataset-only offline evaluation).

Imports no torch: the CLI builds its parser from :class:`EvalConfig` before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from spinrl.errors import ConfigError


@dataclass
class EvalConfig:
    """Evaluate a policy file: rollouts in its dataset's environment (or --env), the exact expected return
    where the environment's model is known, or with --offline dataset-only FQE and action agreement.

    ``run_eval(EvalConfig("run/policy.pt", episodes=20))`` is ``spinrl eval run/policy.pt --episodes 20``.
    """

    policy: str = ""
    """policy.pt of a run directory"""
    env: str | None = None
    """environment id: spinrl's, or any registered Gymnasium id, module:ID importing the module that registers
    it (default: the policy's dataset environment)"""
    episodes: int = 10
    """episodes, reset with seeds seed+100+k"""
    seed: int = 0
    """seed of resets and action sampling"""
    greedy: bool = False
    """most likely action instead of a sample"""
    mode: Literal["auto", "rollout", "exact"] = "auto"
    """exact: expected return on the env's known model (sepsis); auto: exact where known"""
    threads: int | None = None
    """torch CPU threads (default: torch's own count); 1 beside another job, where more only stall"""
    video: str | None = field(default=None, metadata={"metavar": "OUT.mp4"})
    """also render episode 0 (maze, dmc, Gymnasium envs with rgb_array) into this .mp4 (extra 'video')"""
    offline: str | None = field(default=None, metadata={"metavar": "DATASET"})
    """dataset-only evaluation: FQE on held-out episodes and action agreement with the data (saved as
    offline_eval.json in the policy's run directory, a column of `spinrl report`)"""
    fqe_iterations: int | None = None
    """--offline: FQE target updates (default: 50)"""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """environment options (on the command line: --name value after the flags)"""

    def __post_init__(self) -> None:
        if not self.policy:
            raise ConfigError("a policy file is required (policy.pt of a run directory)")
        if self.offline is None and self.fqe_iterations is not None:
            raise ConfigError("--fqe-iterations only applies with --offline DATASET; add --offline")


def run_eval(cfg: EvalConfig) -> Any:
    """Run ``cfg``: an :class:`~spinrl.evaluation.evaluate.EvalResult` for rollouts or the exact return; with
    ``offline``, the dict of :func:`~spinrl.evaluation.offline.offline_evaluate`, also saved as
    ``offline_eval.json`` beside a run directory's ``policy.pt`` (where ``spinrl report`` finds it)."""
    if cfg.offline is None:
        from spinrl.evaluation.evaluate import evaluate

        return evaluate(
            cfg.policy,
            env=cfg.env,
            episodes=cfg.episodes,
            seed=cfg.seed,
            greedy=cfg.greedy,
            mode=cfg.mode,
            threads=cfg.threads,
            video=cfg.video,
            **cfg.env_kwargs,
        )
    from spinrl.evaluation.offline import offline_evaluate, write_offline_eval

    res = offline_evaluate(cfg.policy, cfg.offline, seed=cfg.seed, iterations=cfg.fqe_iterations, threads=cfg.threads)
    policy = Path(cfg.policy)
    if policy.name == "policy.pt" and (policy.parent / "config.json").exists():
        write_offline_eval(policy.parent, res)
    return res
