"""Closed-form checks of the objectives plus a smoke run of every algorithm x actor."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from spinrl.algorithms import ALGORITHMS, CONFIGS, Batch, MAMConfig, Nets, asm_loss, build_nets, corrupt, polyak
from spinrl.algorithms import awac, bcq, iql
from spinrl.algorithms.common import expectile_loss
from spinrl.models import ActionStructureModel, FactoredTwinCritic, ModelConfig, build_actor

NVEC = (2, 3, 2)
OBS = 4
CFG = ModelConfig(
    d_model=16, n_heads=2, n_blocks=1, head_hidden=8, mlp_hidden=16, critic_hidden=16,
    lstm_hidden=16, lstm_layers=2, sub_action_embed=4,
)


def _batch(b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    acts = torch.stack([torch.randint(m, (b,), generator=g) for m in NVEC], dim=1)
    return Batch(
        obs=torch.randn(b, OBS, generator=g),
        actions=acts,
        rewards=torch.randn(b, generator=g),
        next_obs=torch.randn(b, OBS, generator=g),
        terminated=(torch.rand(b, generator=g) < 0.3).float(),
    )


class _Fixed:
    """Stub network returning fixed outputs, to check objectives in closed form."""

    def __init__(self, out=None, q_all=None, logits=None, factored=True):
        self.out, self._q_all, self._logits, self.factored = out, q_all, logits, factored

    def __call__(self, *args):
        return self.out

    def q_all(self, obs):
        return self._q_all

    def logits(self, obs):
        return self._logits


class _RowsFixed(_Fixed):
    """A value stub giving the same fixed V to every block of len(out) input rows, so a loss may evaluate
    V(s) and V(s') in one call on the stacked states."""

    def __call__(self, obs):
        return self.out.repeat(obs.shape[0] // self.out.shape[0])


class _LogProbActor(torch.nn.Module):
    factored = True

    def __init__(self, b):
        super().__init__()
        self.lp = torch.nn.Parameter(torch.zeros(b))

    def log_prob(self, obs, act):
        return self.lp


def test_expectile_loss_closed_form():
    diff = torch.tensor([-2.0, 1.0, 3.0])
    torch.testing.assert_close(expectile_loss(diff, 0.8), torch.tensor((0.2 * 4 + 0.8 * 1 + 0.8 * 9) / 3))
    torch.testing.assert_close(expectile_loss(diff, 0.5), 0.5 * diff.pow(2).mean())


def test_polyak_closed_form():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    ta, tb = a.weight.detach().clone(), b.weight.detach().clone()
    polyak(a, b, 0.005)
    torch.testing.assert_close(a.weight, 0.995 * ta + 0.005 * tb)


def test_iql_and_awac_weights_closed_form():
    adv = torch.tensor([0.0, 1.0, 10.0, -1.0])
    torch.testing.assert_close(iql.actor_weights(adv, iql.IQLConfig()), torch.tensor([1.0, math.exp(3), 100.0, math.exp(-3)]))
    torch.testing.assert_close(
        awac.actor_weights(adv, awac.AWACConfig()), torch.tensor([1.0, math.exp(1 / 0.3), 100.0, math.exp(-1 / 0.3)])
    )


def test_iql_losses_closed_form():
    b = 3
    batch = Batch(torch.zeros(b, OBS), torch.zeros(b, 3, dtype=torch.long), torch.tensor([1.0, 2.0, 3.0]),
                  torch.zeros(b, OBS), torch.tensor([0.0, 1.0, 0.0]))
    q_target = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.5, -1.0]])  # min_k = [1, 0.5, -1]
    v = torch.tensor([0.5, 1.0, -1.0])
    actor = _LogProbActor(b)
    nets = Nets(actor=actor, critic=_Fixed(q_target), critic_target=_Fixed(q_target), value=_RowsFixed(v))
    cfg = iql.IQLConfig()
    loss, info = iql.actor_loss(nets, batch, cfg)
    loss.backward()
    w = torch.exp(3 * torch.tensor([0.5, -0.5, 0.0]))
    torch.testing.assert_close(actor.lp.grad, -w / b)
    torch.testing.assert_close(info["weight"], w.mean())
    # Q target: r + 0.99 (1 - term) V(s'), with the stub V(s') = v.
    q_online = torch.zeros(2, b, requires_grad=True)
    nets.critic = _Fixed(q_online)
    loss, _ = iql.critic_loss(nets, batch, cfg)
    target = torch.tensor([1 + 0.99 * 0.5, 2.0, 3 - 0.99])
    torch.testing.assert_close(loss, 2 * target.pow(2).mean())
    v_param = v.clone().requires_grad_(True)
    nets.value = _Fixed(v_param)
    loss, _ = iql.value_loss(nets, batch, cfg)
    torch.testing.assert_close(loss, expectile_loss(torch.tensor([0.5, -0.5, 0.0]), 0.8))


def test_awac_critic_uses_value_target():
    b = 2
    batch = Batch(torch.zeros(b, OBS), torch.zeros(b, 3, dtype=torch.long), torch.tensor([1.0, 1.0]),
                  torch.zeros(b, OBS), torch.tensor([0.0, 1.0]))
    nets = Nets(actor=None, critic=_Fixed(torch.zeros(2, b)), critic_target=None,
                value=_Fixed(torch.full((b,), 100.0)), value_target=_Fixed(torch.tensor([2.0, 5.0])))
    loss, _ = awac.critic_loss(nets, batch, awac.AWACConfig())
    torch.testing.assert_close(loss, 2 * torch.tensor([1 + 0.99 * 2, 1.0]).pow(2).mean())


@pytest.mark.parametrize("kind", ["factored", "saint"])
def test_awac_value_target_matches_enumeration(kind):
    torch.manual_seed(0)
    actor = build_actor(kind, OBS, NVEC, CFG).eval()
    critic = FactoredTwinCritic(OBS, NVEC, 16)
    nets = Nets(actor=actor, critic=critic, critic_target=critic)
    obs = torch.randn(3, OBS)
    with torch.no_grad():
        got = awac.policy_value(nets, obs, awac.AWACConfig())
        joint = torch.tensor(list(itertools.product(*[range(m) for m in NVEC])))  # [12, N]
        expect = torch.zeros(2, 3)
        for a in joint:
            a_B = a.expand(3, -1)
            expect += actor.log_prob(obs, a_B).exp() * critic(obs, a_B)
    torch.testing.assert_close(got, expect.min(0).values, rtol=1e-5, atol=1e-5)


def test_awac_value_target_autoregressive_is_monte_carlo():
    torch.manual_seed(0)
    actor = build_actor("autoregressive", OBS, NVEC, CFG).eval()
    critic = FactoredTwinCritic(OBS, NVEC, 16)
    nets = Nets(actor=actor, critic=critic, critic_target=critic)
    obs = torch.randn(2, OBS)
    with torch.no_grad():
        joint = torch.tensor(list(itertools.product(*[range(m) for m in NVEC])))
        expect = sum(actor.log_prob(obs, a.expand(2, -1)).exp() * critic(obs, a.expand(2, -1)) for a in joint)
        got = awac.policy_value(nets, obs, awac.AWACConfig(k_samples=4000), torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, expect.min(0).values, rtol=0, atol=0.02)


def test_bcq_allowed_set_and_constrained_max():
    probs = torch.tensor([[[0.5, 0.1, 0.4], [0.8, 0.2, 0.0]]])  # sub-action 1 has m = 2 (padding 0)
    logits = probs.clamp(min=1e-30).log()
    logits[0, 1, 2] = -1e9
    allowed = bcq.allowed_set(logits, 0.3)
    assert allowed.tolist() == [[[True, False, True], [True, False, False]]]
    assert bcq.allowed_set(logits, 0.0).tolist() == [[[True, True, True], [True, True, False]]]
    q = torch.tensor([[[[1.0, 9.0, 2.0], [0.0, 5.0, 7.0]]], [[[3.0, 0.0, -1.0], [4.0, 8.0, 9.0]]]])  # [K=2,B,N,M]
    actor = _Fixed(logits=logits)
    nets = Nets(actor=actor, critic=_Fixed(q_all=q), critic_target=_Fixed(q_all=q))
    # Per member: max over allowed, summed: k0 = 2 + 0, k1 = 3 + 4.
    torch.testing.assert_close(bcq.constrained_max(nets, nets.critic_target, None, bcq.BCQConfig()), torch.tensor([[2.0], [7.0]]))
    # Acting: argmax of mean over members among allowed: sub0 mean [2, 4.5, 0.5] -> allowed {0, 2} -> 0.
    assert bcq.act(nets, torch.zeros(1, OBS), bcq.BCQConfig(), True).tolist() == [[0, 0]]


def test_bcq_target_takes_min_over_members():
    q = torch.tensor([[[[1.0, 0.0]]], [[[-2.0, 0.0]]]])  # K=2, B=1, N=1, M=2
    nets = Nets(actor=_Fixed(logits=torch.tensor([[[0.0, -10.0]]])), critic=_Fixed(torch.zeros(2, 1)),
                critic_target=_Fixed(q_all=q))
    batch = Batch(torch.zeros(1, OBS), torch.zeros(1, 1, dtype=torch.long), torch.zeros(1), torch.zeros(1, OBS), torch.zeros(1))
    loss, _ = bcq.critic_loss(nets, batch, bcq.BCQConfig())
    torch.testing.assert_close(loss, 2 * torch.tensor(0.99 * -2.0) ** 2)


def test_corruption_frequencies():
    nvec = (4, 5, 6)
    B = 40000
    g = torch.Generator().manual_seed(0)
    acts = torch.stack([torch.randint(m, (B,), generator=g) for m in nvec], dim=1)
    tokens, chosen = corrupt(acts, nvec, torch.Generator().manual_seed(1))
    m = torch.tensor(nvec)
    assert abs(chosen.float().mean().item() - 0.15) < 0.005
    assert torch.equal(tokens[~chosen], acts[~chosen])
    assert ((tokens >= 0) & (tokens <= m)).all()
    is_mask = tokens == m
    assert not (is_mask & ~chosen).any()
    n = chosen.sum().item()
    assert abs(is_mask[chosen].float().mean().item() - 0.8) < 0.01
    changed = chosen & ~is_mask & (tokens != acts)
    # Random replacement hits the original value with prob 1/m_i.
    expect_changed = (0.1 * (1 - 1 / m.float())).expand(B, -1)[chosen].mean().item()
    assert abs(changed.sum().item() / n - expect_changed) < 0.01
    t2, c2 = corrupt(acts, nvec, torch.Generator().manual_seed(1))
    assert torch.equal(t2, tokens) and torch.equal(c2, chosen)


def test_corruption_guarantees_one_choice():
    acts = torch.zeros(4, 3, dtype=torch.long)
    for seed in range(5):
        _, chosen = corrupt(acts, NVEC, torch.Generator().manual_seed(seed), mask_prob=0.0)
        assert chosen.sum().item() == 1


def test_asm_loss_is_ce_on_chosen_positions():
    torch.manual_seed(0)
    asm = ActionStructureModel(OBS, NVEC, CFG).eval()
    batch = _batch(b=32)
    loss, info = asm_loss(asm, batch.obs, batch.actions, MAMConfig(), torch.Generator().manual_seed(3))
    tokens, chosen = corrupt(batch.actions, NVEC, torch.Generator().manual_seed(3))
    logits = asm(batch.obs, tokens)
    ce = F.cross_entropy(logits[chosen], batch.actions[chosen])
    torch.testing.assert_close(loss, ce)
    assert info["masked_count"].shape == (3,) and info["masked_count"].sum().item() == chosen.sum().item()
    assert (info["masked_correct"] <= info["masked_count"]).all()
    loss.backward()
    assert asm.embed.weight.grad is not None


def test_spin_actor_loss_updates_only_queries_and_heads():
    torch.manual_seed(0)
    asm = ActionStructureModel(OBS, NVEC, CFG)
    actor = build_actor("spin", OBS, NVEC, CFG, asm=asm)
    nets = build_nets(actor, OBS, NVEC, CFG, iql.UPDATES, iql.TARGETS)
    frozen = {k: v.clone() for k, v in actor.state_dict().items() if k.startswith(("state_encoder", "blocks"))}
    queries, heads = actor.queries.detach().clone(), actor.heads.w2.detach().clone()
    opt = torch.optim.Adam(actor.trainable_parameters(), lr=1e-2)
    batch = _batch()
    for _ in range(3):
        loss, _ = iql.actor_loss(nets, batch, iql.IQLConfig())
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k, v in frozen.items():
        assert torch.equal(actor.state_dict()[k], v), k
    assert all(p.grad is None for p in actor.blocks.parameters())
    assert not torch.equal(actor.queries, queries) and not torch.equal(actor.heads.w2, heads)
    for k, v in asm.state_dict().items():
        if k.startswith(("state_encoder", "blocks")):
            assert torch.equal(v, frozen[k])


@pytest.mark.parametrize("algo", ["iql", "awac", "bcq"])
@pytest.mark.parametrize("kind", ["factored", "autoregressive", "saint", "spin"])
def test_every_algorithm_and_actor_runs(algo, kind):
    torch.manual_seed(0)
    module, cfg = ALGORITHMS[algo], CONFIGS[algo]()
    asm = ActionStructureModel(OBS, NVEC, CFG) if kind == "spin" else None
    actor = build_actor(kind, OBS, NVEC, CFG, asm=asm)
    nets = build_nets(actor, OBS, NVEC, CFG, module.UPDATES, module.TARGETS)
    assert (nets.value is not None) == ("value" in module.UPDATES)
    assert (nets.value_target is not None) == ("value" in module.TARGETS)
    batch = _batch()
    for name in module.UPDATES:
        loss, info = getattr(module, f"{name}_loss")(nets, batch, cfg)
        assert loss.ndim == 0 and torch.isfinite(loss), (name, loss)
        assert all(not v.requires_grad and torch.isfinite(v).all() for v in info.values())
        net = getattr(nets, name)
        net.zero_grad()
        loss.backward()
        grads = [p.grad for p in net.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), name
    for name in module.TARGETS:
        polyak(getattr(nets, f"{name}_target"), getattr(nets, name), cfg.polyak)
    g = torch.Generator().manual_seed(0)
    nv = torch.tensor(NVEC)
    for det in (True, False):
        a = module.act(nets, batch.obs, cfg, deterministic=det, generator=g)
        assert a.shape == (6, 3) and a.dtype == torch.long and ((a >= 0) & (a < nv)).all()
