"""Adam whose step is one fused kernel call without torch.optim's per-step Python bookkeeping."""

from __future__ import annotations

import torch


class FusedAdam(torch.optim.Adam):
    """``torch.optim.Adam(fused=True)`` with a short path through ``step()``.

    torch's step regroups the tensors by device and dtype and re-reads every group's options on each
    call, Python work that matters for the small networks (three calls per IQL step). When every group is
    plain Adam (no amsgrad, maximize, weight decay or tensor lr) and every parameter has a grad and its
    state, all on one device and dtype, this calls the same ``_foreach_add_`` and ``_fused_adam_`` kernels
    torch would with the same arguments, so results are bit-identical (tests/test_optim.py); anything else
    goes to torch's own step. Step hooks still run: torch wraps this ``step`` as it wraps Adam's. The state
    dict is torch's own.
    """

    def __init__(self, params, lr: float = 1e-3, **kwargs):
        super().__init__(params, lr=lr, fused=True, **kwargs)

    def _plain(self) -> bool:
        return all(
            not g["amsgrad"]
            and not g["maximize"]
            and g["weight_decay"] == 0
            and not g["capturable"]
            and not g["differentiable"]
            and not g.get("decoupled_weight_decay", False)
            and not torch.is_tensor(g["lr"])
            for g in self.param_groups
        )

    def _torch_step(self, closure=None):
        """torch's Adam step without the hook wrapper torch puts around it (this class's step has its own)."""
        step = torch.optim.Adam.step
        return (step.__wrapped__ if getattr(step, "hooked", False) else step)(self, closure)

    def step(self, closure=None):  # noqa: D102  (torch's signature; torch wraps it with the step hooks)
        if closure is not None or not self._plain():
            return self._torch_step(closure)
        work = []
        for g in self.param_groups:
            ps = g["params"]
            if not ps:
                continue
            if any(p.grad is None or p not in self.state for p in ps):
                return self._torch_step()  # first step (state created there) or a parameter without a grad
            st = [self.state[p] for p in ps]
            work.append((g, ps, st))
        ref = work[0][1][0] if work else None
        for g, ps, st in work:
            if any(p.device != ref.device or p.dtype != ref.dtype or p.grad.dtype != ref.dtype for p in ps):
                return self._torch_step()
            steps = [s["step"] for s in st]
            torch._foreach_add_(steps, 1)
            beta1, beta2 = g["betas"]
            torch._fused_adam_(
                ps,
                [p.grad for p in ps],
                [s["exp_avg"] for s in st],
                [s["exp_avg_sq"] for s in st],
                [],
                steps,
                amsgrad=False,
                lr=g["lr"],
                beta1=float(beta1),
                beta2=float(beta2),
                weight_decay=0.0,
                eps=g["eps"],
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )
        return None
