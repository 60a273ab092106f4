"""The vectorized library IQL step equals a plain reference implementation (benchmarks/reference_iql.py).

Both start from identical weights (copied from the library into the reference modules) and take the
same batches; losses and every updated parameter (actor, both critics, both targets, value) must agree
within float tolerance. Also checks that ``gradient_step`` never reads a tensor back to the host.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spinrl.algorithms.common import Batch
from spinrl.data import from_arrays
from spinrl.models import ActionStructureModel, ModelConfig
from spinrl.utils.checkpoint import CHECKPOINT_SCHEMA, save_atomic
from spinrl.training.config import TrainConfig
from spinrl.training.trainer import build, gradient_step

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("reference_iql", ROOT / "benchmarks" / "reference_iql.py")
ref = importlib.util.module_from_spec(_spec)
sys.modules["reference_iql"] = ref  # dataclasses look their module up
_spec.loader.exec_module(ref)

NVEC = [3, 2, 4]
OBS = 5
TINY = {"d_model": 16, "n_heads": 2, "n_blocks": 2, "dropout": 0.0, "head_hidden": 8, "mlp_hidden": 16,
        "critic_hidden": 16, "lstm_hidden": 8, "sub_action_embed": 4}


def _dataset(n: int = 200):
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(n, OBS)).astype(np.float32)
    act = (rng.random((n, len(NVEC))) * np.asarray(NVEC)).astype(np.int64)
    term = np.zeros(n, bool)
    term[49::50] = True
    return from_arrays(obs, act, rng.normal(size=n), term, np.zeros(n, bool), nvec=NVEC,
                       next_observations=np.roll(obs, -1, 0))


def _asm_dir(ds, tmp: Path) -> str:
    model = ModelConfig(**TINY)
    asm = ActionStructureModel(ds.observation_dim, ds.nvec, model)
    save_atomic({"schema": CHECKPOINT_SCHEMA, "kind": "asm", "model": asm.state_dict()}, tmp / "asm.pt")
    (tmp / "asm.json").write_text(json.dumps({"signature": ds.signature, "model": model.__dict__,
                                              "wall_seconds": 0.0, "chosen_epoch": 0, "masking": "variable"}))
    return str(tmp)


def _setup(ds, actor: str, algo: str = "iql", asm: str | None = None):
    cfg = TrainConfig(dataset="<synthetic>", out="<none>", algo=algo, actor=actor, asm=asm, eval_every=0,
                      batch_size=32, model_kwargs=TINY, progress=False)
    return build(cfg, dataset=ds)


def _params(r) -> dict[str, torch.Tensor]:
    mods = {"actor": r.actor, "critic1": r.critic1, "critic2": r.critic2, "target1": r.target1,
            "target2": r.target2, "value": r.value}
    return {f"{m}.{n}": p.detach().clone() for m, mod in mods.items() for n, p in mod.named_parameters()}


@pytest.mark.parametrize("actor", ["factored", "saint", "spin"])
def test_reference_and_library_iql_steps_agree(actor, tmp_path):
    torch.manual_seed(0)
    ds = _dataset()
    s = _setup(ds, actor, asm=_asm_dir(ds, tmp_path) if actor == "spin" else None)
    r = ref.reference_from_setup(s)
    before = _params(r)
    rng = np.random.default_rng(0)
    for _ in range(3):  # several steps so Adam's moments and the Polyak targets are exercised
        b = Batch(*ds.sample(32, rng))
        lib = gradient_step(s, b)
        got = ref.iql_step(r, *b)
        for k in ("value_loss", "critic_loss", "actor_loss"):
            torch.testing.assert_close(got[k], lib[k], rtol=1e-5, atol=1e-6, msg=f"{actor}: {k}")
    after_ref = _params(r)
    after_lib = _params(ref.reference_from_setup(s))  # library weights, read through the same copy
    assert after_ref.keys() == after_lib.keys()
    moved = 0
    lr = s.optimizers["actor"].param_groups[0]["lr"]
    for k in after_ref:
        a, b = after_ref[k], after_lib[k]
        if k.endswith("attn.in_proj_bias"):
            # The key bias has an exactly zero gradient (softmax is shift-invariant), so both sides hold
            # rounding noise there that Adam normalises to steps of up to lr: compare it loosely.
            d = a.numel() // 3
            torch.testing.assert_close(a[d:2 * d], b[d:2 * d], rtol=0, atol=3 * 3 * lr)
            a, b = torch.cat([a[:d], a[2 * d:]]), torch.cat([b[:d], b[2 * d:]])
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=f"{actor}: {k}")
        moved += not torch.equal(before[k], after_ref[k])
    frozen = sum(not p.requires_grad for p in r.actor.parameters())
    assert moved >= len(after_ref) - frozen  # every trainable tensor (and every target) changed


_SYNC_METHODS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__", "nonzero")


@pytest.mark.parametrize("algo", ["iql", "awac", "bcq"])
@pytest.mark.parametrize("actor", ["factored", "autoregressive", "saint", "spin", "spin-cached"])
def test_gradient_step_has_no_host_reads(algo, actor, tmp_path, monkeypatch):
    """No tensor value is read on the host from spinrl code inside a step (each would be a GPU sync).

    Reads made by torch itself (Adam's CPU step counter) are not ours and are not flagged.
    """
    ds = _dataset()
    s = _setup(ds, actor, algo, asm=_asm_dir(ds, tmp_path) if actor.startswith("spin") else None)
    b = Batch(*ds.sample(32, np.random.default_rng(0)))
    if actor == "spin-cached":
        a = s.nets.actor
        a.provide_features([(b.obs, a.features(b.obs)), (b.next_obs, a.features(b.next_obs))])
    gradient_step(s, b)  # first step outside the check: lazy optimizer state
    hits: list[str] = []
    for name in _SYNC_METHODS:
        orig = getattr(torch.Tensor, name)

        def spy(self, *args, _orig=orig, _name=name, **kw):
            caller = inspect.currentframe().f_back
            path = caller.f_code.co_filename if caller else ""
            if "/spinrl/" in path and "/tests/" not in path:
                hits.append(f"{_name} at {path}:{caller.f_lineno}")
            return _orig(self, *args, **kw)

        monkeypatch.setattr(torch.Tensor, name, spy)
    gradient_step(s, b)
    monkeypatch.undo()
    assert not hits, hits
