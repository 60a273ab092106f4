"""Evaluation: batched rollouts, policy files, scores and time to target.

The names below load on first use, so ``spinrl.evaluation.config`` (the ``spinrl eval`` settings) and
``spinrl.evaluation.targets`` import no torch.
"""

from spinrl.utils.lazy import lazy_package

_EVALUATE = "spinrl.evaluation.evaluate"
lazy_package(__name__, {"EvalResult": _EVALUATE, "evaluate": _EVALUATE, "evaluate_act": _EVALUATE,
                        "normalize": _EVALUATE, "Policy": "spinrl.evaluation.policy",
                        "time_to_target": "spinrl.evaluation.targets", "EvalConfig": "spinrl.evaluation.config",
                        "run_eval": "spinrl.evaluation.config"})

__all__ = ["EvalConfig", "EvalResult", "Policy", "evaluate", "evaluate_act", "normalize", "run_eval", "time_to_target"]
