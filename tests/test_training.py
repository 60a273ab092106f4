"""End-to-end training tests on a small generated Maze dataset: every algorithm x actor, exact resume
(in-process and after kill -9), Policy files, ASM pretraining with automatic stop, strict SPIN loading."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from spinrl.errors import CheckpointError, ConfigError
from spinrl.evaluation import Policy, evaluate, time_to_target
from spinrl.experiments.datasets import DataMakeConfig, make_dataset
from spinrl.training import PretrainConfig, TrainConfig, pretrain, run, train
from spinrl.utils.hardware import native_bf16

TINY = {"d_model": 32, "n_heads": 2, "n_blocks": 1, "head_hidden": 32, "mlp_hidden": 32, "critic_hidden": 32,
        "lstm_hidden": 32, "lstm_layers": 1, "sub_action_embed": 8}
TIMING = {"wall_seconds", "grad_steps_per_s"}


@pytest.fixture(scope="module")
def maze(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("data") / "maze5.d"
    make_dataset(DataMakeConfig(env="maze", env_kwargs={"actuators": 5}, level="medium-expert", transitions=3000,
                                seed=0, out=str(out)), progress=False)
    return str(out)


@pytest.fixture(scope="module")
def asm_dir(maze, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("asm") / "asm"
    pretrain(PretrainConfig(dataset=maze, out=str(out), max_epochs=4, steps_per_epoch=4, batch_size=64,
                            model_kwargs=TINY, progress=False, patience=2))
    return str(out)


def tiny_cfg(maze: str, out: Path, **kw) -> TrainConfig:
    base = dict(dataset=maze, out=str(out), steps=12, eval_every=6, eval_episodes=2, log_every=3, batch_size=16,
                model_kwargs=TINY, progress=False, eval_num_envs=2)
    base.update(kw)
    return TrainConfig(**base)


def metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


@pytest.mark.parametrize("algo", ["iql", "awac", "bcq"])
@pytest.mark.parametrize("actor", ["factored", "autoregressive", "saint", "spin", "spin-cached"])
def test_every_algorithm_and_actor_trains_and_evaluates(maze, asm_dir, tmp_path, algo, actor):
    cfg = tiny_cfg(maze, tmp_path / "run", algo=algo, actor=actor, asm=asm_dir if actor.startswith("spin") else None)
    rows = list(train(cfg))
    evals = [r for r in rows if r.get("eval_return_mean") is not None]
    assert [r["step"] for r in evals] == [6, 12]
    assert all(np.isfinite(r["critic_loss"]) and np.isfinite(r["actor_loss"]) for r in rows)
    assert evals[-1]["normalized_score"] is not None
    run_dir = Path(cfg.out)
    assert (run_dir / "policy.pt").exists() and (run_dir / "config.json").exists()
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["config"]["algo"] == algo and saved["versions"]["torch"] == torch.__version__
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    for col in ("step", "wall_seconds", "grad_steps_per_s", "eval_return_mean", "eval_return_std", "normalized_score"):
        assert col in header


def test_spin_trains_only_queries_and_heads(maze, asm_dir, tmp_path):
    from spinrl.training.asm_dir import load_asm
    from spinrl.training.trainer import build, gradient_step
    from spinrl.algorithms.common import Batch

    s = build(tiny_cfg(maze, tmp_path / "r", actor="spin", asm=asm_dir))
    asm, _ = load_asm(asm_dir)
    before = {k: v.clone() for k, v in s.nets.actor.state_dict().items()}
    rng = np.random.default_rng(0)
    for _ in range(3):
        gradient_step(s, Batch(*s.dataset.sample(16, rng)))
    after = s.nets.actor.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k == "queries" or k.startswith("heads.") for k in changed), changed
    # the frozen encoder and blocks still equal the ASM's
    for k, v in asm.state_dict().items():
        if k.startswith(("encoder", "state_encoder", "blocks")):
            assert torch.equal(after[k], v), k


def test_bf16_precision_runs_autocast_and_stays_close(maze, asm_dir, tmp_path):
    """--precision bf16 really computes in bf16 (losses differ from fp32) yet stays near fp32's, weights fp32."""
    from spinrl.algorithms.common import Batch
    from spinrl.training.trainer import build, gradient_step

    infos = {}
    for prec in ("fp32", "bf16"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            s = build(tiny_cfg(maze, tmp_path / prec, actor="spin", asm=asm_dir, precision=prec))
        warned = [str(w.message) for w in caught if "--precision bf16" in str(w.message)]
        assert len(warned) == (prec == "bf16" and not native_bf16("cpu")), warned  # emulated bf16 is slow: say so
        infos[prec] = gradient_step(s, Batch(*s.dataset.sample(16, np.random.default_rng(0))))
        assert all(p.dtype == torch.float32 for p in s.nets.actor.parameters())
    for k in ("critic_loss", "actor_loss"):
        a, b = float(infos["fp32"][k]), float(infos["bf16"][k])
        assert a != b and abs(a - b) <= 0.05 * abs(a) + 1e-2, (k, a, b)
    rows = list(train(tiny_cfg(maze, tmp_path / "run", actor="spin", asm=asm_dir, precision="bf16")))
    assert all(np.isfinite(r["critic_loss"]) and np.isfinite(r["actor_loss"]) for r in rows)
    with pytest.raises(ConfigError, match="--precision"):
        tiny_cfg(maze, tmp_path / "bad", precision="fp16").validate()


@pytest.mark.parametrize("via", ["api", "cli"])
def test_resume_is_bit_identical(maze, tmp_path, capsys, via):
    """Also through the CLI with only --out --resume: the flags not given keep the run's own values (its
    batch size and model are not the CLI defaults); a given flag that differs is refused."""
    full = tiny_cfg(maze, tmp_path / "full", algo="awac", actor="saint", steps=18, checkpoint_every=6)
    run(full)
    part = tiny_cfg(maze, tmp_path / "part", algo="awac", actor="saint", steps=18, checkpoint_every=6)
    gen = train(part)
    for row in gen:  # stop abruptly after the checkpoint at step 6, mid-interval afterwards
        if row["step"] >= 9:
            break
    gen.close()
    if via == "api":
        run(tiny_cfg(maze, tmp_path / "part", algo="awac", actor="saint", steps=18, checkpoint_every=6, resume=True))
    else:
        from spinrl.cli.main import main

        assert main(["train", maze, "--out", part.out, "--resume", "--seed", "3"]) == 2
        assert "seed=3 but the run used 0" in capsys.readouterr().err
        assert main(["train", maze, "--out", part.out, "--resume", "--no-progress"]) == 0
    assert metrics(tmp_path / "part") == metrics(tmp_path / "full")
    pa, pb = Policy.load(tmp_path / "part" / "policy.pt"), Policy.load(tmp_path / "full" / "policy.pt")
    for k, v in pa.nets.actor.state_dict().items():
        assert torch.equal(v, pb.nets.actor.state_dict()[k])


def test_resume_from_checkpoint_with_in_major_critic_output(maze, tmp_path):
    """A checkpoint written before the critic stored its output layer out-major ([K, h, sum m] as
    ``weights.2``, Adam moments of that shape) resumes to the same metrics as an uninterrupted run."""
    run(tiny_cfg(maze, tmp_path / "full", algo="iql", steps=12, checkpoint_every=6))
    gen = train(tiny_cfg(maze, tmp_path / "part", algo="iql", steps=12, checkpoint_every=6))
    for row in gen:
        if row["step"] >= 6:
            break
    gen.close()
    path = tmp_path / "part" / "checkpoints" / "last.pt"
    ck = torch.load(path, weights_only=False)
    out_shape = ck["nets"]["critic"]["output.weight"].shape
    for net in ("critic", "critic_target"):
        sd = ck["nets"][net]
        sd["weights.2"] = sd.pop("output.weight").transpose(1, 2).contiguous()
    st = ck["optimizers"]["critic"]["state"][2]  # parameters() order: weights.0, weights.1, output.weight, biases
    for key in ("exp_avg", "exp_avg_sq"):
        assert st[key].shape == out_shape
        st[key] = st[key].transpose(1, 2).contiguous()
    torch.save(ck, path)
    run(tiny_cfg(maze, tmp_path / "part", algo="iql", steps=12, checkpoint_every=6, resume=True))
    assert metrics(tmp_path / "part") == metrics(tmp_path / "full")


def test_resume_after_kill9_matches_uninterrupted(maze, tmp_path):
    """The acceptance check: kill a `spinrl train` process after its first checkpoint, resume it."""
    args = ["--algo", "iql", "--actor", "factored", "--steps", "600", "--eval-every", "300", "--eval-episodes", "2",
            "--log-every", "50", "--checkpoint-every", "100", "--batch-size", "32", "--no-progress", "--threads", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "spinrl.cli.main", "train", maze]
    subprocess.run(cmd + ["--out", str(tmp_path / "full")] + args, check=True, env=env, capture_output=True)
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "killed")] + args, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    assert ckpt.exists(), "no checkpoint was written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "policy.pt").exists(), "the run finished before it could be killed"
    r = subprocess.run(cmd + ["--out", str(tmp_path / "killed"), "--resume"] + args, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert metrics(tmp_path / "killed") == metrics(tmp_path / "full")


def test_policy_load_round_trip_and_evaluate(maze, asm_dir, tmp_path):
    cfg = tiny_cfg(maze, tmp_path / "r", algo="bcq", actor="spin", asm=asm_dir)
    run(cfg)
    p = Policy.load(tmp_path / "r" / "policy.pt")
    obs = np.random.default_rng(0).random((7, 2)).astype(np.float32)
    a1 = p.act(obs, deterministic=True)
    a2 = Policy.load(tmp_path / "r" / "policy.pt").act(obs, deterministic=True)
    assert a1.shape == (7, 5) and a1.dtype == np.int64 and np.array_equal(a1, a2)
    assert p.act(obs[0]).shape == (5,)
    res = evaluate(tmp_path / "r" / "policy.pt", episodes=3, seed=1)
    assert len(res.returns) == 3 and res.normalized_mean is not None
    assert np.array_equal(res.returns, evaluate(p, episodes=3, seed=1).returns)
    before = torch.get_num_threads()
    assert np.allclose(res.returns, evaluate(p, episodes=3, seed=1, threads=1).returns)  # --threads: same episodes
    assert torch.get_num_threads() == before  # and the caller's thread count back
    with pytest.raises(Exception, match="shape"):
        p.act(np.zeros((3, 4), np.float32))


def test_spin_requires_a_matching_asm(maze, asm_dir, tmp_path):
    with pytest.raises(ConfigError, match="--asm"):
        list(train(tiny_cfg(maze, tmp_path / "a", actor="spin")))
    other = tmp_path / "maze3.d"
    make_dataset(DataMakeConfig(env="maze", env_kwargs={"actuators": 3}, level="expert", episodes=20, out=str(other)),
                 progress=False)
    with pytest.raises(CheckpointError, match="nvec|env_kwargs"):
        list(train(tiny_cfg(str(other), tmp_path / "b", actor="spin", asm=asm_dir)))
    with pytest.raises(CheckpointError, match="not a finished ASM"):
        list(train(tiny_cfg(maze, tmp_path / "c", actor="spin", asm=str(tmp_path))))


def test_existing_run_needs_resume(maze, tmp_path):
    run(tiny_cfg(maze, tmp_path / "r", steps=6))
    with pytest.raises(ConfigError, match="--resume"):
        list(train(tiny_cfg(maze, tmp_path / "r", steps=6)))
    with pytest.raises(ConfigError, match="seed"):
        list(train(tiny_cfg(maze, tmp_path / "r", steps=9, seed=3, resume=True)))


def test_same_seed_same_metrics(maze, tmp_path):
    run(tiny_cfg(maze, tmp_path / "a", algo="iql", actor="autoregressive"))
    run(tiny_cfg(maze, tmp_path / "b", algo="iql", actor="autoregressive"))
    run(tiny_cfg(maze, tmp_path / "c", algo="iql", actor="autoregressive", seed=1))
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    assert metrics(tmp_path / "a") != metrics(tmp_path / "c")


def test_pretrain_records_curve_chosen_epoch_and_signature(maze, asm_dir):
    info = json.loads((Path(asm_dir) / "asm.json").read_text())
    assert info["signature"]["nvec"] == [2] * 5 and info["signature"]["env_id"] == "maze"
    assert 1 <= info["chosen_epoch"] <= info["epochs_run"] <= 4
    assert len(info["curve"]) == info["epochs_run"] and info["wall_seconds"] > 0
    best = min(r["val_loss"] for r in info["curve"])
    assert info["best_val_loss"] == pytest.approx(best)
    rows = list(csv.DictReader(open(Path(asm_dir) / "metrics.csv")))
    assert {"val_acc_0", "val_acc_4", "val_masked_acc", "train_loss"} <= set(rows[0])


def test_pretrain_stops_early_on_a_plateau(maze, tmp_path):
    # min_delta so large that nothing counts as an improvement after epoch 1: stops at 1 + patience.
    out = tmp_path / "asm"
    pretrain(PretrainConfig(dataset=maze, out=str(out), max_epochs=20, steps_per_epoch=2, batch_size=32,
                            model_kwargs=TINY, progress=False, patience=2, min_delta=1e9, min_epochs=1))
    info = json.loads((out / "asm.json").read_text())
    assert info["stop_reason"] == "plateau" and info["epochs_run"] == 3 and info["chosen_epoch"] == 1
    assert not info["still_falling"] and info["steps_run"] == 6 and info["chosen_step"] == 2


def test_pretrain_step_budget_says_so_and_warns_while_falling(maze, tmp_path, capsys):
    # steps_per_epoch 4 with a 10-step budget: validations after 4, 8 and 10 steps, then the budget stops it.
    out = tmp_path / "asm"
    from spinrl.cli.main import main

    assert main(["pretrain", maze, "--out", str(out), "--max-steps", "10", "--steps-per-epoch", "4", "--batch-size", "64",
                 "--min-delta", "0", "--patience", "50", "--no-progress", "--threads", "1"]) == 0
    info = json.loads((out / "asm.json").read_text())
    assert info["stop_reason"] == "step_budget" and info["steps_run"] == 10 and [r["step"] for r in info["curve"]] == [4, 8, 10]
    said = capsys.readouterr().out
    assert "budget of max_steps" in said and "per sub-action" in said
    assert ("WARNING: the validation loss was still falling" in said) == info["still_falling"]
    assert info["still_falling"] == (info["chosen_step"] == 10)
    s = info["structure"]
    assert {"asm", "random", "independent", "rows"} <= set(s) and len(s["asm"]["slot_acc"]) == 5
    assert 0.0 <= s["asm"]["exact"] <= min(s["asm"]["slot_acc"]) <= 1.0


def test_pretrain_zero_budget_saves_the_random_asm(maze, tmp_path):
    import torch

    out = tmp_path / "asm0"
    pretrain(PretrainConfig(dataset=maze, out=str(out), max_steps=0, batch_size=64, model_kwargs=TINY, progress=False))
    info = json.loads((out / "asm.json").read_text())
    assert info["steps_run"] == 0 and info["stop_reason"] == "step_budget" and info["best_val_loss"] is None
    # the saved ASM is the initialisation itself, so its diagnostics are the random ASM's
    assert info["structure"]["asm"] == info["structure"]["random"]
    assert torch.load(out / "asm.pt", weights_only=True)["kind"] == "asm"


@pytest.mark.parametrize("via", ["api", "cli"])
def test_pretrain_resume_matches(maze, tmp_path, via):
    kw = dict(dataset=maze, max_epochs=4, steps_per_epoch=3, batch_size=32, model_kwargs=TINY, progress=False,
              patience=10)
    pretrain(PretrainConfig(out=str(tmp_path / "full"), **kw))
    from spinrl.training.pretrain import pretrain_iter

    it = pretrain_iter(PretrainConfig(out=str(tmp_path / "part"), **kw))
    next(it), next(it)
    it.close()
    if via == "api":
        pretrain(PretrainConfig(out=str(tmp_path / "part"), resume=True, **kw))
    else:  # only --out --resume: the run's batch size and model come from its config.json
        from spinrl.cli.main import main

        assert main(["pretrain", maze, "--out", str(tmp_path / "part"), "--resume", "--no-progress"]) == 0
    a = [{k: v for k, v in r.items() if k != "wall_seconds"} for r in csv.DictReader(open(tmp_path / "full" / "metrics.csv"))]
    b = [{k: v for k, v in r.items() if k != "wall_seconds"} for r in csv.DictReader(open(tmp_path / "part" / "metrics.csv"))]
    assert a == b


def test_time_to_target(tmp_path):
    def fake_run(d: Path, rows: list[tuple[int, float, float]], asm_seconds: float = 0.0):
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"asm_wall_seconds": asm_seconds}))
        with open(d / "metrics.csv", "w") as f:
            f.write("step,wall_seconds,eval_return_mean\n")
            for s, w, r in rows:
                f.write(f"{s},{w},{r}\n")

    fake_run(tmp_path / "ref", [(1, 10.0, 20.0), (2, 20.0, 50.0), (3, 30.0, 100.0)])
    fake_run(tmp_path / "spin", [(1, 5.0, 60.0), (2, 10.0, 96.0), (3, 15.0, 99.0)], asm_seconds=7.0)
    assert time_to_target(tmp_path / "ref", tmp_path / "ref") == 30.0
    assert time_to_target(tmp_path / "spin", tmp_path / "ref") == 17.0  # 10 s + 7 s of pretraining
    assert time_to_target(tmp_path / "spin", tmp_path / "ref", include_pretraining=False) == 10.0
    assert time_to_target(tmp_path / "spin", 1000.0) is None


def test_cli_errors_exit_2(maze, tmp_path):
    r = subprocess.run([sys.executable, "-m", "spinrl.cli.main", "train", maze, "--actor", "spin", "--out",
                        str(tmp_path / "x")], capture_output=True, text=True)
    assert r.returncode == 2 and "--asm" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([sys.executable, "-m", "spinrl.cli.main", "train", maze, "--steps", "0", "--out",
                        str(tmp_path / "y")], capture_output=True, text=True)
    assert r.returncode == 2 and "--steps" in r.stderr


def test_spin_cached_features_match_the_frozen_asm(maze, asm_dir, tmp_path):
    """The cache beside the dataset holds exactly the frozen ASM's all-[MASK] features (fp16)."""
    from spinrl.algorithms.common import Batch
    from spinrl.data import load
    from spinrl.training.asm_dir import load_asm
    from spinrl.training.feature_cache import cache_path
    from spinrl.training.trainer import _feature_source, build, gradient_step

    s = build(tiny_cfg(maze, tmp_path / "r", actor="spin-cached", asm=asm_dir))
    provide = _feature_source(s)
    ds = load(maze)
    path = cache_path(maze, ds, asm_dir)
    assert path.exists()
    cache = np.load(path)
    asm, _ = load_asm(asm_dir)
    asm.eval()
    with torch.no_grad():
        direct = asm.masked_features(torch.from_numpy(np.array(ds.observations[:50], dtype=np.float32)))
    assert torch.allclose(torch.from_numpy(cache[:50].astype(np.float32)), direct, atol=2e-2, rtol=1e-2)
    # training steps change only the heads; the frozen trunk equals the ASM
    before = {k: v.clone() for k, v in s.nets.actor.state_dict().items()}
    rng = np.random.default_rng(0)
    for _ in range(3):
        idx = ds.sample_indices(16, rng)
        batch = Batch(*s.dataset.batch_at(idx))
        provide(batch, idx)
        gradient_step(s, batch)
    changed = {k for k, v in s.nets.actor.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and all(k.startswith("heads.") for k in changed), changed
    # a different ASM gets a different cache file (stale features are never read)
    other = tmp_path / "asm2"
    pretrain(PretrainConfig(dataset=maze, out=str(other), max_epochs=1, steps_per_epoch=1, batch_size=16,
                            model_kwargs=TINY, progress=False, seed=5))
    assert cache_path(maze, ds, other) != path
    # a damaged cache (truncated by a full disk or a kill) is rebuilt, not fatal for every later run
    from spinrl.training.feature_cache import build_feature_cache

    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    again = build_feature_cache(s.nets.actor, ds, path, torch.device("cpu"), progress=False)
    assert again.shape == cache.shape and path.read_bytes() == good


def test_variable_masking_pretrains_and_records_it(maze, tmp_path):
    out = tmp_path / "asm"
    pretrain(PretrainConfig(dataset=maze, out=str(out), max_epochs=2, steps_per_epoch=2, batch_size=32,
                            model_kwargs=TINY, progress=False, masking="variable"))
    assert json.loads((out / "asm.json").read_text())["masking"] == "variable"


def test_pretrain_resume_checks_the_data_by_content_and_threads(tmp_path):
    import shutil

    from spinrl.errors import ConfigError
    from spinrl.training.pretrain import pretrain_iter

    data = tmp_path / "d.d"
    make_dataset(DataMakeConfig(env="maze", env_kwargs={"actuators": 3}, level="medium-expert", transitions=600, seed=0,
                                out=str(data)), progress=False)
    kw = dict(max_epochs=4, steps_per_epoch=2, batch_size=32, model_kwargs=TINY, progress=False, threads=1)
    it = pretrain_iter(PretrainConfig(dataset=str(data), out=str(tmp_path / "asm"), **kw))
    next(it)
    it.close()
    with pytest.raises(ConfigError, match="--threads 1"):
        pretrain(PretrainConfig(dataset=str(data), out=str(tmp_path / "asm"), resume=True, **{**kw, "threads": 2}))
    shutil.rmtree(data)  # other data at the same path: refused by checksum
    make_dataset(DataMakeConfig(env="maze", env_kwargs={"actuators": 3}, level="medium-expert", transitions=600, seed=1,
                                out=str(data)), progress=False)
    with pytest.raises(ConfigError, match="checksum differs"):
        pretrain(PretrainConfig(dataset=str(data), out=str(tmp_path / "asm"), resume=True, **kw))
