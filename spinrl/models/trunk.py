"""The transformer trunk shared by the ASM and the SAINT/SPIN actor, built here once (docs/method.md, section
"The shared transformer trunk")."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from spinrl.errors import CheckpointError
from spinrl.models.config import ModelConfig
from spinrl.models.layers import StateEncoder, TransformerBlock


class Trunk(nn.Module):
    """[M state tokens ; N sub-action tokens] -> pre-LN transformer blocks -> the N contextual tokens.

    The ASM and the SAINT/SPIN actor are this trunk plus their own N input tokens and heads; a subclass
    creates its tokens in :meth:`make_tokens` (the ASM: an embedding of each sub-action's value or
    [MASK]; the actor: learned queries). That call sits between the state encoder and the blocks so the
    parameters, and their seeded initialisation, keep the order of every saved model and optimizer state.
    SPIN copies the parts named in ``SHARED`` from a pretrained ASM (:meth:`load_trunk`).

    Args:
        obs_dim: State dimension.
        nvec: Cardinalities (m_1, ..., m_N).
        cfg: Sizes (d_model, n_heads, n_blocks, dropout, n_state_tokens).
    """

    SHARED = ("state_encoder", "blocks")
    """What the ASM and the actor share: SPIN loads exactly these from the ASM."""

    def __init__(self, obs_dim: int, nvec: Sequence[int], cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.obs_dim = int(obs_dim)
        self.nvec = tuple(int(m) for m in nvec)
        d = cfg.d_model
        self.state_encoder = StateEncoder(obs_dim, d, cfg.n_state_tokens)
        self.make_tokens(d)
        self.blocks = nn.ModuleList(TransformerBlock(d, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_blocks))

    def make_tokens(self, d: int) -> None:  # pragma: no cover - abstract
        """Create the parameters of the N input tokens (width ``d``)."""
        raise NotImplementedError

    def encode(self, obs_BO: torch.Tensor, tokens_BND: torch.Tensor) -> torch.Tensor:
        """The blocks' output at the N sub-action tokens, [B, N, d], for input tokens [B, N, d]."""
        x = torch.cat([self.state_encoder(obs_BO), tokens_BND], dim=1)
        for block in self.blocks:
            x = block(x)
        return x[:, self.cfg.n_state_tokens :]

    def load_trunk(self, other: "Trunk", freeze: bool) -> None:
        """Copy ``other``'s state encoder and blocks (strictly); ``freeze`` sets their requires_grad False.

        Raises:
            CheckpointError: The weights do not fit (another configuration).
        """
        for part in self.SHARED:
            try:
                getattr(self, part).load_state_dict(getattr(other, part).state_dict(), strict=True)
            except RuntimeError as e:
                first = str(e).strip().splitlines()[0]
                raise CheckpointError(
                    f"ASM weights do not fit the actor ({first}); the ASM checkpoint is from another configuration"
                ) from e
            if freeze:
                getattr(self, part).requires_grad_(False)
