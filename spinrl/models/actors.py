"""Actors: one protocol, four implementations (factored MLP, autoregressive LSTM, SAINT, SPIN)."""

from __future__ import annotations

import dataclasses
from typing import Literal, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

from spinrl.errors import CheckpointError, ConfigError
from spinrl.models import distributions as dist
from spinrl.models.asm import ActionStructureModel
from spinrl.models.config import ModelConfig
from spinrl.models.layers import NEG, SubActionHeads, padding_index, to_padded
from spinrl.models.trunk import Trunk

ACTOR_KINDS = ("factored", "autoregressive", "saint", "spin", "spin-cached")


@runtime_checkable
class Actor(Protocol):
    """What algorithms need from a policy pi(a|s) over factored actions.

    Factored actors (``factored = True``) also provide ``logits(obs) -> [B, N, max_m]`` (padding
    masked) so algorithms can take exact per-sub-action expectations.
    """

    factored: bool
    nvec: tuple[int, ...]

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """log pi(a|s), shape [B]."""
        ...

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One action per state, long [B, N]."""
        ...

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        """Greedy action, long [B, N]."""
        ...

    def sample_k(self, obs: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """k actions per state, long [B, k, N]."""
        ...


class FactoredActor(nn.Module):
    """Shared sampling/likelihood for actors whose pi(a|s) is a product of categoricals.

    Subclasses implement ``logits(obs) -> [B, N, max_m]``.
    """

    factored: Literal[True] = True
    nvec: tuple[int, ...]

    def logits(self, obs_BO: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def log_prob(self, obs_BO: torch.Tensor, act_BN: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) = sum_i log pi_i(a_i|s), shape [B]."""
        return dist.log_prob(self.logits(obs_BO), act_BN)

    def sample(self, obs_BO: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """All sub-actions in one pass (Gumbel-max), long [B, N]."""
        return dist.gumbel_argmax(self.logits(obs_BO), generator)

    def sample_k(self, obs_BO: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """k joint draws per state from one forward pass, long [B, k, N]."""
        return dist.sample_k(self.logits(obs_BO), k, generator)

    def mode(self, obs_BO: torch.Tensor) -> torch.Tensor:
        """Per-sub-action argmax, which is the joint argmax of a product distribution."""
        return self.logits(obs_BO).argmax(-1)

    def probs(self, obs_BO: torch.Tensor) -> torch.Tensor:
        """pi_i(a_i|s) for every sub-action and value, fp32 [B, N, max_m] (padding 0)."""
        return dist.probs(self.logits(obs_BO))


class FactoredMLPActor(FactoredActor):
    """Baseline: obs -> h -> h (ReLU) -> one Linear to sum(m_i) -> N independent categoricals."""

    pad_index_NM: torch.Tensor
    valid_NM: torch.Tensor

    def __init__(self, obs_dim: int, nvec: Sequence[int], cfg: ModelConfig | None = None):
        super().__init__()
        cfg = cfg or ModelConfig()
        self.nvec = tuple(int(m) for m in nvec)
        h = cfg.mlp_hidden
        self.net = nn.Sequential(
            nn.Linear(obs_dim, h),
            nn.ReLU(inplace=True),
            nn.Linear(h, h),
            nn.ReLU(inplace=True),
            nn.Linear(h, sum(self.nvec)),
        )
        index, valid = padding_index(self.nvec)
        self.register_buffer("pad_index_NM", index, persistent=False)
        self.register_buffer("valid_NM", valid, persistent=False)

    def logits(self, obs_BO: torch.Tensor) -> torch.Tensor:
        """Padded logits [B, N, max_m] from the concatenated outputs."""
        return to_padded(self.net(obs_BO), self.pad_index_NM, self.valid_NM, NEG)


def check_asm_fits(
    asm: ActionStructureModel, cfg: ModelConfig, obs_dim: int | None, nvec: Sequence[int] | None
) -> None:
    """Strict loading (docs/method.md, section "SPIN: the SAINT actor on a frozen ASM"): any mismatch between an
    ASM and the task or sizes raises."""
    for field in ("d_model", "n_heads", "n_blocks", "n_state_tokens"):
        got, want = getattr(asm.cfg, field), getattr(cfg, field)
        if got != want:
            raise CheckpointError(
                f"ASM has {field}={got} but the actor config asks for {field}={want}; use the ASM's sizes"
            )
    if obs_dim is not None and int(obs_dim) != asm.obs_dim:
        raise CheckpointError(
            f"ASM was trained with obs_dim={asm.obs_dim} but the task has obs_dim={obs_dim}; "
            "pretrain an ASM on this task"
        )
    if nvec is not None and tuple(int(m) for m in nvec) != asm.nvec:
        raise CheckpointError(
            f"ASM was trained with nvec={list(asm.nvec)} but the task has nvec={list(nvec)}; "
            "pretrain an ASM on this task"
        )


class TransformerActor(Trunk, FactoredActor):
    """SAINT actor: the trunk over [M state tokens ; N learned queries], then per-sub-action heads.

    Queries carry no sampled sub-actions, so pi(a|s) is a product of categoricals; attention gives
    coordinated per-state modes. ``from_asm`` builds the SPIN actor (frozen pretrained trunk).
    """

    def __init__(self, obs_dim: int, nvec: Sequence[int], cfg: ModelConfig | None = None):
        super().__init__(obs_dim, nvec, cfg or ModelConfig())
        self.heads = SubActionHeads(self.cfg.d_model, self.nvec, self.cfg.head_hidden, self.cfg.dropout)
        self.frozen = False

    def make_tokens(self, d: int) -> None:
        """One learned query per sub-action."""
        self.queries = nn.Parameter(torch.randn(len(self.nvec), d))  # N(0, 1) as in the paper's code

    def logits(self, obs_BO: torch.Tensor) -> torch.Tensor:
        """Padded logits [B, N, max_m]."""
        return self.heads(self.encode(obs_BO, self.queries.expand(obs_BO.shape[0], -1, -1)))

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters with requires_grad (queries and heads for SPIN; everything for SAINT)."""
        return [p for p in self.parameters() if p.requires_grad]

    @classmethod
    def from_asm(
        cls,
        asm: ActionStructureModel,
        cfg: ModelConfig | None = None,
        freeze: bool = True,
        *,
        obs_dim: int | None = None,
        nvec: Sequence[int] | None = None,
    ) -> "TransformerActor":
        """SPIN actor: the ASM's state encoder and blocks (copied, frozen) + fresh queries and heads.

        Loading is strict (docs/method.md, section "SPIN: the SAINT actor on a frozen ASM"): any mismatch raises
        instead of training from scratch.
        Frozen blocks keep their dropout active in train mode, as in the paper's code.

        Args:
            asm: Pretrained action structure model.
            cfg: Actor sizes; defaults to the ASM's. Its d_model, n_heads, n_blocks and
                n_state_tokens must equal the ASM's; head_hidden and dropout may differ.
            freeze: Set requires_grad False on the copied encoder and blocks.
            obs_dim: Expected state dimension of the task, checked against the ASM when given.
            nvec: Expected cardinalities of the task, checked against the ASM when given.

        Raises:
            CheckpointError: The ASM does not fit the task or the configuration.
        """
        cfg = cfg or asm.cfg
        check_asm_fits(asm, cfg, obs_dim, nvec)
        actor = cls(asm.obs_dim, asm.nvec, cfg)
        actor.load_trunk(asm, freeze)
        actor.frozen = freeze
        return actor.to(next(asm.parameters()).device)


class AutoregressiveActor(nn.Module):
    """pi(a|s) = prod_i pi_i(a_i | s, a_<i): LSTM over sub-actions (docs/method.md, section "Baseline actors").

    Step i reads [state embedding ; embedding of a_{i-1}] (a start token at i = 0) from one table
    with offsets, and head i maps the LSTM output to logits over m_i. Teacher forcing runs the
    whole sequence in one LSTM call; sampling is sequential (the only loop over sub-actions).
    """

    factored: Literal[False] = False
    feed_offsets: torch.Tensor

    def __init__(self, obs_dim: int, nvec: Sequence[int], cfg: ModelConfig | None = None):
        super().__init__()
        cfg = cfg or ModelConfig()
        self.nvec = tuple(int(m) for m in nvec)
        h, e = cfg.lstm_hidden, cfg.sub_action_embed
        self.state_embed = nn.Sequential(nn.Linear(obs_dim, h), nn.ReLU(inplace=True))
        # Row 0 = start token; a_j (j < N-1, the only ones ever fed) -> row feed_offsets[j] + a_j.
        fed = torch.as_tensor(self.nvec[:-1], dtype=torch.long)
        self.register_buffer("feed_offsets", 1 + torch.cumsum(fed, 0) - fed, persistent=False)
        self.embed = nn.Embedding(1 + int(fed.sum()), e)
        self.lstm = nn.LSTM(h + e, h, num_layers=cfg.lstm_layers, batch_first=True)
        # Deterministic heads: dropout here would make teacher forcing and sampling disagree.
        self.heads = SubActionHeads(h, self.nvec, cfg.head_hidden, dropout=0.0)

    def _inputs(self, state_BH: torch.Tensor, prev_tokens_BT: torch.Tensor) -> torch.Tensor:
        T = prev_tokens_BT.shape[1]
        return torch.cat([state_BH.unsqueeze(1).expand(-1, T, -1), self.embed(prev_tokens_BT)], dim=-1)

    def conditional_logits(self, obs_BO: torch.Tensor, act_BN: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits of pi_i(. | s, a_<i), padded [B, N, max_m]."""
        B = obs_BO.shape[0]
        # prev tokens: start, then a_0 .. a_{N-2} shifted into their table blocks.
        prev = torch.cat([act_BN.new_zeros(B, 1), act_BN[:, :-1] + self.feed_offsets], dim=1)
        out, _ = self.lstm(self._inputs(self.state_embed(obs_BO), prev))
        return self.heads(out)

    def log_prob(self, obs_BO: torch.Tensor, act_BN: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) by teacher forcing, shape [B]."""
        return dist.log_prob(self.conditional_logits(obs_BO, act_BN), act_BN)

    def _decode(self, obs_BO: torch.Tensor, generator: torch.Generator | None, greedy: bool) -> torch.Tensor:
        state = self.state_embed(obs_BO)
        tok = torch.zeros(obs_BO.shape[0], 1, dtype=torch.long, device=obs_BO.device)
        hc = None
        acts = []
        for i in range(len(self.nvec)):  # sequential by definition of the autoregressive model
            out, hc = self.lstm(self._inputs(state, tok), hc)
            logits = self.heads.one(out[:, 0], i)
            a = logits.argmax(-1) if greedy else dist.gumbel_argmax(logits, generator)
            acts.append(a)
            if i + 1 < len(self.nvec):
                tok = (a + self.feed_offsets[i]).unsqueeze(1)
        return torch.stack(acts, dim=1)

    def sample(self, obs_BO: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestral sample, long [B, N]."""
        return self._decode(obs_BO, generator, greedy=False)

    def mode(self, obs_BO: torch.Tensor) -> torch.Tensor:
        """Greedy sequential decoding (an approximation of the joint argmax), long [B, N]."""
        return self._decode(obs_BO, None, greedy=True)

    def sample_k(self, obs_BO: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """k ancestral samples per state (one batched decode of B*k rows), long [B, k, N]."""
        B = obs_BO.shape[0]
        return self.sample(obs_BO.repeat_interleave(k, dim=0), generator).view(B, k, len(self.nvec))


ActorModule = FactoredActor | AutoregressiveActor
"""Every actor ``build_actor`` makes: an ``nn.Module`` with the :class:`Actor` methods; ``factored`` tells
the two families apart (only factored actors have ``logits``)."""


class CachedFeatureActor(FactoredActor):
    """``spin-cached`` (ours, beyond the paper): heads on the frozen ASM's all-[MASK] features.

    With the ASM frozen and its own [MASK] embeddings as frozen queries, the transformer output depends
    on the state alone, so it can be computed once per dataset state and cached; training then updates
    only the heads, at MLP speed. The trunk runs in eval mode (no dropout) so features are
    deterministic and cacheable. The trainer hands precomputed features for a batch's observation
    tensors to :meth:`provide_features`; any other observation is encoded on the fly.
    """

    def __init__(self, obs_dim: int, nvec: Sequence[int], cfg: ModelConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ModelConfig()
        self.obs_dim = int(obs_dim)
        self.nvec = tuple(int(m) for m in nvec)
        self.asm = ActionStructureModel(obs_dim, nvec, cfg)
        self.asm.heads = None  # type: ignore[assignment]  # the ASM's prediction heads are discarded (docs/method.md)
        self.asm.requires_grad_(False)
        self.heads = SubActionHeads(cfg.d_model, self.nvec, cfg.head_hidden, cfg.dropout)
        self.frozen = True
        self._provided: list[tuple[torch.Tensor, torch.Tensor]] = []

    def train(self, mode: bool = True) -> "CachedFeatureActor":
        super().train(mode)
        self.asm.eval()  # the frozen trunk never uses dropout: its features are cached
        return self

    @torch.no_grad()
    def features(self, obs_BO: torch.Tensor) -> torch.Tensor:
        """Frozen all-[MASK] contextual features [B, N, d]."""
        return self.asm.masked_features(obs_BO)

    def provide_features(self, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Precomputed features for specific observation tensors (matched by identity)."""
        self._provided = list(pairs)

    def logits(self, obs_BO: torch.Tensor) -> torch.Tensor:
        for obs, feats in self._provided:
            if obs is obs_BO:
                return self.heads(feats)
        return self.heads(self.features(obs_BO))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @classmethod
    def from_asm(
        cls,
        asm: ActionStructureModel,
        cfg: ModelConfig | None = None,
        *,
        obs_dim: int | None = None,
        nvec: Sequence[int] | None = None,
    ) -> "CachedFeatureActor":
        """Copy the whole ASM (frozen); fresh heads. Same strict checks as the SPIN actor."""
        check_asm_fits(asm, cfg or asm.cfg, obs_dim, nvec)
        cfg = dataclasses.replace(asm.cfg, head_hidden=(cfg or asm.cfg).head_hidden, dropout=(cfg or asm.cfg).dropout)
        actor = cls(asm.obs_dim, asm.nvec, cfg)
        trunk = {k: v for k, v in asm.state_dict().items() if not k.startswith("heads.")}
        actor.asm.load_state_dict(trunk, strict=True)
        actor.asm.requires_grad_(False)
        return actor.to(next(asm.parameters()).device)


def build_actor(
    kind: str,
    obs_dim: int,
    nvec: Sequence[int],
    cfg: ModelConfig | None = None,
    asm: ActionStructureModel | None = None,
) -> ActorModule:
    """Make an actor by name: "factored", "autoregressive", "saint" or "spin" (needs ``asm``).

    Raises:
        ConfigError: Unknown kind, or "spin" without a pretrained ASM.
        CheckpointError: The ASM does not fit the task or config.
    """
    cfg = cfg or ModelConfig()
    if kind == "factored":
        return FactoredMLPActor(obs_dim, nvec, cfg)
    if kind == "autoregressive":
        return AutoregressiveActor(obs_dim, nvec, cfg)
    if kind == "saint":
        return TransformerActor(obs_dim, nvec, cfg)
    if kind in ("spin", "spin-cached"):
        if asm is None:
            raise ConfigError(f"actor '{kind}' needs a pretrained ASM: --asm PATH is required (run pretraining first)")
        if kind == "spin-cached":
            return CachedFeatureActor.from_asm(asm, cfg, obs_dim=obs_dim, nvec=nvec)
        return TransformerActor.from_asm(asm, cfg, freeze=True, obs_dim=obs_dim, nvec=nvec)
    raise ConfigError(f"actor kind '{kind}' is unknown; choose one of {', '.join(ACTOR_KINDS)}")
