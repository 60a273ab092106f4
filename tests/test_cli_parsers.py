"""Every verb's flags come from its config dataclass (the object its Python API takes), each parser is built
once, and parsing loads no torch: ``spinrl --help`` and the data verbs start without it."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

from spinrl.cli.args import add_config_args, flag
from spinrl.cli.main import VERBS, build_parser

# The verbs whose parsers must not import torch (train's reads the algorithm configs, which live beside their
# losses in torch modules, one module per algorithm).
TORCH_FREE = [["--help"], ["envs", "--help"], ["data", "validate", "--help"], ["data", "make", "--help"],
              ["eval", "--help"], ["pretrain", "--help"], ["sweep", "--help"], ["report", "--help"],
              ["demo", "--help"], ["behaviour", "export", "--help"], ["behaviour", "train", "--help"]]


def test_help_and_parsing_import_no_torch():
    """One subprocess (torch may already be loaded here): each command line's parsing, then a check."""
    code = ("import sys\nfrom spinrl.cli.main import main\n"
            f"for argv in {TORCH_FREE!r}:\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "    assert 'torch' not in sys.modules, argv\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "pretrain an Action Structure Model" in r.stdout  # --help listed the verbs


def _leaves(parser: argparse.ArgumentParser, path=()):
    """(command path, parser) for every runnable (sub)command."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, p in subs[0].choices.items():
        yield from _leaves(p, (*path, name))


def _config_classes(parser: argparse.ArgumentParser) -> set[str]:
    return {a.dest for a in parser._actions if a.dest not in ("help",) and ":" not in a.dest}


def test_every_verb_is_built_once_and_every_config_field_is_a_flag():
    from spinrl.evaluation.config import EvalConfig
    from spinrl.experiments.behaviour_sets import BehaviourExportConfig, CarryConfig
    from spinrl.experiments.dataset_report import DatasetReportConfig
    from spinrl.experiments.datasets import (
        DataInfoConfig,
        DataMakeConfig,
        DataValidateConfig,
        ExportDmcConfig,
        ExportMinariConfig,
        ImportDmcConfig,
        ImportMinariConfig,
    )
    from spinrl.experiments.demo import DemoConfig
    from spinrl.experiments.report import ReportOptions
    from spinrl.experiments.sweep import SweepOptions
    from spinrl.training.behaviour.config import BehaviourConfig
    from spinrl.training.config import PretrainConfig, TrainConfig
    from spinrl.training.launch import DistributedConfig

    expected = {
        ("envs",): [], ("data", "make"): [DataMakeConfig], ("data", "info"): [DataInfoConfig],
        ("data", "validate"): [DataValidateConfig], ("data", "import-dmc"): [ImportDmcConfig],
        ("data", "export-dmc"): [ExportDmcConfig], ("data", "export-minari"): [ExportMinariConfig],
        ("data", "import-minari"): [ImportMinariConfig], ("data", "report"): [DatasetReportConfig],
        ("pretrain",): [PretrainConfig, DistributedConfig], ("train",): [TrainConfig], ("eval",): [EvalConfig],
        ("demo",): [DemoConfig], ("behaviour", "train"): [BehaviourConfig],
        ("behaviour", "export"): [BehaviourExportConfig], ("behaviour", "carry"): [CarryConfig],
        ("sweep",): [SweepOptions], ("report",): [ReportOptions],
    }
    leaves = dict(_leaves(build_parser()))
    assert set(leaves) == set(expected)
    json_verbs = {("envs",), ("data", "info"), ("eval",)}
    for path, classes in expected.items():
        want = {f.name for c in classes for f in dataclasses.fields(c) if f.init and "dict" not in str(f.type)}
        want |= {"json"} if path in json_verbs else set()
        got = _config_classes(leaves[path]) - {"fn", "allow_extra"}
        assert got == want, path
    assert set(VERBS) == {p[0] for p in expected}


def test_parsed_flags_build_the_api_config():
    from spinrl.cli.args import config_from_args
    from spinrl.evaluation.config import EvalConfig
    from spinrl.experiments.sweep import SweepOptions

    p = build_parser("eval")
    ns, extra = p.parse_known_args(["eval", "run/policy.pt", "--episodes", "3", "--greedy", "--offline", "d",
                                    "--fqe-iterations", "5", "--json", "--actuators", "12"])
    assert config_from_args(EvalConfig, ns) == EvalConfig("run/policy.pt", episodes=3, greedy=True, offline="d",
                                                          fqe_iterations=5)
    assert ns.json and extra == ["--actuators", "12"]
    ns = build_parser("sweep").parse_args(["sweep", "s.toml", "--out", "o", "--only", "actor=spin", "--only", "seed=0"])
    assert config_from_args(SweepOptions, ns) == SweepOptions("s.toml", "o", only=["actor=spin", "seed=0"])


def test_a_dict_field_without_a_flag_form_is_a_loud_error():
    @dataclasses.dataclass
    class C:
        kwargs: dict = dataclasses.field(default_factory=dict)
        """free-form options"""

    with pytest.raises(TypeError, match="C.kwargs is a dict"):
        add_config_args(argparse.ArgumentParser(), C)
    p = argparse.ArgumentParser()
    add_config_args(p, C, skip=("kwargs",))  # the caller fills it
    assert flag("kwargs") not in p.format_help()
