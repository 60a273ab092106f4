"""spinrl.fit / fitter (policy training) and fit_asm / fitter_asm (ASM pretraining): d3rlpy's pair of a call
that runs to completion and a generator of metric rows; a generator dropped unstarted warns."""

from __future__ import annotations

import gc
import warnings

import pytest
from conftest import TINY

import spinrl



@pytest.fixture(scope="module")
def maze(small_maze) -> str:
    return small_maze


def cfg(maze, out, **kw) -> spinrl.TrainConfig:
    base = dict(dataset=maze, out=str(out), steps=6, eval_every=3, eval_episodes=2, log_every=3, batch_size=16,
                model_kwargs=TINY, progress=False, eval_num_envs=2)
    return spinrl.TrainConfig(**{**base, **kw})


def test_fit_runs_to_completion_and_fitter_yields_the_same_rows(maze, tmp_path):
    summary = spinrl.fit(cfg(maze, tmp_path / "a"))
    assert summary["out"] == tmp_path / "a" and summary["policy"].is_file() and summary["steps"] == 6
    assert [r["step"] for r in summary["rows"]] == [3, 6] and summary["last"] is summary["rows"][-1]
    assert summary["final_eval"]["step"] == 6 and summary["final_eval"]["eval_return_mean"] is not None
    rows = list(spinrl.fitter(cfg(maze, tmp_path / "b")))
    timing = ("wall_seconds", "grad_steps_per_s")
    assert [{k: v for k, v in r.items() if k not in timing} for r in rows] == \
        [{k: v for k, v in r.items() if k not in timing} for r in summary["rows"]]


def test_a_generator_dropped_unstarted_warns_and_runs_nothing(maze, tmp_path):
    for call in (lambda: spinrl.train(cfg(maze, tmp_path / "t")), lambda: spinrl.fitter(cfg(maze, tmp_path / "t")),
                 lambda: spinrl.fitter_asm(spinrl.PretrainConfig(dataset=maze, out=str(tmp_path / "t")))):
        with pytest.warns(RuntimeWarning, match="never iterated, so nothing ran.*spinrl.fit"):
            call()
            gc.collect()
    assert not (tmp_path / "t").exists()
    with warnings.catch_warnings(record=True) as caught:  # started, closed early: no warning, a resumable run
        warnings.simplefilter("always")
        gen = spinrl.train(cfg(maze, tmp_path / "s", steps=12, checkpoint_every=3))
        assert next(gen)["step"] == 3
        gen.close()
        del gen
        gc.collect()
    assert not [w for w in caught if "never iterated" in str(w.message)]
    assert (tmp_path / "s" / "checkpoints" / "last.pt").is_file()


def test_fit_asm_returns_the_asm_summary_and_fitter_asm_yields_validations(maze, tmp_path):
    kw = dict(dataset=maze, max_epochs=2, steps_per_epoch=2, batch_size=32, model_kwargs=TINY, progress=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="ASM stopped")
        summary = spinrl.fit_asm(spinrl.PretrainConfig(out=str(tmp_path / "asm"), **kw))
        rows = list(spinrl.fitter_asm(spinrl.PretrainConfig(out=str(tmp_path / "asm2"), **kw)))
    assert summary["out"] == tmp_path / "asm" and (summary["out"] / "asm.pt").is_file()
    assert [r["step"] for r in summary["rows"]] == [2, 4] == [r["step"] for r in rows]
    assert summary["asm"]["steps_run"] == 4 and summary["asm"]["stop_reason"] == "epoch_budget"
    assert [r["val_loss"] for r in rows] == [r["val_loss"] for r in summary["rows"]]
