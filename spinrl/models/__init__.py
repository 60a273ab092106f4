"""Networks for factored discrete actions; imports only torch (and spinrl.errors)."""

from spinrl.models.actors import (
    ACTOR_KINDS,
    Actor,
    AutoregressiveActor,
    FactoredActor,
    FactoredMLPActor,
    TransformerActor,
    build_actor,
)
from spinrl.models.asm import ActionStructureModel
from spinrl.models.config import ModelConfig
from spinrl.models.critics import FactoredTwinCritic, ValueNet
from spinrl.models.layers import NEG, StateEncoder, SubActionHeads, TransformerBlock
from spinrl.models.trunk import Trunk

__all__ = [
    "ACTOR_KINDS",
    "NEG",
    "ActionStructureModel",
    "Actor",
    "AutoregressiveActor",
    "FactoredActor",
    "FactoredMLPActor",
    "FactoredTwinCritic",
    "ModelConfig",
    "StateEncoder",
    "SubActionHeads",
    "TransformerActor",
    "TransformerBlock",
    "Trunk",
    "ValueNet",
    "build_actor",
]
