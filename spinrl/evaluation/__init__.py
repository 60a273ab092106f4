"""Evaluation: batched rollouts, policy files, scores and time to target."""

from spinrl.evaluation.evaluate import EvalResult, evaluate, evaluate_act, normalize
from spinrl.evaluation.policy import Policy
from spinrl.evaluation.targets import time_to_target

__all__ = ["EvalResult", "Policy", "evaluate", "evaluate_act", "normalize", "time_to_target"]
