"""Evaluation: batched rollouts, policy files, scores and time to target.

The names below load on first use, so ``spinrl.evaluation.config`` (the ``spinrl eval`` settings) and
``spinrl.evaluation.targets`` import no torch.
"""

from typing import TYPE_CHECKING

from spinrl.utils.lazy import lazy_package

_EVALUATE = "spinrl.evaluation.evaluate"
lazy_package(
    __name__,
    {
        "EvalResult": _EVALUATE,
        "evaluate": _EVALUATE,
        "evaluate_act": _EVALUATE,
        "normalize": _EVALUATE,
        "Policy": "spinrl.evaluation.policy",
        "time_to_target": "spinrl.evaluation.targets",
        "EvalConfig": "spinrl.evaluation.config",
        "run_eval": "spinrl.evaluation.config",
    },
)

if TYPE_CHECKING:  # the same names for type checkers and editors ("X as X": re-exported)
    from spinrl.evaluation.config import EvalConfig as EvalConfig
    from spinrl.evaluation.config import run_eval as run_eval
    from spinrl.evaluation.evaluate import EvalResult as EvalResult
    from spinrl.evaluation.evaluate import evaluate as evaluate
    from spinrl.evaluation.evaluate import evaluate_act as evaluate_act
    from spinrl.evaluation.evaluate import normalize as normalize
    from spinrl.evaluation.policy import Policy as Policy
    from spinrl.evaluation.targets import time_to_target as time_to_target

__all__ = ["EvalConfig", "EvalResult", "Policy", "evaluate", "evaluate_act", "normalize", "run_eval", "time_to_target"]
