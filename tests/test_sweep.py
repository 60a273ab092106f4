"""spinrl sweep: spec errors, stable ids and shared ASMs, kill -9 and rerun without recomputation, Ray
backend layout; distributed ASM pretraining under torchrun matches a single process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spinrl.cli.main import main
from spinrl.errors import ConfigError
from spinrl.experiments.sweep import expand, load_spec, parse_only

TINY = ('model_kwargs = { d_model = 32, n_heads = 2, n_blocks = 1, head_hidden = 32, mlp_hidden = 32, critic_hidden = 32, '
        'lstm_hidden = 32, lstm_layers = 1, sub_action_embed = 8 }')

SPEC = f"""
[sweep]
name = "tiny"
[grid]
env = ["maze", "cone"]
transitions = [600]
algo = ["iql", "awac"]
actor = ["factored"]
seed = [0, 1]
steps = [20]
eval_every = [10]
eval_episodes = [2]
[env_kwargs.maze]
actuators = [3]
[env_kwargs.cone]
dims = [2]
size = [3]
[train]
log_every = 10
batch_size = 32
eval_num_envs = 2
{TINY}
"""


def write(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, match", [
    ("[grid]\nenv=['maze']\ntransitions=[100]\n[bogus]\nx=1\n", r"unknown section \[bogus\]"),
    ("[grid]\nenv=['maze']\ntransitions=[100]\nactr=['spin']\n", r"unknown key grid.actr"),
    ("[grid]\nenv=['maze']\ntransitions=[]\n", r"grid.transitions is an empty list"),
    ("[grid]\nenv=['maze']\ntransitions=[100]\nsteps=['many']\n", r"grid.steps must be int"),
    ("[grid]\nenv=['maze']\ntransitions=[100]\nactor=['transformer']\n", r"grid.actor = 'transformer' is not one of"),
    ("[grid]\nenv=['maze']\ntransitions=[100]\n[train]\nlog_every=1.5\n", r"train.log_every must be int"),
    ("[grid]\nenv=['maze']\ntransitions=[100]\n[pretrain]\nepochs=3\n", r"unknown key pretrain.epochs"),
    ("[grid]\nenv=['maze']\n", r"grid.transitions or grid.episodes"),
    ("[grid]\nenv=['maze']\ntransitions=[100]\n[env_kwargs.cone]\ndims=[2]\n", r"env_kwargs.cone names an env"),
    ("[grid\nenv=", r"not valid TOML"),
    ("[grid]\nenv=['maze']\ntransitions=[100]\n[train]\nenv='cone'\n", r"train.env is not a setting.*grid.env"),
])
def test_bad_specs_are_one_line_errors_naming_the_key(tmp_path, capsys, text, match):
    spec = write(tmp_path, text)
    with pytest.raises(ConfigError, match=match):
        expand(load_spec(spec), tmp_path)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("spinrl: error:")


def test_the_valid_grid_keys_name_env_once(tmp_path):
    with pytest.raises(ConfigError) as e:
        expand(load_spec(write(tmp_path, "[grid]\nenv=['maze']\ntransitions=[100]\nactr=['spin']\n")), tmp_path)
    assert str(e.value).count(" env,") == 1


def test_ids_are_stable_and_spin_runs_share_one_asm_per_dataset_and_seed(tmp_path):
    import tomllib

    spec = tomllib.loads(SPEC.replace('actor = ["factored"]', 'actor = ["factored", "spin", "spin-cached"]')
                         + '\n[pretrain]\nmasking = "variable"\n')
    a, b = expand(spec, tmp_path), expand(spec, tmp_path)
    assert [t.id for t in a.trials] == [t.id for t in b.trials] and len(a.trials) == 2 * 2 * 3 * 2
    spin = [t for t in a.trials if t.asm_id]
    assert len({t.asm_id for t in spin}) == 2 * 2  # (dataset, seed); spin, spin-cached and both algos share it
    only = expand(spec, tmp_path, only=parse_only(["env=maze", "actor=spin"]))
    assert {t.id for t in only.trials} <= {t.id for t in a.trials} and len(only.trials) == 4
    # a training key a grid leaves unset counts as its default; booleans are spelled as in TOML
    two = {**spec, "grid": [spec["grid"], {**spec["grid"], "greedy": [True]}]}
    greedy = expand(two, tmp_path, only=parse_only(["greedy=true"])).trials
    plain = expand(two, tmp_path, only=parse_only(["greedy=false"])).trials
    assert len(greedy) == len(plain) == len(a.trials) and not {t.id for t in greedy} & {t.id for t in plain}
    assert {t.id for t in plain} == {t.id for t in a.trials}
    assert {t.id for t in expand(two, tmp_path, only=parse_only(["greedy=True"])).trials} == {t.id for t in greedy}
    # a training key no grid sets is still a known key: its default selects every trial
    assert len(expand(spec, tmp_path, only=parse_only(["greedy=false"])).trials) == len(a.trials)


def _files(d: Path) -> dict[str, float]:
    return {str(p.relative_to(d)): p.stat().st_mtime_ns for p in d.rglob("*") if p.is_file()}


def test_local_sweep_killed_and_rerun_recomputes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("SPINRL_DATA", str(tmp_path / "data"))
    spec, out = write(tmp_path, SPEC), tmp_path / "sw"
    env = {**os.environ, "SPINRL_DATA": str(tmp_path / "data")}
    proc = subprocess.Popen([sys.executable, "-m", "spinrl", "sweep", str(spec), "--out", str(out), "--workers", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = out / "runs"
    deadline = time.time() + 300
    while time.time() < deadline and not list(runs.rglob("policy.pt")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.parent for p in runs.rglob("policy.pt"))
    assert 1 <= len(done) < 8, "the kill should land mid-sweep"
    # the workers notice the sweep is gone and exit (their run directories' locks then name dead pids)
    from spinrl.utils.outdir import _alive

    def writers() -> list[int]:
        pids = []
        for lock in out.rglob(".spinrl.lock"):
            try:
                pids.append(json.loads(lock.read_text())["pid"])
            except (OSError, ValueError, KeyError):
                pass
        return [p for p in pids if _alive(p)]

    deadline = time.time() + 15
    while writers() and time.time() < deadline:
        time.sleep(0.2)
    assert not writers(), "a worker outlived the killed sweep"
    before = {d: _files(d) for d in done}
    assert main(["sweep", str(spec), "--out", str(out), "--workers", "2"]) == 0
    assert len(list(runs.rglob("policy.pt"))) == 8
    for d in done:
        assert _files(d) == before[d], f"finished run {d.name} was touched"
    again = {d: _files(d) for d in runs.glob("*/*") if d.is_dir()}
    assert main(["sweep", str(spec), "--out", str(out)]) == 0  # a third run: everything skipped
    assert {d: _files(d) for d in runs.glob("*/*") if d.is_dir()} == again
    assert main(["report", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert len(rep["tasks"]) == 2 and all(len(t["methods"]) == 2 for t in rep["tasks"].values())
    assert len(list((out / "report_img").glob("curves_*.png"))) == 2


def test_ray_backend_joins_a_cluster_and_writes_the_same_layout(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    pytest.importorskip("ray.tune")
    import ray

    from spinrl.experiments.sweep import sweep

    monkeypatch.setenv("SPINRL_DATA", str(tmp_path / "data"))
    text = SPEC.replace('env = ["maze", "cone"]', 'env = ["maze"]').replace('algo = ["iql", "awac"]', 'algo = ["iql"]') \
        .replace("[env_kwargs.cone]\ndims = [2]\nsize = [3]\n", "")
    spec = write(tmp_path, text)
    # A cluster started as a user would (`ray start --head`), which the sweep joins with --ray-address.
    ray_bin = Path(sys.executable).parent / "ray"
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    for attempt in range(2):  # a loaded machine can miss Ray's own start-up deadline once (GCS "session name" check)
        started = subprocess.run([str(ray_bin), "start", "--head", f"--port={port}", "--num-cpus=2",
                                  "--include-dashboard=false"], capture_output=True, env=env, timeout=180)
        if started.returncode == 0:
            break
        subprocess.run([str(ray_bin), "stop", "--force"], capture_output=True, env=env, timeout=120)
    assert started.returncode == 0, started.stderr.decode()[-2000:]
    try:
        res = sweep(spec, tmp_path / "ray", backend="ray", ray_address="auto", progress=False)
    finally:
        ray.shutdown()
        subprocess.run([str(ray_bin), "stop", "--force"], capture_output=True, env=env, timeout=120)
    assert res["failed"] == [] and res["trials"] == 2
    # The local backend's layout (test above): <task>/<trial>/{config.json, metrics.csv, checkpoints/last.pt, policy.pt},
    # and the best policy by evaluation (best.json, policy_best.*).
    from spinrl.experiments.sweep import expand

    for t in expand(load_spec(spec), tmp_path / "ray").trials:
        d = Path(t.train["out"])
        assert sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and not p.name.startswith(".")) == \
            ["best.json", "checkpoints/last.pt", "config.json", "metrics.csv", "policy.pt", "policy.safetensors",
             "policy_best.pt", "policy_best.safetensors"]
    assert sweep(spec, tmp_path / "ray", backend="local", progress=False)["ran"] == 0  # finished by Ray: skipped


def test_ray_address_needs_the_ray_backend(tmp_path):
    from spinrl.experiments.sweep import sweep

    spec = write(tmp_path, SPEC)
    with pytest.raises(ConfigError, match="--ray-address is for --backend ray"):
        sweep(spec, tmp_path / "x", ray_address="auto")
    with pytest.raises(ConfigError, match="drop --ray-num-cpus"):
        sweep(spec, tmp_path / "x", backend="ray", ray_address="auto", ray_num_cpus=2)
    assert not (tmp_path / "x").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_pretraining_under_torchrun_matches_one_process(tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not installed")
    from spinrl.experiments.datasets import DataMakeConfig, make_dataset

    data = str(make_dataset(DataMakeConfig(env="maze", env_kwargs={"actuators": 5}, level="medium-expert", transitions=2000,
                                           seed=0, out=str(tmp_path / "maze.d")), progress=False))
    common = ["--max-epochs", "2", "--steps-per-epoch", "6", "--batch-size", "128", "--threads", "1", "--no-progress",
              "--min-epochs", "1"]
    r = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "spinrl",
                        "pretrain", data, "--out", str(tmp_path / "dist"), "--distributed", *common],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert main(["pretrain", data, "--out", str(tmp_path / "single"), *common]) == 0
    d, s = (json.loads((tmp_path / x / "asm.json").read_text()) for x in ("dist", "single"))
    assert d["world_size"] == 2 and d["per_rank_batch"] == 64 and d["batch_size"] == s["batch_size"] == 128
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == sorted(p.name for p in (tmp_path / "single").iterdir())
    for a, b in zip(d["curve"], s["curve"]):  # same data per step; only corruption and dropout draws differ
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=0.03)
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=0.05)
    from spinrl.training.asm_dir import load_asm

    load_asm(tmp_path / "dist")  # a normal ASM directory: SPIN loads it


def test_distributed_pretraining_under_ray_train_matches_one_process(tmp_path):
    pytest.importorskip("ray.train")
    from spinrl.experiments.datasets import DataMakeConfig, make_dataset

    data = str(make_dataset(DataMakeConfig(env="maze", env_kwargs={"actuators": 5}, level="medium-expert", transitions=2000,
                                           seed=0, out=str(tmp_path / "maze.d")), progress=False))
    common = ["--max-epochs", "2", "--steps-per-epoch", "6", "--batch-size", "128", "--threads", "1", "--no-progress",
              "--min-epochs", "1"]
    assert main(["pretrain", data, "--out", str(tmp_path / "ray"), "--distributed", "--dist-backend", "ray",
                 "--workers", "2", *common]) == 0
    assert main(["pretrain", data, "--out", str(tmp_path / "single"), *common]) == 0
    d, s = (json.loads((tmp_path / x / "asm.json").read_text()) for x in ("ray", "single"))
    assert d["world_size"] == 2 and d["per_rank_batch"] == 64 and d["batch_size"] == s["batch_size"] == 128
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(p.name for p in (tmp_path / "single").iterdir())
    for a, b in zip(d["curve"], s["curve"]):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=0.03)
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=0.05)
    from spinrl.training.asm_dir import load_asm

    load_asm(tmp_path / "ray")
    assert main(["pretrain", data, "--out", str(tmp_path / "x"), "--workers", "2", *common]) == 2  # needs --distributed
