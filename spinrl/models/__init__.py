"""Networks for factored discrete actions; imports only torch (and spinrl.errors)."""

from typing import TYPE_CHECKING

from spinrl.utils.lazy import lazy_package

lazy_package(
    __name__,
    {
        name: f"spinrl.models.{module}"
        for module, names in {
            "actors": (
                "ACTOR_KINDS",
                "Actor",
                "AutoregressiveActor",
                "FactoredActor",
                "FactoredMLPActor",
                "TransformerActor",
                "build_actor",
            ),
            "asm": ("ActionStructureModel",),
            "config": ("ModelConfig",),
            "critics": ("FactoredTwinCritic", "ValueNet"),
            "layers": ("NEG", "StateEncoder", "SubActionHeads", "TransformerBlock"),
            "trunk": ("Trunk",),
        }.items()
        for name in names
    },
)  # loaded on first use, so ``spinrl.models.config`` (ModelConfig) imports no torch

if TYPE_CHECKING:  # the same names for type checkers and editors ("X as X": re-exported)
    from spinrl.models.actors import ACTOR_KINDS as ACTOR_KINDS
    from spinrl.models.actors import Actor as Actor
    from spinrl.models.actors import AutoregressiveActor as AutoregressiveActor
    from spinrl.models.actors import FactoredActor as FactoredActor
    from spinrl.models.actors import FactoredMLPActor as FactoredMLPActor
    from spinrl.models.actors import TransformerActor as TransformerActor
    from spinrl.models.actors import build_actor as build_actor
    from spinrl.models.asm import ActionStructureModel as ActionStructureModel
    from spinrl.models.config import ModelConfig as ModelConfig
    from spinrl.models.critics import FactoredTwinCritic as FactoredTwinCritic
    from spinrl.models.critics import ValueNet as ValueNet
    from spinrl.models.layers import NEG as NEG
    from spinrl.models.layers import StateEncoder as StateEncoder
    from spinrl.models.layers import SubActionHeads as SubActionHeads
    from spinrl.models.layers import TransformerBlock as TransformerBlock
    from spinrl.models.trunk import Trunk as Trunk

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
