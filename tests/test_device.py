"""--device auto (the default): CUDA when available, else the CPU, recorded in config.json; on CUDA the settings
under which a seed fixes the result; a resumed run keeps the device it was made on (runs made before auto say cpu)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY

import spinrl
from spinrl.training.trainer import run_device
from spinrl.utils.determinism import cuda_determinism


def cfg(maze, out, **kw) -> spinrl.TrainConfig:
    base = dict(dataset=maze, out=str(out), steps=4, eval_every=0, log_every=2, batch_size=16, checkpoint_every=2,
                model_kwargs=TINY, progress=False)
    return spinrl.TrainConfig(**{**base, **kw})


def test_auto_is_the_default_and_resolves_to_the_cpu_here(small_maze, tmp_path):
    assert spinrl.TrainConfig().device == "auto" and not torch.cuda.is_available()
    gen = spinrl.fitter(cfg(small_maze, tmp_path / "run", device="cpu"))  # made with an explicit cpu, cut off
    assert next(gen)["step"] == 2
    gen.close()
    spinrl.fit(cfg(small_maze, tmp_path / "run", resume=True))  # resumed with the default: same device, no refusal
    rec = json.loads((tmp_path / "run" / "config.json").read_text())
    assert rec["config"]["device"] == "auto" and rec["resolved"]["device"] == "cpu" and rec["device"]["type"] == "cpu"
    assert "cuda_determinism" not in rec["resolved"]


def test_auto_picks_cuda_when_available_and_a_resume_keeps_the_runs_device(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    c = spinrl.TrainConfig(dataset="d", out=str(tmp_path / "r"))
    assert run_device(c) == torch.device("cuda") and run_device(spinrl.TrainConfig(device="cpu")) == torch.device("cpu")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text(json.dumps({"config": {"device": "cpu"}}))  # a run made before auto
    resumed = spinrl.TrainConfig(dataset="d", out=str(tmp_path / "r"), resume=True)
    assert run_device(resumed) == torch.device("cpu")
    rec = {"config": {"device": "auto"}, "resolved": {"device": "cuda"}}
    (tmp_path / "r" / "config.json").write_text(json.dumps(rec))
    assert run_device(resumed) == torch.device("cuda")


def test_cuda_determinism_settings(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    assert cuda_determinism("cpu") is None and torch.backends.cudnn.benchmark  # the CPU: nothing changes
    assert not torch.are_deterministic_algorithms_enabled()
    try:
        applied = cuda_determinism(torch.device("cuda"))
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" == applied["CUBLAS_WORKSPACE_CONFIG"]
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the user's own value is kept
        assert cuda_determinism("cuda:0")["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    finally:
        torch.use_deterministic_algorithms(False)


def test_a_seed_fixes_the_result_on_cuda(small_maze, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    rows = [spinrl.fit(cfg(small_maze, tmp_path / f"r{i}", device="cuda", steps=6))["rows"] for i in range(2)]
    timing = ("wall_seconds", "grad_steps_per_s")
    assert [{k: v for k, v in r.items() if k not in timing} for r in rows[0]] == \
        [{k: v for k, v in r.items() if k not in timing} for r in rows[1]]
    assert json.loads((tmp_path / "r0" / "config.json").read_text())["resolved"]["cuda_determinism"]


def test_pretraining_defaults_to_auto_and_an_asm_made_before_resumes_on_its_device(small_maze, tmp_path, monkeypatch):
    from spinrl.utils.checkpoint import resolve_device
    from spinrl.utils.determinism import run_device_name

    assert spinrl.PretrainConfig().device == "auto"
    kw = dict(dataset=small_maze, out=str(tmp_path / "asm"), max_epochs=2, steps_per_epoch=1, batch_size=16,
              model_kwargs=TINY, progress=False, patience=10)
    gen = spinrl.fitter_asm(spinrl.PretrainConfig(**kw))
    next(gen)
    gen.close()
    path = tmp_path / "asm" / "config.json"
    rec = json.loads(path.read_text())
    assert rec["config"]["device"] == "auto" and rec["resolved"]["device"] == "cpu"
    del rec["resolved"]["device"]  # as an ASM directory made before auto records it: config.device = cpu
    path.write_text(json.dumps({**rec, "config": {**rec["config"], "device": "cpu"}}))
    with monkeypatch.context() as m:
        m.setattr(torch.cuda, "is_available", lambda: True)
        assert run_device_name("auto", tmp_path / "asm", resume=True) == "cpu"
        assert resolve_device(run_device_name("auto", tmp_path / "new", resume=False)) == torch.device("cuda")
    asm = spinrl.fit_asm(spinrl.PretrainConfig(**kw, resume=True))["asm"]  # the default auto resumes it
    assert asm["epochs_run"] == 2 and asm["device"]["type"] == "cpu" and "cuda_determinism" not in asm
