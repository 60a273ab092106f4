"""Closed-form checks of the networks: shapes, masking, equivalence to per-sub-action loops."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spinrl.errors import CheckpointError, ConfigError
from spinrl.models import (
    NEG,
    ActionStructureModel,
    AutoregressiveActor,
    FactoredMLPActor,
    FactoredTwinCritic,
    ModelConfig,
    StateEncoder,
    SubActionHeads,
    TransformerActor,
    TransformerBlock,
    ValueNet,
    build_actor,
)
from spinrl.models.actors import Actor
from spinrl.models.layers import padding_index, to_padded

NVEC = (2, 5, 3)
OBS = 6
CFG = ModelConfig(
    d_model=16, n_heads=2, n_blocks=2, head_hidden=8, mlp_hidden=16, critic_hidden=16,
    lstm_hidden=16, lstm_layers=2, sub_action_embed=4,
)


def _obs(b=5, seed=0):
    return torch.randn(b, OBS, generator=torch.Generator().manual_seed(seed))


def _acts(b=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(m, (b,), generator=g) for m in NVEC], dim=1)


def _actors():
    torch.manual_seed(0)
    asm = ActionStructureModel(OBS, NVEC, CFG)
    return {k: build_actor(k, OBS, NVEC, CFG, asm=asm) for k in ("factored", "autoregressive", "saint", "spin")}


def test_block_shape_and_permutation_equivariance():
    torch.manual_seed(0)
    block = TransformerBlock(16, 2, 0.1).eval()
    x = torch.randn(3, 7, 16)
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    y = block(x)
    assert y.shape == x.shape
    torch.testing.assert_close(block(x[:, perm]), y[:, perm], rtol=1e-5, atol=1e-5)


def test_block_matches_reference_prenorm_with_torch_mha():
    torch.manual_seed(0)
    block = TransformerBlock(16, 2, 0.0).eval()
    mha = nn.MultiheadAttention(16, 2, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(block.qkv.weight)
        mha.in_proj_bias.copy_(block.qkv.bias)
        mha.out_proj.weight.copy_(block.out_proj.weight)
        mha.out_proj.bias.copy_(block.out_proj.bias)
    x = torch.randn(2, 4, 16)
    h = block.ln1(x)
    ref = x + mha(h, h, h, need_weights=False)[0]
    ref = ref + block.ffn(block.ln2(ref))
    torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)


def test_state_encoder_tokens():
    enc = StateEncoder(OBS, 16, n_tokens=3)
    assert enc(_obs()).shape == (5, 3, 16)


def test_sub_action_heads_equal_separate_modules():
    torch.manual_seed(0)
    heads = SubActionHeads(8, NVEC, hidden=4, dropout=0.0)
    x = torch.randn(5, 3, 8)
    out = heads(x)
    assert out.shape == (5, 3, 5)
    for i, m in enumerate(NVEC):
        l1, l2 = nn.Linear(8, 4), nn.Linear(4, m)
        with torch.no_grad():
            l1.weight.copy_(heads.w1[i].T)
            l1.bias.copy_(heads.b1[i])
            l2.weight.copy_(heads.w2[i, :, :m].T)
            l2.bias.copy_(heads.b2[i, :m])
        torch.testing.assert_close(out[:, i, :m], l2(F.gelu(l1(x[:, i]))))
        assert (out[:, i, m:] == NEG).all()
        torch.testing.assert_close(heads.one(x[:, i], i), out[:, i])


def test_sub_action_heads_init_like_linear():
    heads = SubActionHeads(64, (4, 9), hidden=32)
    assert heads.w1.abs().max() <= 1 / 64**0.5 and heads.w2.abs().max() <= 1 / 32**0.5
    assert heads.w1.std() > 0.5 / (3 * 64) ** 0.5  # not all zero: uniform(+-1/sqrt(fan_in))
    assert (heads.w2[0, :, 4:] == 0).all()


def test_asm_forward_and_mask_tokens():
    asm = ActionStructureModel(OBS, NVEC, CFG).eval()
    assert asm.mask_tokens().tolist() == list(NVEC)
    assert asm.embed.num_embeddings == sum(m + 1 for m in NVEC)
    tokens = asm.mask_tokens().expand(5, -1)
    logits = asm(_obs(), tokens)
    assert logits.shape == (5, 3, 5)
    assert (logits[:, 0, 2:] == NEG).all() and (logits[:, 2, 3:] == NEG).all()
    # Distinct [MASK] rows: sub-action i's mask uses row offset_i + m_i.
    assert asm.token_offsets_N.tolist() == [0, 3, 9]


@pytest.mark.parametrize("kind", ["factored", "autoregressive", "saint", "spin"])
def test_actor_log_prob_sample_mode(kind):
    actor = _actors()[kind].eval()
    assert isinstance(actor, Actor)
    obs, act = _obs(), _acts()
    logp = actor.log_prob(obs, act)
    assert logp.shape == (5,)
    if actor.factored:
        logits = actor.logits(obs)
        assert (logits.masked_select(~torch.tensor([[j < m for j in range(5)] for m in NVEC])) == NEG).all()
        ref = sum(F.log_softmax(logits[:, i, :m], -1).gather(1, act[:, i : i + 1]).squeeze(1) for i, m in enumerate(NVEC))
    else:
        ref = _ar_loop_log_prob(actor, obs, act)
    torch.testing.assert_close(logp, ref, rtol=1e-5, atol=1e-5)
    nv = torch.tensor(NVEC)
    s = actor.sample(obs)
    assert s.shape == (5, 3) and s.dtype == torch.long and ((s >= 0) & (s < nv)).all()
    k = actor.sample_k(obs, 4)
    assert k.shape == (5, 4, 3) and ((k >= 0) & (k < nv)).all()
    md = actor.mode(obs)
    assert md.shape == (5, 3) and ((md >= 0) & (md < nv)).all()
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(actor.sample_k(obs, 3, g1), actor.sample_k(obs, 3, g2))
    assert torch.equal(actor.sample(obs, g1), actor.sample(obs, g2))


def _ar_loop_log_prob(actor: AutoregressiveActor, obs, act):
    """Reference: step the LSTM one sub-action at a time, feeding the true previous sub-action."""
    state = actor.state_embed(obs)
    tok = torch.zeros(obs.shape[0], dtype=torch.long)
    hc, total = None, torch.zeros(obs.shape[0])
    for i, m in enumerate(NVEC):
        x = torch.cat([state, actor.embed(tok)], -1)[:, None]
        out, hc = actor.lstm(x, hc)
        h = F.gelu(out[:, 0] @ actor.heads.w1[i] + actor.heads.b1[i])
        logits = h @ actor.heads.w2[i, :, :m] + actor.heads.b2[i, :m]
        total = total + F.log_softmax(logits, -1).gather(1, act[:, i : i + 1]).squeeze(1)
        tok = 1 + sum(NVEC[:i]) + act[:, i]
    return total


def test_ar_sampling_is_consistent_with_log_prob():
    """With one state and a peaked conditional chain, empirical frequencies follow exp(log_prob)."""
    torch.manual_seed(0)
    actor = AutoregressiveActor(OBS, (2, 2), CFG).eval()
    obs = _obs(1).expand(4000, -1)
    with torch.no_grad():
        s = actor.sample(obs, torch.Generator().manual_seed(0))
        flat = s[:, 0] * 2 + s[:, 1]
        freq = torch.bincount(flat, minlength=4).float() / 4000
        all_a = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
        p = actor.log_prob(obs[:4], all_a).exp()
    torch.testing.assert_close(p.sum(), torch.tensor(1.0))
    assert (freq - p).abs().max() < 0.04


def test_factored_sampling_frequencies():
    actor = FactoredMLPActor(OBS, NVEC, CFG)
    obs = _obs(1)
    with torch.no_grad():
        probs = actor.logits(obs).softmax(-1)[0]
        s = actor.sample_k(obs, 20000, torch.Generator().manual_seed(0))[0]
    for i, m in enumerate(NVEC):
        freq = torch.bincount(s[:, i], minlength=5).float() / 20000
        assert (freq - probs[i]).abs().max() < 0.02


def test_critic_equals_member_subaction_loop():
    torch.manual_seed(0)
    critic = FactoredTwinCritic(OBS, NVEC, hidden=16, members=2)
    obs, act = _obs(), _acts()
    q = critic(obs, act)
    q_all = critic.q_all(obs)
    assert q.shape == (2, 5) and q_all.shape == (2, 5, 3, 5)
    offs = [0, 2, 7]
    for k in range(2):
        x = obs
        in_out = [*critic.weights, critic.output.weight.transpose(1, 2)]
        for layer in range(3):
            x = x @ in_out[layer][k] + critic.biases[layer][k]
            if layer < 2:
                x = torch.relu(x)
        ref = torch.zeros(5)
        for i, m in enumerate(NVEC):
            qi = x[:, offs[i] : offs[i] + m]
            torch.testing.assert_close(q_all[k, :, i, :m], qi)
            assert (q_all[k, :, i, m:] == 0).all()
            ref = ref + qi.gather(1, act[:, i : i + 1]).squeeze(1)
        torch.testing.assert_close(q[k], ref)


@pytest.mark.parametrize("dense_rows", [True, False], ids=["one-hot", "embedding-bag"])
def test_critic_chosen_rows_path_matches_full_product_with_gradients(dense_rows):
    """forward() sums only the chosen output rows (either way); values and gradients equal the full
    [B, sum m] product's."""
    torch.manual_seed(0)
    critic = FactoredTwinCritic(OBS, NVEC, hidden=16, members=2)
    critic.dense_rows = dense_rows
    obs, act = _obs(), _acts()
    offs = torch.tensor([0, 2, 7])
    grads = []
    for path in ("rows", "full"):
        critic.zero_grad()
        if path == "rows":
            q = critic(obs, act)
        else:
            q = critic.q_concat(obs).gather(2, (act + offs).unsqueeze(0).expand(2, -1, -1)).sum(-1)
        (q * torch.arange(1.0, 11.0).view(2, 5)).sum().backward()
        grads.append([p.grad.clone() for p in critic.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_critic_loads_in_major_output_layer_state_dict():
    torch.manual_seed(0)
    critic = FactoredTwinCritic(OBS, NVEC, hidden=16, members=2)
    old = dict(critic.state_dict())
    old["weights.2"] = old.pop("output.weight").transpose(1, 2).contiguous()  # the layout before out-major
    fresh = FactoredTwinCritic(OBS, NVEC, hidden=16, members=2)
    fresh.load_state_dict(old)
    torch.testing.assert_close(fresh(_obs(), _acts()), critic(_obs(), _acts()), rtol=0, atol=0)


def test_critic_picks_the_row_sum_by_cardinality():
    from spinrl.models import fast

    assert fast.dense_rows(3 * 38, 38)  # dog, 3 bins: one-hot matmul
    assert not fast.dense_rows(30 * 38, 38)  # dog, 30 bins: embedding_bag


def test_value_net_shape():
    assert ValueNet(OBS, 16)(_obs()).shape == (5,)


def test_from_asm_copies_and_freezes():
    torch.manual_seed(0)
    asm = ActionStructureModel(OBS, NVEC, CFG)
    actor = TransformerActor.from_asm(asm)
    for name, p in asm.state_encoder.state_dict().items():
        assert torch.equal(actor.state_encoder.state_dict()[name], p)
    for name, p in asm.blocks.state_dict().items():
        assert torch.equal(actor.blocks.state_dict()[name], p)
    assert all(not p.requires_grad for p in actor.state_encoder.parameters())
    assert all(not p.requires_grad for p in actor.blocks.parameters())
    trainable = {id(p) for p in actor.trainable_parameters()}
    assert trainable == {id(actor.queries)} | {id(p) for p in actor.heads.parameters()}
    # A copy, not shared storage: changing the actor leaves the ASM alone.
    with torch.no_grad():
        next(actor.blocks.parameters()).add_(1.0)
    assert not torch.equal(next(actor.blocks.parameters()), next(asm.blocks.parameters()))
    # Dropout stays active in the frozen blocks in train mode (paper's code).
    actor.train()
    obs = _obs()
    assert not torch.equal(actor.logits(obs), actor.logits(obs))


def test_from_asm_mismatch_raises():
    asm = ActionStructureModel(OBS, NVEC, CFG)
    with pytest.raises(CheckpointError, match="d_model"):
        TransformerActor.from_asm(asm, ModelConfig(d_model=32, n_heads=2, n_blocks=2))
    with pytest.raises(CheckpointError, match="n_blocks"):
        TransformerActor.from_asm(asm, ModelConfig(d_model=16, n_heads=2, n_blocks=3))
    with pytest.raises(CheckpointError, match="nvec"):
        build_actor("spin", OBS, (2, 5, 4), CFG, asm=asm)
    with pytest.raises(CheckpointError, match="obs_dim"):
        build_actor("spin", OBS + 1, NVEC, CFG, asm=asm)
    with pytest.raises(ConfigError, match="--asm"):
        build_actor("spin", OBS, NVEC, CFG)
    with pytest.raises(ConfigError, match="unknown"):
        build_actor("mlp", OBS, NVEC, CFG)


def test_model_config_validation():
    with pytest.raises(ConfigError, match="n_heads"):
        ModelConfig(d_model=10, n_heads=4)
    with pytest.raises(ConfigError, match="dropout"):
        ModelConfig(dropout=1.5)
    with pytest.raises(ConfigError, match="n_blocks"):
        ModelConfig(n_blocks=0)


def test_cpu_dropout_mask_rate_scale_gradient_and_seed():
    from spinrl.models.layers import dropout

    x = torch.ones(400, 500, requires_grad=True)
    torch.manual_seed(3)
    y = dropout(x, 0.1, True)
    keep = y.detach() > 0
    assert abs(keep.float().mean().item() - 0.9) < 0.005  # 200k draws: std of the rate ~0.0007
    assert torch.allclose(y.detach()[keep], torch.full_like(y.detach()[keep], 1 / 0.9))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * mask)/dx = mask
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.1, True), y)  # the seed fixes the mask
    assert dropout(x, 0.1, False) is x and dropout(x, 0.0, True) is x
    # The mask is the documented rule (keep iff 16-bit draw >= p * 2^16 - 2^15), so results made before
    # the mask was written straight in float are reproduced bit for bit.
    z = torch.randn(37, 11)
    torch.manual_seed(5)
    bits = torch.randint(-(2**63), 2**63 - 1, ((z.numel() + 3) // 4,), dtype=torch.int64)
    mask = bits.view(torch.int16)[: z.numel()].view(z.shape) >= -32768 + round(0.1 * 65536)
    torch.manual_seed(5)
    assert torch.equal(dropout(z, 0.1, True), z * mask.float().mul_(1.0 / 0.9))


def test_block_attention_training_path_matches_sdpa():
    """The written-out CPU training attention equals SDPA's when dropout draws nothing."""
    from spinrl.models.layers import TransformerBlock

    torch.manual_seed(0)
    block = TransformerBlock(32, 4, dropout=0.0).train()
    x = torch.randn(8, 10, 32)
    ref = block(x)  # SDPA (no dropout)
    block.dropout = 1e-9  # written-out path; p * 2^16 rounds to 0, so nothing is dropped
    assert torch.allclose(block(x), ref, atol=1e-5)


@pytest.mark.parametrize("B,T,H,dh", [(4, 7, 4, 8), (3, 5, 2, 4)])
def test_dropout_attention_backward_matches_autograd_of_the_composition(B, T, H, dh):
    """The CPU training attention (written-out backward) equals autograd through softmax, the same
    dropout mask and the two products: same seed, same masks, float64 to machine precision."""
    from spinrl.models.fast import DropoutAttention
    from spinrl.models.layers import dropout

    def composition(qkv):
        q, k, v = qkv.view(B, T, 3, H, dh).permute(2, 0, 3, 1, 4).unbind(0)
        w = torch.softmax((q * dh**-0.5) @ k.transpose(-2, -1), dim=-1)
        return (dropout(w, 0.3, True) @ v).transpose(1, 2).reshape(B, T, H * dh)

    qkv = torch.randn(B, T, 3 * H * dh, dtype=torch.float64, requires_grad=True)
    g = torch.randn(B, T, H * dh, dtype=torch.float64)
    torch.manual_seed(1)
    y_ref = composition(qkv)
    (g_ref,) = torch.autograd.grad(y_ref, qkv, g)
    torch.manual_seed(1)
    y = DropoutAttention.apply(qkv, H, 0.3)
    (g_new,) = torch.autograd.grad(y, qkv, g)
    assert not torch.allclose(composition(qkv), y_ref)  # another mask, another output: dropout is active
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_new, g_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nvec", [(3, 3, 3, 3), (2, 5, 3), (10, 10)])
def test_padded_layout_and_log_prob_match_loops(nvec):
    """to_padded (a view for equal cardinalities, a gather otherwise) and log_prob (transposed kernel for
    fewer choices than one CPU vector holds) against per-sub-action loops, for critic, DecQN and factored actor layouts."""
    g = torch.Generator().manual_seed(0)
    index, valid = padding_index(nvec)
    flat = torch.randn(2, 5, sum(nvec), generator=g)
    pad = to_padded(flat, index, valid, -7.0)
    offs = [sum(nvec[:i]) for i in range(len(nvec))]
    assert pad.shape == (2, 5, len(nvec), max(nvec))
    for i, m in enumerate(nvec):
        assert torch.equal(pad[:, :, i, :m], flat[:, :, offs[i] : offs[i] + m])
        assert (pad[:, :, i, m:] == -7.0).all()
    actor = FactoredMLPActor(OBS, nvec, CFG)
    obs = _obs()
    act = torch.stack([torch.randint(m, (5,), generator=g) for m in nvec], dim=1)
    out = actor.net(obs)
    ref = sum(F.log_softmax(out[:, o : o + m], -1).gather(1, act[:, i : i + 1]).squeeze(1)
              for i, (o, m) in enumerate(zip(offs, nvec)))
    torch.testing.assert_close(actor.log_prob(obs, act), ref, rtol=1e-5, atol=1e-5)
    critic = FactoredTwinCritic(OBS, nvec, hidden=16, members=2)
    q_all, q_cat = critic.q_all(obs, fill=3.0), critic.q_concat(obs)
    for i, (o, m) in enumerate(zip(offs, nvec)):
        assert torch.equal(q_all[:, :, i, :m], q_cat[:, :, o : o + m]) and (q_all[:, :, i, m:] == 3.0).all()


@pytest.mark.parametrize("T", [3, 7, 13, 16, 39])
def test_written_out_softmax_equals_torch_on_either_side_of_one_cpu_vector(T, monkeypatch):
    """fast.softmax / fast.softmax_backward (max, exp, sum where T is shorter than one CPU vector) equal
    torch's kernels: forced down either path, in fp32, and bf16 in / fp32 out as autocast's softmax gives."""
    from spinrl.models import fast

    g = torch.Generator().manual_seed(T)
    s, gw = torch.randn(6, T, T, generator=g), torch.randn(6, T, T, generator=g)
    w_ref = torch.softmax(s, -1)
    assert fast.short_lastdim(s) == (T < fast.cpu_vector_floats())
    for width in (1, 64):  # 1: torch's kernels everywhere; 64: written out everywhere
        monkeypatch.setattr(fast, "cpu_vector_floats", lambda: width)
        w = fast.softmax(s)
        torch.testing.assert_close(w, w_ref)
        torch.testing.assert_close(fast.softmax_backward(gw, w),
                                   torch.ops.aten._softmax_backward_data(gw, w_ref, -1, torch.float32))
        wb = fast.softmax(s.bfloat16())
        assert wb.dtype == torch.float32
        torch.testing.assert_close(wb, torch.softmax(s.bfloat16().float(), -1))


@pytest.mark.parametrize("nvec", [(2, 5, 3), (12, 15, 20)])
def test_fast_paths_compute_the_plain_functions(nvec, monkeypatch):
    """Across the one switch (fast.ENABLED) every network computes the same function: critic rows (one-hot
    and embedding_bag), log-likelihoods and probabilities over short and long last dims, and the whole SAINT
    actor in training (attention with a dropout that draws nothing), forward and backward."""
    from spinrl.models import distributions as dist
    from spinrl.models import fast

    obs = _obs(16)
    g = torch.Generator().manual_seed(1)
    act = torch.stack([torch.randint(m, (16,), generator=g) for m in nvec], dim=1)
    torch.manual_seed(0)
    critic = FactoredTwinCritic(OBS, nvec, hidden=16)
    actor = TransformerActor(OBS, nvec, dataclasses.replace(CFG, dropout=1e-9)).train()  # p * 2^16 rounds to 0
    out = {}
    for enabled in (True, False):
        monkeypatch.setattr(fast, "ENABLED", enabled)
        critic.zero_grad(), actor.zero_grad()
        q = critic(obs, act)
        logp = actor.log_prob(obs, act)
        (q.sum() + logp.sum()).backward()
        grads = [p.grad.clone() for p in [*critic.parameters(), *actor.parameters()]]
        logits = actor.logits(obs).detach()
        out[enabled] = [q, logp, dist.probs(logits), dist.log_probs_each(logits, act), *grads]
    for fast_t, plain_t in zip(out[True], out[False]):
        torch.testing.assert_close(fast_t, plain_t, rtol=1e-5, atol=1e-6)


def test_trunk_is_one_module_and_keeps_the_checkpoint_layout():
    """The ASM and the SAINT/SPIN actor are the one Trunk plus their tokens and heads. Parameter names and
    order are those of every saved asm.pt / policy.pt / optimizer state (so they load unchanged): pinned here."""
    from spinrl.models import Trunk

    cfg = dataclasses.replace(CFG, n_blocks=1)
    block = ["ln1.weight", "ln1.bias", "qkv.weight", "qkv.bias", "out_proj.weight", "out_proj.bias", "ln2.weight",
             "ln2.bias", "ffn.0.weight", "ffn.0.bias", "ffn.3.weight", "ffn.3.bias"]
    encoder = ["state_encoder.net.0.weight", "state_encoder.net.0.bias", "state_encoder.net.2.weight",
               "state_encoder.net.2.bias"]
    heads = ["heads.w1", "heads.b1", "heads.w2", "heads.b2"]
    asm = ActionStructureModel(OBS, NVEC, cfg)
    actor = TransformerActor(OBS, NVEC, cfg)
    assert isinstance(asm, Trunk) and isinstance(actor, Trunk)
    assert [n for n, _ in asm.named_parameters()] == [*encoder, "embed.weight", *(f"blocks.0.{k}" for k in block), *heads]
    # (a module's own parameters come before its children's: the queries first)
    assert [n for n, _ in actor.named_parameters()] == ["queries", *encoder, *(f"blocks.0.{k}" for k in block), *heads]
    assert list(asm.state_dict()) == [n for n, _ in asm.named_parameters()]
    # the SPIN actor's trunk is the ASM's, and a state dict saved from one actor loads into another strictly
    spin = TransformerActor.from_asm(asm)
    for part in Trunk.SHARED:
        for (n, a), b in zip(getattr(spin, part).state_dict().items(), getattr(asm, part).state_dict().values()):
            assert torch.equal(a, b), n
    TransformerActor(OBS, NVEC, cfg).load_state_dict(spin.state_dict(), strict=True)
