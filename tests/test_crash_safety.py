"""kill -9 at random moments (fixed seeds, several times per job): no output file is ever partial or
corrupt, and resuming completes with results identical to an uninterrupted run.

Covers `spinrl train`, `spinrl pretrain` and `spinrl data make`. Behaviour training and sweeps are not
covered here yet (see issue 7).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from spinrl.data import load
from spinrl.experiments.datasets import DataMakeConfig, make_dataset
from spinrl.utils.checkpoint import load_checkpoint

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
CLI = [sys.executable, "-m", "spinrl.cli.main"]


@pytest.fixture(scope="module")
def maze(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("data") / "maze3"
    make_dataset(DataMakeConfig(env="maze", env_kwargs={"actuators": 3}, level="medium-expert", episodes=30, out=str(out)),
                 progress=False)
    return str(out)


def is_temp(p: Path) -> bool:
    """Hidden temporaries of atomic writes (``.name.tmp-XXXX``); a kill -9 may leave one, nothing reads it."""
    return p.name.startswith(".") and ".tmp" in p.name


def check_files(run_dir: Path) -> dict[str, int]:
    """Every non-temporary file in ``run_dir`` is complete and loads; returns counts by kind."""
    seen = {"csv": 0, "json": 0, "pt": 0, "png": 0, "npy": 0, "safetensors": 0}
    for p in sorted(run_dir.rglob("*")):
        if p.is_dir() or is_temp(p) or any(is_temp(q) for q in p.parents if q != run_dir.parent):
            continue
        if p.name == ".spinrl.lock":  # the killed writer's lock: stale, taken over by the resume
            continue
        if p.name == ".spinrl":  # the directory's kind marker, written atomically
            assert "kind" in json.loads(p.read_text())
            continue
        if p.suffix == ".csv":
            rows = list(csv.reader(p.open()))
            assert rows, f"{p} is empty"
            assert all(len(r) == len(rows[0]) for r in rows), f"{p} has a partial row"
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix in (".pt", ".safetensors"):
            assert isinstance(load_checkpoint(p), dict)
        elif p.suffix == ".npy":
            np.load(p, mmap_mode="r")  # a partial .npy fails to map
        elif p.suffix == ".png":
            assert p.read_bytes().endswith(b"IEND\xaeB`\x82"), f"{p} is a partial PNG"
        else:
            raise AssertionError(f"unexpected file {p}")
        seen[p.suffix[1:]] += 1
    return seen


def kill_at(cmd: list[str], delay: float) -> bool:
    """Start ``cmd``, SIGKILL it after ``delay`` seconds; True if it was still running (a real kill)."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def kill_after_next_checkpoint(cmd: list[str], out: Path) -> bool:
    """Start ``cmd`` and SIGKILL it the moment it writes a new checkpoint; True if it was still running.

    Timing-free, so a loaded machine (or a fast one) cannot make the test miss the window."""
    ck = out / "checkpoints" / "last.pt"
    before = ck.stat().st_mtime_ns if ck.exists() else None
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if ck.exists() and ck.stat().st_mtime_ns != before:
            break
        time.sleep(0.005)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def run(cmd: list[str]) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return time.perf_counter() - t


def metrics(path: Path, timing: tuple[str, ...]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in timing} for r in csv.DictReader(path.open())]


def same_state_dicts(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def kill_resume_cycle(cmd: list[str], first: list[str], resume: list[str], wall: float, seed: int, out: Path,
                      kills: int = 3) -> int:
    """Kill ``kills`` times at random moments (the first run fresh, later ones resuming), checking the files after
    every kill; then resume to completion. Returns how many kills hit a running process after its first checkpoint."""
    rng = np.random.default_rng(seed)
    hits = int(kill_after_next_checkpoint(cmd + first, out))  # one kill guaranteed to land after a checkpoint
    check_files(out)
    for k in range(kills):
        killed = kill_at(cmd + resume, float(rng.uniform(0.45, 0.95) * wall))
        if out.exists():
            check_files(out)
        hits += killed and (out / "checkpoints" / "last.pt").exists()
    run(cmd + resume)
    check_files(out)
    return hits


TRAIN = ["--algo", "iql", "--actor", "factored", "--steps", "80", "--eval-every", "0", "--log-every", "10",
         "--checkpoint-every", "15", "--batch-size", "16", "--no-progress", "--threads", "1"]


def test_train_survives_kill9_and_resumes_identically(maze, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "killed"
    wall = run(CLI + ["train", maze, "--out", str(ref)] + TRAIN)
    cmd = CLI + ["train", maze, "--out", str(out)] + TRAIN
    hits = kill_resume_cycle(cmd, [], ["--resume"], wall, seed=7, out=out)
    assert hits >= 1, "no kill landed mid-run after a checkpoint; the test exercised nothing"
    assert metrics(out / "metrics.csv", ("wall_seconds", "grad_steps_per_s")) == \
        metrics(ref / "metrics.csv", ("wall_seconds", "grad_steps_per_s"))
    a, b = load_checkpoint(out / "policy.pt"), load_checkpoint(ref / "policy.pt")
    assert same_state_dicts(a["actor"], b["actor"]) and same_state_dicts(a["critic"], b["critic"])


PRETRAIN = ["--max-epochs", "6", "--steps-per-epoch", "5", "--batch-size", "16", "--patience", "100", "--val-batches", "1",
            "--no-progress", "--threads", "1"]


def test_pretrain_survives_kill9_and_resumes_identically(maze, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "killed"
    wall = run(CLI + ["pretrain", maze, "--out", str(ref)] + PRETRAIN)
    cmd = CLI + ["pretrain", maze, "--out", str(out)] + PRETRAIN
    hits = kill_resume_cycle(cmd, [], ["--resume"], wall, seed=11, out=out)
    assert hits >= 1, "no kill landed mid-run after a checkpoint; the test exercised nothing"
    assert metrics(out / "metrics.csv", ("wall_seconds",)) == metrics(ref / "metrics.csv", ("wall_seconds",))
    assert same_state_dicts(load_checkpoint(out / "asm.pt")["model"], load_checkpoint(ref / "asm.pt")["model"])
    ia, ib = (json.loads((d / "asm.json").read_text()) for d in (out, ref))
    assert (ia["chosen_epoch"], ia["epochs_run"], ia["best_val_loss"]) == (ib["chosen_epoch"], ib["epochs_run"], ib["best_val_loss"])


def test_data_make_killed_never_leaves_a_corrupt_dataset(tmp_path):
    from spinrl.utils.outdir import LOCK

    out = tmp_path / "ds"
    args = ["data", "make", "maze", "--actuators", "10", "--transitions", "25000", "--no-progress", "--out", str(out)]
    rng = np.random.default_rng(3)
    for _ in range(3):
        kill_at(CLI + args, float(rng.uniform(1.8, 3.2)))
        if out.exists():  # either absent or a complete, valid dataset; never something in between
            load(out).validate()
        # a kill during the save may leave its lock (pid dead: the next writer takes it over, below)
        assert all(is_temp(p) or p == out or p.name == f".{out.name}{LOCK}" for p in tmp_path.iterdir())
    run(CLI + args)
    ref = make_dataset(DataMakeConfig(env="maze", env_kwargs={"actuators": 10}, transitions=25000,
                                      out=str(tmp_path / "ref")), progress=False)
    assert load(out).meta["checksum"] == load(ref).meta["checksum"]


BEHAVIOUR = ["--bins", "3", "--hidden", "32", "--warmup", "500", "--batch-size", "32", "--num-envs", "1",
             "--eval-every", "1000", "--checkpoint-every", "1000", "--eval-episodes", "1", "--env-steps", "4000",
             "--no-progress", "--threads", "1"]


def test_behaviour_train_survives_kill9_and_resumes_identically(tmp_path):
    """DecQN behaviour training (checkpoints at episode boundaries, replay as .npy) killed and resumed."""
    ref, out = tmp_path / "ref", tmp_path / "killed"
    wall = run(CLI + ["behaviour", "train", "dmc:cheetah-run", "--out", str(ref)] + BEHAVIOUR)
    cmd = CLI + ["behaviour", "train", "dmc:cheetah-run", "--out", str(out)] + BEHAVIOUR
    hits = kill_resume_cycle(cmd, [], ["--resume"], wall, seed=13, out=out, kills=2)
    assert hits >= 1, "no kill landed mid-run after a checkpoint; the test exercised nothing"
    timing = ("wall_seconds",)  # spinrl.training.behaviour.TIMING_FIELDS
    assert metrics(out / "metrics.csv", timing) == metrics(ref / "metrics.csv", timing)
    a = torch.load(out / "policies" / "step_0004000.pt", weights_only=True)["state_dict"]
    b = torch.load(ref / "policies" / "step_0004000.pt", weights_only=True)["state_dict"]
    assert same_state_dicts(a, b)
