"""Every algorithm's hyper-parameters and the model sizes are command-line flags generated from their config
dataclasses (``--iql-beta``, ``--model-d-model``): they reach the run's config.json, survive ``--resume``, and a
flag of another algorithm is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spinrl.cli.main import main

SMALL = ["--steps", "4", "--eval-every", "0", "--batch-size", "16", "--no-progress", "--model-mlp-hidden", "16",
         "--model-critic-hidden", "16"]


@pytest.fixture(scope="module")
def maze(small_maze) -> str:
    return small_maze


def test_help_lists_every_algorithm_hyper_parameter(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--iql-expectile", "--iql-beta", "--awac-lam", "--bcq-threshold", "--model-d-model"):
        assert flag in text
    assert "Inverse temperature of the advantage weights" in text  # the field's docstring is its help


def test_flags_reach_the_run_config_and_survive_resume(maze, tmp_path):
    run = tmp_path / "run"
    assert main(["train", maze, "--out", str(run), "--algo", "iql", "--iql-beta", "10", "--iql-expectile", "0.7",
                 *SMALL]) == 0
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert cfg["algo_kwargs"] == {"beta": 10.0, "expectile": 0.7}
    assert cfg["model_kwargs"] == {"mlp_hidden": 16, "critic_hidden": 16}
    assert main(["train", maze, "--out", str(run), "--resume", "--steps", "6", "--no-progress"]) == 0
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert cfg["algo_kwargs"] == {"beta": 10.0, "expectile": 0.7} and cfg["steps"] == 6


def test_a_flag_of_another_algorithm_is_refused(maze, tmp_path, capsys):
    assert main(["train", maze, "--out", str(tmp_path / "r"), "--algo", "iql", "--awac-lam", "1.0", *SMALL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--awac-lam is a flag of --algo awac" in err[0]
    assert not (tmp_path / "r").exists()
