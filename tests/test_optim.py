"""FusedAdam's short step path must be torch's fused Adam exactly, and fall back wherever it cannot be."""

import copy

import torch
from torch import nn

from spinrl.utils.optim import FusedAdam


def _pair(seed=0):
    torch.manual_seed(seed)
    a = nn.Sequential(nn.Linear(7, 16), nn.ReLU(), nn.Linear(16, 3))
    return a, copy.deepcopy(a)


def _train(net, opt, steps, seed=1, skip_grad_of=None):
    g = torch.Generator().manual_seed(seed)
    for i in range(steps):
        x = torch.randn(32, 7, generator=g)
        opt.zero_grad(set_to_none=True)
        net(x).pow(2).mean().backward()
        if skip_grad_of is not None and i % 2:
            skip_grad_of.grad = None  # a parameter without a grad this step: torch skips it
        opt.step()


def test_bit_identical_to_torch_fused_adam():
    a, b = _pair()
    ta = torch.optim.Adam(a.parameters(), lr=3e-3, fused=True)
    fb = FusedAdam(b.parameters(), lr=3e-3)
    _train(a, ta, 40)
    _train(b, fb, 40)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    sa, sb = ta.state_dict(), fb.state_dict()
    assert sa["param_groups"][0]["lr"] == sb["param_groups"][0]["lr"]
    for k in sa["state"]:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa["state"][k][name], sb["state"][k][name])


def test_param_groups_and_missing_grads_match_torch():
    a, b = _pair(3)
    groups = lambda n: [{"params": list(n[0].parameters()), "lr": 1e-2}, {"params": list(n[2].parameters())}]  # noqa: E731
    ta = torch.optim.Adam(groups(a), lr=1e-3, fused=True)
    fb = FusedAdam(groups(b), lr=1e-3)
    _train(a, ta, 12, skip_grad_of=a[2].bias)
    _train(b, fb, 12, skip_grad_of=b[2].bias)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_state_dict_loads_into_torch_adam_and_back():
    a, b = _pair(5)
    fb = FusedAdam(b.parameters(), lr=1e-3)
    _train(b, fb, 5)
    a.load_state_dict(b.state_dict())
    ta = torch.optim.Adam(a.parameters(), lr=1e-3, fused=True)
    ta.load_state_dict(copy.deepcopy(fb.state_dict()))  # as from a checkpoint: FusedAdam's resumes in torch's Adam
    _train(a, ta, 5, seed=9)
    _train(b, fb, 5, seed=9)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_step_hooks_run_once_per_step():
    a, b = _pair(7)
    calls = []
    fb = FusedAdam(b.parameters(), lr=1e-3)
    fb.register_step_post_hook(lambda opt, args, kwargs: calls.append(1))
    _train(b, fb, 3)
    assert len(calls) == 3
    ta = torch.optim.Adam(a.parameters(), lr=1e-3, fused=True)
    _train(a, ta, 3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_state_saved_by_foreach_adam_continues_in_fused_adam():
    """Behaviour runs and carries saved before the learner switched to FusedAdam (torch's foreach Adam)
    continue in it: the state loads, and the next steps match foreach Adam's to float tolerance."""
    a, b = _pair()
    ta = torch.optim.Adam(a.parameters(), lr=3e-3, foreach=True)
    _train(a, ta, 10)
    b.load_state_dict(a.state_dict())
    fb = FusedAdam(b.parameters(), lr=3e-3)
    fb.load_state_dict(copy.deepcopy(ta.state_dict()))
    _train(a, ta, 10, seed=2)
    _train(b, fb, 10, seed=2)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
    assert int(fb.state[next(b.parameters())]["step"]) == 20
