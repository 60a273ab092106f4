"""Same seed and preset -> identical metrics for every algorithm x actor (small budget); every run records
library versions and the device so that differences across machines can be explained."""

from __future__ import annotations

import csv
import json
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from spinrl.experiments.datasets import DataMakeConfig, make_dataset
from spinrl.training import PretrainConfig, TrainConfig, pretrain, run

TINY = {"d_model": 16, "n_heads": 2, "n_blocks": 1, "head_hidden": 16, "mlp_hidden": 16, "critic_hidden": 16,
        "lstm_hidden": 16, "lstm_layers": 1, "sub_action_embed": 4}
ALGOS = ("iql", "awac", "bcq")
ACTORS = ("factored", "autoregressive", "saint", "spin")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("det")
    data = make_dataset(DataMakeConfig(env="maze", env_kwargs={"actuators": 3}, level="medium-expert", episodes=16,
                                       out=str(root / "maze3")), progress=False)
    asm = pretrain(PretrainConfig(dataset=str(data), out=str(root / "asm"), max_epochs=1, steps_per_epoch=2, batch_size=16,
                                  val_batches=1, model_kwargs=TINY, progress=False))
    return str(data), str(asm)


def _run(setup, out: Path, algo: str, actor: str, seed: int = 0) -> list[dict]:
    data, asm = setup
    run(TrainConfig(dataset=data, out=str(out), algo=algo, actor=actor, asm=asm if actor == "spin" else None, steps=6,
                    eval_every=0, log_every=3, batch_size=16, seed=seed, model_kwargs=TINY, progress=False))
    with open(out / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k not in ("wall_seconds", "grad_steps_per_s")} for r in csv.DictReader(f)]


@pytest.mark.parametrize("algo", ALGOS)
def test_same_seed_same_metrics_for_every_actor(setup, tmp_path, algo):
    for actor in ACTORS:
        a = _run(setup, tmp_path / f"{actor}-a", algo, actor)
        b = _run(setup, tmp_path / f"{actor}-b", algo, actor)
        assert len(a) == 2 and all(r["critic_loss"] and r["actor_loss"] for r in a), (algo, actor, a)
        assert a == b, (algo, actor)
        pa = torch.load(tmp_path / f"{actor}-a" / "policy.pt", weights_only=True)
        pb = torch.load(tmp_path / f"{actor}-b" / "policy.pt", weights_only=True)
        assert all(torch.equal(v, pb["actor"][k]) for k, v in pa["actor"].items()), (algo, actor)
        info = json.loads((tmp_path / f"{actor}-a" / "config.json").read_text())
        assert info["versions"]["torch"] == torch.__version__ and info["versions"]["numpy"] == np.__version__
        assert info["versions"]["python"] == platform.python_version() and info["versions"]["spinrl"]
        assert info["device"]["type"] == "cpu" and info["device"]["name"] and info["device"]["torch_threads"] >= 1
    # the check can fail: another seed gives other metrics
    assert _run(setup, tmp_path / "other-seed", algo, "factored", seed=1) != _run(setup, tmp_path / "seed0", algo, "factored")
