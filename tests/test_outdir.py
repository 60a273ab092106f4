"""#32: spinrl never deletes or overwrites what it did not write; resume checks content; one writer per directory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from spinrl.data import load
from spinrl.errors import SpinError
from spinrl.experiments.datasets import DataMakeConfig, make_dataset
from spinrl.training import TrainConfig, run
from spinrl.utils import outdir

TINY = {"d_model": 16, "n_heads": 2, "n_blocks": 1, "head_hidden": 16, "mlp_hidden": 16, "critic_hidden": 16}


def _make(out, seed=0, overwrite=False):
    return make_dataset(DataMakeConfig(env="maze", env_kwargs={"actuators": 3}, level="expert", episodes=6, seed=seed,
                                       out=str(out), progress=False, overwrite=overwrite))


def _train(data, out, steps, resume=False, **kw):
    return run(TrainConfig(dataset=str(data), out=str(out), steps=steps, eval_every=0, batch_size=16, checkpoint_every=1,
                           model_kwargs=TINY, progress=False, resume=resume, **kw))


def test_remaking_a_dataset_keeps_the_users_files_and_refuses_foreign_folders(tmp_path):
    d = _make(tmp_path / "d")
    assert outdir.read_kind(d) == "dataset"
    (d / "notes.txt").write_text("mine")
    _make(d, seed=1)
    assert (d / "notes.txt").read_text() == "mine" and load(d).meta["generator"]["seed"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp, old or lock left
    (d / outdir.MARKER).unlink()  # a dataset written before markers: recognised by its meta.json
    _make(d, seed=2)
    u = tmp_path / "important"
    u.mkdir()
    (u / "meta.json").write_text("{}")
    (u / "thesis.txt").write_text("thesis")
    with pytest.raises(SpinError, match="is not a spinrl dataset.*--overwrite"):
        _make(u)
    assert sorted(p.name for p in u.iterdir()) == ["meta.json", "thesis.txt"]
    _make(u, overwrite=True)  # asked for: the dataset is written, the thesis stays
    assert (u / "thesis.txt").read_text() == "thesis" and load(u).num_episodes == 6


def test_lock_refuses_a_live_writer_and_takes_over_a_stale_one(tmp_path):
    path = tmp_path / outdir.LOCK
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # a finished process: its pid is dead
    path.write_text(json.dumps({"pid": p.pid, "host": socket.gethostname()}))
    with outdir.Lock(path, "--out x"):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists()
    path.write_text(json.dumps({"pid": 1, "host": socket.gethostname()}))  # init: alive
    with pytest.raises(SpinError, match="is being written by pid 1"):
        outdir.Lock(path, "--out x").acquire()
    path.write_text(json.dumps({"pid": p.pid, "host": "elsewhere"}))  # another host: cannot tell, refused
    with pytest.raises(SpinError, match="on elsewhere"):
        outdir.Lock(path, "--out x").acquire()


def test_resume_compares_data_by_content_not_by_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _make("base.d")
    _train("base.d", "run", 2)
    assert outdir.read_kind("run") == "run" and not (tmp_path / "run" / outdir.LOCK).exists()
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["dataset"]
    (tmp_path / "run" / "policy.pt").unlink()
    _train("./base.d", "run", 3, resume=True)  # the same data under another spelling
    (tmp_path / "run" / "policy.pt").unlink()
    with pytest.raises(SpinError, match="is below the checkpoint's step 3"):
        _train("base.d", "run", 2, resume=True)
    _make("base.d", seed=5)  # other data at the same path
    with pytest.raises(SpinError, match="is not the data the run"):
        _train("base.d", "run", 4, resume=True)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["dataset"] == recorded


def test_train_refuses_a_users_folder_and_stops_at_a_non_finite_loss(tmp_path):
    data = _make(tmp_path / "d")
    u = tmp_path / "mine"
    u.mkdir()
    (u / "config.json").write_text("my config")
    with pytest.raises(SpinError, match="is not a spinrl run"):
        _train(data, u, 2)
    assert (u / "config.json").read_text() == "my config"
    import shutil

    from spinrl.data.storage import _sha256_file, meta_digest

    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    np.save(bad / "rewards.npy", np.full_like(np.load(bad / "rewards.npy"), 1e30))  # the critic loss overflows
    m = json.loads((bad / "meta.json").read_text())
    m["checksums"]["rewards"] = _sha256_file(bad / "rewards.npy")
    m["meta_sha256"] = meta_digest(m)
    (bad / "meta.json").write_text(json.dumps(m))
    with pytest.raises(SpinError, match="is not finite at step 1; no checkpoint was written"):
        _train(bad, tmp_path / "run", 3)
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / outdir.LOCK).exists()
