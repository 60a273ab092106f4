"""The one logging interface of train, pretrain and behaviour train: metrics.csv always, TensorBoard, W&B
(offline) and MLflow (file store) as options, each read back and compared with metrics.csv."""

from __future__ import annotations

import csv
import json
import struct
import sys
from pathlib import Path

import pytest
from conftest import TINY

from spinrl.errors import ConfigError, MissingExtraError
from spinrl.utils.loggers import RunLogger, parse_loggers

ALL = ("tensorboard", "wandb", "mlflow")


@pytest.fixture(scope="module")
def maze(small_maze) -> str:
    return small_maze


@pytest.fixture
def offline_env(tmp_path, monkeypatch):
    """W&B offline with its caches in tmp; MLflow's file store in tmp (file://...)."""
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "spinrl-test")
    return tmp_path


def csv_series(out: Path, step_key: str) -> dict[str, dict[int, float]]:
    """metrics.csv as {column: {step: value}} (empty cells left out)."""
    series: dict[str, dict[int, float]] = {}
    with open(out / "metrics.csv") as f:
        for r in csv.DictReader(f):
            for k, v in r.items():
                if k != step_key and v not in ("", None):
                    series.setdefault(k, {})[int(float(r[step_key]))] = float(v)
    return series


def tensorboard_series(out: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(out / "tensorboard"))
    ea.Reload()
    return {tag: {e.step: e.value for e in ea.Scalars(tag)} for tag in ea.Tags()["scalars"]}


def wandb_series(out: Path) -> dict[str, dict[int, float]]:
    """The history records of the offline run's .wandb file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    data, pos, block, pending = path.read_bytes(), 7, 32768, b""
    series: dict[str, dict[int, float]] = {}
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if n == 0 and kind == 0:  # block padding
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind not in (1, 4):  # FIRST / MIDDLE part of a record
            continue
        rec, pending = pb.Record.FromString(pending), b""
        if rec.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
            step = int(items.pop("_step", rec.history.step.num))
            for k, v in items.items():
                if not k.startswith("_"):
                    series.setdefault(k, {})[step] = float(v)
    return series


def mlflow_series(tmp: Path) -> dict[str, dict[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient((tmp / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("spinrl-test").experiment_id])
    return {k: {m.step: m.value for m in client.get_metric_history(run.info.run_id, k)} for k in run.data.metrics}


def assert_same(logged: dict, expected: dict, what: str) -> None:
    assert set(logged) == set(expected), f"{what}: {sorted(logged)} vs metrics.csv {sorted(expected)}"
    for k, by_step in expected.items():
        assert set(logged[k]) == set(by_step), f"{what} {k}: steps {sorted(logged[k])} vs {sorted(by_step)}"
        for step, v in by_step.items():
            assert logged[k][step] == pytest.approx(v, rel=1e-6, abs=1e-6), f"{what} {k} at step {step}"


def _check_all(out: Path, tmp: Path, step_key: str) -> None:
    expected = csv_series(out, step_key)
    assert expected and all(expected.values())
    assert_same(tensorboard_series(out), expected, "tensorboard")
    assert_same(wandb_series(out), expected, "wandb")
    assert_same(mlflow_series(tmp), expected, "mlflow")


def test_train_logs_the_csv_scalars_to_every_logger(maze, offline_env):
    from spinrl.training import TrainConfig, train

    out = offline_env / "run"
    rows = list(train(TrainConfig(dataset=maze, out=str(out), steps=6, eval_every=3, eval_episodes=2, log_every=3,
                                  batch_size=16, model_kwargs=TINY, progress=False, eval_num_envs=2, loggers=ALL)))
    assert [r["step"] for r in rows] == [3, 6]
    _check_all(out, offline_env, "step")


def test_pretrain_logs_the_csv_scalars_to_every_logger(maze, offline_env):
    from spinrl.training import PretrainConfig, pretrain

    out = offline_env / "asm"
    pretrain(PretrainConfig(dataset=maze, out=str(out), max_epochs=2, steps_per_epoch=2, batch_size=32,
                            model_kwargs=TINY, progress=False, loggers=("tensorboard,wandb", "mlflow")))
    _check_all(out, offline_env, "step")


def test_behaviour_train_logs_the_csv_scalars_to_every_logger(offline_env):
    from spinrl.training.behaviour import BehaviourConfig, train_behaviour

    out = offline_env / "beh"
    rows = list(train_behaviour(BehaviourConfig(env="dmc:cheetah-run", bins=3, hidden=16, warmup=300, batch_size=16,
                                                num_envs=1, eval_every=1000, checkpoint_every=1000, eval_episodes=1,
                                                env_steps=2000, replay_capacity=10_000, progress=False, out=str(out),
                                                loggers=ALL)))
    assert len(rows) == 2
    _check_all(out, offline_env, "env_step")


def test_logger_names_and_missing_extras(tmp_path, monkeypatch):
    assert parse_loggers(("tensorboard,wandb", "mlflow", "csv", "wandb")) == ("tensorboard", "wandb", "mlflow")
    assert parse_loggers("") == ()
    with pytest.raises(ConfigError, match="--loggers 'neptune' is unknown"):
        parse_loggers(["neptune"])
    for name, module in (("wandb", "wandb"), ("mlflow", "mlflow"), ("tensorboard", "torch.utils.tensorboard")):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
        with pytest.raises(MissingExtraError, match=rf"pip install 'spinrl\[{name}\]'") as e:
            RunLogger(tmp_path, [name], job="train", config={})
        assert "\n" not in str(e.value)
    assert not (tmp_path / "metrics.csv").exists()


def test_missing_extra_fails_before_the_run_directory_is_made(maze, tmp_path, monkeypatch):
    from spinrl.training import PretrainConfig, TrainConfig, pretrain, train

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(MissingExtraError, match="spinrl\\[wandb\\]"):
        next(train(TrainConfig(dataset=maze, out=str(tmp_path / "run"), steps=2, loggers=("wandb",), progress=False)))
    with pytest.raises(MissingExtraError, match="spinrl\\[wandb\\]"):
        pretrain(PretrainConfig(dataset=maze, out=str(tmp_path / "asm"), loggers=("wandb",), progress=False))
    assert not (tmp_path / "run").exists() and not (tmp_path / "asm").exists()
