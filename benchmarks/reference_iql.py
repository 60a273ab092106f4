"""A straightforward reference implementation of one IQL gradient step, kept for speed ratios and equality tests.

Written the way a first implementation usually looks (and the way the public SPIN code is written): a
Python loop over sub-actions, two separate critic networks, one ``nn.Module`` per sub-action head,
``nn.MultiheadAttention`` with its default arguments, a Python loop for the Polyak update. It computes
the same objective as ``spinrl.algorithms.iql`` in the same order (value, critic, actor, then targets),
so ``reference_from_setup`` can copy a library ``Setup``'s weights in and both steps can be compared
(tests/test_reference_equality.py) and timed against each other (benchmarks/train_step.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class RefCritic(nn.Module):
    """One critic member: obs -> h -> h -> sum(m_i) with ReLU."""

    def __init__(self, obs_dim: int, nvec, hidden: int):
        super().__init__()
        self.nvec = list(nvec)
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, sum(self.nvec)))

    def forward(self, obs, act):
        out = self.net(obs)
        q = torch.zeros(obs.shape[0], device=obs.device)
        start = 0
        for i, m in enumerate(self.nvec):  # per-sub-action gather, summed
            q = q + out[:, start:start + m].gather(1, act[:, i:i + 1]).squeeze(1)
            start += m
        return q


class RefValue(nn.Module):
    def __init__(self, obs_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, obs):
        return self.net(obs).squeeze(-1)


def _log_prob_loop(logits_list, act):
    logp = torch.zeros(act.shape[0], device=act.device)
    for i, logits in enumerate(logits_list):
        logp = logp + F.log_softmax(logits, dim=-1).gather(1, act[:, i:i + 1]).squeeze(1)
    return logp


class RefFactoredActor(nn.Module):
    """obs -> h -> h (ReLU) -> one nn.Linear head per sub-action."""

    def __init__(self, obs_dim: int, nvec, hidden: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(hidden, m) for m in nvec)

    def log_prob(self, obs, act):
        h = self.trunk(obs)
        return _log_prob_loop([head(h) for head in self.heads], act)


class RefBlock(nn.Module):
    """Pre-LN block with nn.MultiheadAttention (default call: attention weights are returned)."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.drop1 = nn.Dropout(dropout)
        self.ln2 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * d, d),
                                 nn.Dropout(dropout))

    def forward(self, x):
        h = self.ln1(x)
        a, _ = self.attn(h, h, h)
        x = x + self.drop1(a)
        return x + self.ffn(self.ln2(x))


class RefTransformerActor(nn.Module):
    """[state token ; N queries] -> blocks -> one head module per sub-action (SAINT; SPIN when frozen)."""

    def __init__(self, obs_dim: int, nvec, d: int, heads: int, blocks: int, head_hidden: int, dropout: float,
                 n_state_tokens: int = 1):
        super().__init__()
        self.d, self.m = d, n_state_tokens
        self.encoder = nn.Sequential(nn.Linear(obs_dim, 2 * d), nn.GELU(), nn.Linear(2 * d, n_state_tokens * d))
        self.queries = nn.Parameter(torch.randn(len(nvec), d))
        self.blocks = nn.ModuleList(RefBlock(d, heads, dropout) for _ in range(blocks))
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(d, head_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(head_hidden, m))
            for m in nvec
        )

    def log_prob(self, obs, act):
        B = obs.shape[0]
        x = torch.cat([self.encoder(obs).view(B, self.m, self.d), self.queries.unsqueeze(0).repeat(B, 1, 1)], dim=1)
        for block in self.blocks:
            x = block(x)
        return _log_prob_loop([head(x[:, self.m + i]) for i, head in enumerate(self.heads)], act)


@dataclass
class RefIQL:
    """Reference networks and optimizers for one IQL step."""

    actor: nn.Module
    critic1: RefCritic
    critic2: RefCritic
    target1: RefCritic
    target2: RefCritic
    value: RefValue
    opt_value: torch.optim.Optimizer
    opt_critic: torch.optim.Optimizer
    opt_actor: torch.optim.Optimizer
    gamma: float = 0.99
    tau: float = 0.005
    expectile: float = 0.8
    beta: float = 3.0
    clip: float = 100.0


def iql_step(r: RefIQL, obs, act, rew, next_obs, term) -> dict[str, torch.Tensor]:
    """One IQL update (value, critics, actor, Polyak), written out plainly."""
    with torch.no_grad():
        q_t = torch.min(r.target1(obs, act), r.target2(obs, act))
    v = r.value(obs)
    u = q_t - v
    weight = torch.abs(r.expectile - (u < 0).float())
    value_loss = (weight * u ** 2).mean()
    r.opt_value.zero_grad()
    value_loss.backward()
    r.opt_value.step()

    with torch.no_grad():
        target = rew + r.gamma * (1.0 - term) * r.value(next_obs)
    critic_loss = F.mse_loss(r.critic1(obs, act), target) + F.mse_loss(r.critic2(obs, act), target)
    r.opt_critic.zero_grad()
    critic_loss.backward()
    r.opt_critic.step()

    with torch.no_grad():
        adv = torch.min(r.target1(obs, act), r.target2(obs, act)) - r.value(obs)
        w = torch.clamp(torch.exp(r.beta * adv), max=r.clip)
    actor_loss = -(w * r.actor.log_prob(obs, act)).mean()
    r.opt_actor.zero_grad()
    actor_loss.backward()
    r.opt_actor.step()

    with torch.no_grad():
        for tgt, src in ((r.target1, r.critic1), (r.target2, r.critic2)):
            for pt, p in zip(tgt.parameters(), src.parameters()):
                pt.mul_(1.0 - r.tau).add_(r.tau * p)
    return {"value_loss": value_loss.detach(), "critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach()}


# ---- weight copying from the library's (vectorized) layout -------------------------------------------


def _copy_linear(dst: nn.Linear, w_in_out: torch.Tensor, b_out: torch.Tensor) -> None:
    dst.weight.copy_(w_in_out.t())
    dst.bias.copy_(b_out)


@torch.no_grad()
def _critic_member(lib_critic, k: int, obs_dim: int, nvec, hidden: int) -> RefCritic:
    c = RefCritic(obs_dim, nvec, hidden)
    linears = [m for m in c.net if isinstance(m, nn.Linear)]
    in_out = [*lib_critic.weights, lib_critic.output.weight.transpose(1, 2)]  # the output layer is stored out-major
    for lin, w, b in zip(linears, in_out, lib_critic.biases):
        _copy_linear(lin, w[k], b[k, 0])
    return c


@torch.no_grad()
def _copy_heads(dst: nn.ModuleList, lib_heads, nvec) -> None:
    for i, (head, m) in enumerate(zip(dst, nvec)):
        first, last = head[0], head[3]
        _copy_linear(first, lib_heads.w1[i], lib_heads.b1[i])
        _copy_linear(last, lib_heads.w2[i, :, :m], lib_heads.b2[i, :m])


@torch.no_grad()
def _transformer_actor(lib, obs_dim: int, nvec, cfg) -> RefTransformerActor:
    a = RefTransformerActor(obs_dim, nvec, cfg.d_model, cfg.n_heads, cfg.n_blocks, cfg.head_hidden, cfg.dropout,
                            cfg.n_state_tokens)
    a.encoder.load_state_dict(lib.state_encoder.net.state_dict())
    a.queries.copy_(lib.queries)
    for rb, lb in zip(a.blocks, lib.blocks):
        rb.ln1.load_state_dict(lb.ln1.state_dict())
        rb.ln2.load_state_dict(lb.ln2.state_dict())
        rb.ffn.load_state_dict(lb.ffn.state_dict())
        # nn.MultiheadAttention packs q, k, v as rows [q; k; v] of in_proj, heads contiguous: the same layout.
        rb.attn.in_proj_weight.copy_(lb.qkv.weight)
        rb.attn.in_proj_bias.copy_(lb.qkv.bias)
        rb.attn.out_proj.load_state_dict(lb.out_proj.state_dict())
    _copy_heads(a.heads, lib.heads, nvec)
    if getattr(lib, "frozen", False):  # SPIN: pretrained encoder and blocks stay fixed
        a.encoder.requires_grad_(False)
        a.blocks.requires_grad_(False)
    return a


@torch.no_grad()
def _factored_actor(lib, obs_dim: int, nvec, hidden: int) -> RefFactoredActor:
    a = RefFactoredActor(obs_dim, nvec, hidden)
    lins = [m for m in lib.net if isinstance(m, nn.Linear)]
    a.trunk[0].load_state_dict(lins[0].state_dict())
    a.trunk[2].load_state_dict(lins[1].state_dict())
    start = 0
    for head, m in zip(a.heads, nvec):
        head.weight.copy_(lins[2].weight[start:start + m])
        head.bias.copy_(lins[2].bias[start:start + m])
        start += m
    return a


def reference_from_setup(s, lr: float | None = None) -> RefIQL:
    """Reference IQL networks holding exactly the weights of a library ``Setup`` (IQL, factored/saint/spin actor).

    Adam uses the plain per-parameter loop (``foreach=False``), as a straightforward implementation would.
    """
    from spinrl.models import FactoredMLPActor, TransformerActor

    nvec = list(s.dataset.nvec)
    obs_dim = s.dataset.observation_dim
    cfg = s.model_cfg
    lib = s.nets
    if isinstance(lib.actor, TransformerActor):
        actor = _transformer_actor(lib.actor, obs_dim, nvec, cfg)
    elif isinstance(lib.actor, FactoredMLPActor):
        actor = _factored_actor(lib.actor, obs_dim, nvec, cfg.mlp_hidden)
    else:
        raise ValueError(f"no reference for actor {type(lib.actor).__name__}")
    c1, c2 = (_critic_member(lib.critic, k, obs_dim, nvec, cfg.critic_hidden) for k in range(2))
    t1, t2 = (_critic_member(lib.critic_target, k, obs_dim, nvec, cfg.critic_hidden) for k in range(2))
    for t in (t1, t2):
        t.requires_grad_(False)
    value = copy.deepcopy(lib.value.net)
    v = RefValue(obs_dim, cfg.critic_hidden)
    v.net.load_state_dict(value.state_dict())
    dev = s.device
    actor, c1, c2, t1, t2, v = (m.to(dev) for m in (actor, c1, c2, t1, t2, v))
    lr = lr if lr is not None else s.optimizers["actor"].param_groups[0]["lr"]
    a = s.algo_cfg

    def adam(params):
        return torch.optim.Adam([p for p in params if p.requires_grad], lr=lr, foreach=False)

    return RefIQL(actor, c1, c2, t1, t2, v, adam(v.parameters()), adam(list(c1.parameters()) + list(c2.parameters())),
                  adam(actor.parameters()), gamma=a.gamma, tau=a.polyak, expectile=a.expectile, beta=a.beta,
                  clip=a.clip)
