"""Weights to share without pickle: every finished run writes policy.safetensors beside policy.pt and every ASM
asm.safetensors beside asm.pt; both load through the same loader and act/predict exactly as the .pt files."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY
import torch

from spinrl.errors import CheckpointError
from spinrl.evaluation import Policy
from spinrl.training import PretrainConfig, TrainConfig, pretrain, run
from spinrl.utils.checkpoint import load_checkpoint



@pytest.fixture(scope="module")
def spin_run(tmp_path_factory, small_maze):
    root = tmp_path_factory.mktemp("share")
    data = small_maze
    pretrain(PretrainConfig(dataset=str(data), out=str(root / "asm"), max_steps=4, steps_per_epoch=2, batch_size=32,
                            model_kwargs=TINY, progress=False, threads=1))
    run(TrainConfig(dataset=str(data), out=str(root / "run"), actor="spin", asm=str(root / "asm"), steps=4,
                    eval_every=0, batch_size=16, model_kwargs=TINY, progress=False, threads=1))
    return root


def test_policy_safetensors_acts_as_policy_pt(spin_run):
    run_dir = spin_run / "run"
    assert (run_dir / "policy.safetensors").read_bytes()[8:9] == b"{"  # a JSON header, not a pickle
    a, b = Policy.load(run_dir / "policy.pt"), Policy.load(run_dir / "policy.safetensors")
    obs = np.random.default_rng(0).normal(size=(32, a.observation_dim)).astype(np.float32)
    assert np.array_equal(a.act(obs, deterministic=True), b.act(obs, deterministic=True))
    assert a.meta == b.meta


def test_asm_safetensors_holds_the_chosen_weights(spin_run):
    pt = load_checkpoint(spin_run / "asm" / "asm.pt", kind="asm")["model"]
    st = load_checkpoint(spin_run / "asm" / "asm.safetensors", kind="asm")["model"]
    assert pt.keys() == st.keys() and all(torch.equal(pt[k], st[k]) for k in pt)


def test_a_foreign_safetensors_file_is_one_line(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(CheckpointError, match="without spinrl's header"):
        Policy.load(tmp_path / "x.safetensors")
    (tmp_path / "y.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        Policy.load(tmp_path / "y.safetensors")
