"""Does an ASM know the action structure? Leave-one-out reconstruction on held-out data.

SPIN can only help where the dataset's sub-actions depend on each other (and on the state) in a way
the ASM learned. This measures it before any policy is trained: each sub-action in turn is replaced by
[MASK] with the rest kept, and the ASM predicts it. ``slot_acc`` is the accuracy per sub-action;
``exact`` is the share of rows whose every sub-action is predicted right (the joint action recovered
one slot at a time). Two baselines put the numbers in scale: ``independent`` predicts each sub-action's
most frequent value in the training data (no state, no other sub-actions), and ``random`` is the same
ASM at its initialisation (the paper's "epoch 0").
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch

from spinrl.models import ActionStructureModel


@torch.no_grad()
def leave_one_out_correct(
    asm: ActionStructureModel, obs_BD: torch.Tensor, act_BN: torch.Tensor, chunk_rows: int = 65536
) -> torch.Tensor:
    """Bool [B, N]: is sub-action i predicted right when it alone is [MASK]ed?

    The batch is repeated N times (copy i masks slot i), so one forward pass covers every slot.
    """
    B, N = act_BN.shape
    m_N = torch.as_tensor(asm.nvec, dtype=torch.long, device=act_BN.device)
    eye_NN = torch.eye(N, dtype=torch.bool, device=act_BN.device)
    out = []
    step = max(1, chunk_rows // N)
    for s in range(0, B, step):
        a = act_BN[s : s + step]
        b = a.shape[0]
        tokens_bNN = torch.where(eye_NN, m_N, a.unsqueeze(1).expand(b, N, N))  # copy i: slot i masked
        logits = asm(obs_BD[s : s + step].repeat_interleave(N, 0), tokens_bNN.reshape(b * N, N))  # [b*N, N, M]
        pred_bNN = logits.argmax(-1).reshape(b, N, N)
        pred_bN = pred_bNN.diagonal(dim1=1, dim2=2)  # copy i's prediction at slot i
        out.append(pred_bN == a)
    return torch.cat(out)


def _summary(correct_BN: torch.Tensor) -> dict:
    c = correct_BN.float()
    return {
        "slot_acc_mean": float(c.mean()),
        "exact": float(correct_BN.all(1).float().mean()),
        "slot_acc": [round(float(x), 4) for x in c.mean(0)],
    }


def marginal_modes(actions_TN: np.ndarray, nvec: Iterable[int]) -> np.ndarray:
    """Each sub-action's most frequent value in ``actions_TN`` (the independence baseline's prediction)."""
    return np.array([np.bincount(np.asarray(actions_TN[:, i]), minlength=int(m)).argmax() for i, m in enumerate(nvec)])


def structure_diagnostics(
    asm: ActionStructureModel, random_asm: ActionStructureModel, batches: list, modes_N: np.ndarray
) -> dict:
    """Leave-one-out reconstruction of the trained ASM, a random ASM and the independence baseline.

    Args:
        asm: The pretrained ASM (eval mode).
        random_asm: The same architecture at its initial weights.
        batches: Held-out ``(obs_BD, act_BN)`` tensor pairs.
        modes_N: Per-sub-action most frequent value in the training data.

    Returns:
        ``{"asm": {...}, "random": {...}, "independent": {...}, "exact_vs_random": x, "exact_vs_independent": x,
        "rows": R}``; each inner dict has ``slot_acc_mean``, ``exact`` and per-slot ``slot_acc``.
    """
    asm.eval()
    random_asm.eval()
    ours, rnd, ind = [], [], []
    for obs, act in batches:
        ours.append(leave_one_out_correct(asm, obs, act))
        rnd.append(leave_one_out_correct(random_asm, obs, act))
        ind.append(act == torch.as_tensor(modes_N, device=act.device).unsqueeze(0))
    res: dict[str, Any] = {
        "asm": _summary(torch.cat(ours)),
        "random": _summary(torch.cat(rnd)),
        "independent": _summary(torch.cat(ind)),
    }
    for k in ("random", "independent"):
        base = res[k]["exact"]
        res[f"exact_vs_{k}"] = round(res["asm"]["exact"] / base, 2) if base > 0 else None
    res["rows"] = int(sum(a.shape[0] for _, a in batches))
    return res


def describe(d: dict) -> str:
    """One line for a terminal: the ASM against its two baselines."""
    a, r, i = d["asm"], d["random"], d["independent"]
    vs = lambda x: f"{x:.1f}x" if x is not None else "n/a"  # noqa: E731
    return (
        f"held-out leave-one-out reconstruction ({d['rows']} rows): per sub-action {100 * a['slot_acc_mean']:.1f}% "
        f"(independent {100 * i['slot_acc_mean']:.1f}%, random ASM {100 * r['slot_acc_mean']:.1f}%), "
        f"exact joint {100 * a['exact']:.2f}% (independent "
        f"{100 * i['exact']:.2f}%, {vs(d['exact_vs_independent'])}; "
        f"random ASM {100 * r['exact']:.2f}%, {vs(d['exact_vs_random'])})"
    )
