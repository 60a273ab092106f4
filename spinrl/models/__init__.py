"""Networks for factored discrete actions; imports only torch (and spinrl.errors)."""

from spinrl.utils.lazy import lazy_package

lazy_package(__name__, {name: f"spinrl.models.{module}" for module, names in {
    "actors": ("ACTOR_KINDS", "Actor", "AutoregressiveActor", "FactoredActor", "FactoredMLPActor", "TransformerActor",
               "build_actor"),
    "asm": ("ActionStructureModel",), "config": ("ModelConfig",), "critics": ("FactoredTwinCritic", "ValueNet"),
    "layers": ("NEG", "StateEncoder", "SubActionHeads", "TransformerBlock"), "trunk": ("Trunk",),
}.items() for name in names})  # loaded on first use, so ``spinrl.models.config`` (ModelConfig) imports no torch

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

