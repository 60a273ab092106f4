"""Model sizes shared by every network; one dataclass so CLI flags, API and run files agree."""

from __future__ import annotations

from dataclasses import dataclass, fields

from spinrl.errors import ConfigError


@dataclass
class ModelConfig:
    """Network sizes. Defaults are the paper's sizes (docs/method.md, section "Presets"); they are slow on CPU."""

    d_model: int = 256
    """Transformer width (ASM, SAINT and SPIN); must match the ASM for SPIN."""
    n_heads: int = 4
    """Attention heads per transformer block; must divide d_model."""
    n_blocks: int = 3
    """Number of pre-LN transformer blocks."""
    dropout: float = 0.1
    """Dropout in blocks and sub-action heads (kept active in SPIN's frozen blocks, as in the paper)."""
    n_state_tokens: int = 1
    """State tokens M produced by the state encoder."""
    head_hidden: int = 128
    """Hidden width of each per-sub-action prediction head."""
    mlp_hidden: int = 256
    """Hidden width of the factored MLP actor (two layers)."""
    critic_hidden: int = 256
    """Hidden width of the twin critic and the value net (two layers)."""
    lstm_hidden: int = 256
    """Hidden width of the autoregressive actor's LSTM."""
    lstm_layers: int = 2
    """LSTM layers of the autoregressive actor."""
    sub_action_embed: int = 64
    """Embedding width of the previous sub-action fed to the autoregressive actor."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "dropout" and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"model.{f.name} = {value!r} must be a positive integer")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout = {self.dropout} must be in [0, 1)")
        if self.d_model % self.n_heads:
            raise ConfigError(f"model.d_model = {self.d_model} must be divisible by model.n_heads = {self.n_heads}")
