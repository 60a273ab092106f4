"""The best policy by evaluation: policy_best.pt/.safetensors and best.json are written when an evaluation beats
the best so far, survive an interrupted and resumed run exactly, and load with Policy.load and `spinrl eval`."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np

import torch
from conftest import TINY

import spinrl
from spinrl.cli.main import main
from spinrl.evaluation import Policy


def cfg(maze, out, **kw) -> spinrl.TrainConfig:
    base = dict(dataset=maze, out=str(out), steps=12, eval_every=3, eval_episodes=3, log_every=3, batch_size=16,
                checkpoint_every=6, model_kwargs=TINY, progress=False, eval_num_envs=3, greedy=True)
    return spinrl.TrainConfig(**{**base, **kw})


def same_weights(a: Policy, b: Policy) -> bool:
    sa, sb = a.nets.actor.state_dict(), b.nets.actor.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_best_policy_is_the_best_evaluation_and_loads(small_maze, tmp_path, capsys):
    summary = spinrl.fit(cfg(small_maze, tmp_path / "run"))
    evals = [r for r in summary["rows"] if r.get("eval_return_mean") is not None]
    top = max(r["eval_return_mean"] for r in evals)
    first = next(r for r in evals if r["eval_return_mean"] == top)  # ties keep the earliest step
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best == summary["best"] and summary["policy_best"] == tmp_path / "run" / "policy_best.pt"
    assert (best["step"], best["eval_return_mean"], best["policy"]) == (first["step"], top, "policy_best.pt")
    pt, st = Policy.load(tmp_path / "run" / "policy_best.pt"), Policy.load(tmp_path / "run" / "policy_best.safetensors")
    assert same_weights(pt, st) and pt.meta["best"]["step"] == best["step"]
    # greedy actions and the training evaluation's reset seeds: the file holds the weights that scored `top`
    assert spinrl.evaluate(pt, episodes=3, greedy=True, num_envs=3).mean == top
    if best["step"] == 12:
        assert same_weights(pt, Policy.load(tmp_path / "run" / "policy.pt"))
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run" / "policy_best.pt"), "--episodes", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 2


def test_best_policy_survives_an_interrupted_run(small_maze, tmp_path, monkeypatch):
    """A new best at step 9 lands on disk after the checkpoint at step 6; the run is then cut off. The resume
    starts from the checkpoint's best (step 6) and ends with the uninterrupted run's policy_best."""
    from spinrl.training import trainer

    scores, evaluate = {3: 1.0, 6: 2.0, 9: 5.0, 12: 3.0}, trainer._evaluate
    monkeypatch.setattr(trainer, "_evaluate", lambda s, step, ref: dataclasses.replace(
        evaluate(s, step, ref), returns=np.array([scores[step]]), normalized=None))
    spinrl.fit(cfg(small_maze, tmp_path / "full"))
    gen = spinrl.fitter(cfg(small_maze, tmp_path / "part"))
    for row in gen:  # stop after the evaluation at step 9, past the checkpoint at step 6
        if row["step"] >= 9:
            break
    gen.close()
    part = tmp_path / "part"
    assert json.loads((part / "best.json").read_text())["step"] == 9
    assert torch.load(part / "checkpoints" / "last.pt", weights_only=True)["best"]["step"] == 6
    shutil.copytree(part, tmp_path / "part6")
    spinrl.fit(cfg(small_maze, part, resume=True))
    assert (part / "best.json").read_text() == (tmp_path / "full" / "best.json").read_text()
    full = Policy.load(tmp_path / "full" / "policy_best.pt")
    assert full.meta["best"]["step"] == 9
    assert same_weights(Policy.load(part / "policy_best.pt"), full)
    assert same_weights(Policy.load(part / "policy_best.safetensors"), full)
    spinrl.fit(cfg(small_maze, tmp_path / "part6", resume=True, steps=6))  # ends at the checkpoint: its best
    assert json.loads((tmp_path / "part6" / "best.json").read_text())["step"] == 6
    assert Policy.load(tmp_path / "part6" / "policy_best.safetensors").meta["best"]["step"] == 6


def test_no_evaluation_no_best_file_said_once(small_maze, tmp_path, capsys):
    summary = spinrl.fit(cfg(small_maze, tmp_path / "run", steps=4, eval_every=0))
    out = capsys.readouterr().out
    assert out.count("no policy_best.pt") == 1 and "--eval-every 0" in out
    assert summary["best"] is None and summary["policy_best"] is None
    assert not any((tmp_path / "run" / n).exists() for n in ("policy_best.pt", "policy_best.safetensors", "best.json"))
