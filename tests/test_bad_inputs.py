"""The bad-input matrix (rows live in tests/reliability.py; docs/RELIABILITY.md is generated from them).

Every row: the CLI exits 2 (a Python API call raises a SpinError subclass), stderr is exactly one line
starting with `spinrl ...: error:` and naming the field, no file under the workspace is created or changed,
and a hostile pickle's marker file never appears.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reliability import CASES, Fixtures, applies, problems, run_case

DOC = Path(__file__).resolve().parent.parent / "docs" / "RELIABILITY.md"


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> Fixtures:
    return Fixtures.build(tmp_path_factory.mktemp("matrix"))


def test_matrix_covers_every_entry_point():
    entries = {c.entry.split(" --")[0] for c in CASES}
    for e in ("load / data validate", "spinrl.data.from_arrays", "spinrl data import-dmc", "spinrl data import-minari",
              "spinrl data make", "spinrl pretrain", "spinrl train", "spinrl eval", "Policy.load", "spinrl"):
        assert e in entries, e
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"
    assert sum(c.subprocess for c in CASES) >= 2 and any(c.block for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, fx):
    if not applies(case):
        pytest.skip(f"{case.needs} is not installed")
    import torch

    threads = torch.get_num_threads()
    out = run_case(case, fx)
    assert problems(case, out) == []
    # a refused command leaves the process as it found it (a refused --threads 100000 once reached torch first
    # and crashed a later test)
    assert torch.get_num_threads() == threads


def test_problems_detects_a_bad_outcome(fx):
    """The checker itself can fail: a multi-line message, a wrong code, a written file are all reported."""
    from reliability import Outcome

    case = CASES[0]
    assert problems(case, Outcome(1, None, "Traceback\n  boom\n", ["x/y"], True)) != []
    assert len(problems(case, Outcome(1, None, "Traceback\n  boom\n", ["x/y"], True))) == 6
    assert problems(case, Outcome(None, "uncaught TypeError", "boom\n", [], False)) != []


def test_doc_lists_every_row():
    """docs/RELIABILITY.md is regenerated with `python tests/reliability.py`; a new case without it fails here."""
    text = DOC.read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| `")]
    cells = {tuple(c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:3]) for ln in rows}
    for c in CASES:
        if applies(c):
            key = (f"`{c.entry}`", c.bad_input.replace("|", "\\|"))
            assert key in cells, f"{c.id} missing from {DOC.name}: run python tests/reliability.py"
    assert all(re.search(r"\| (2|raises \w+Error) \|$", ln) for ln in rows)


def _subcommands(parser, prefix=()):
    """Every (sub)command path of the CLI, e.g. ("data", "make")."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,)
                yield from _subcommands(sub, prefix + (name,))


def test_every_subcommand_help_renders(capsys):
    """argparse %-formats help strings: a field doc with a bare '%' ("80% [MASK]") crashed `pretrain --help`."""
    from spinrl.cli.main import build_parser, main

    paths = list(_subcommands(build_parser()))
    assert ("pretrain",) in paths and ("data", "make") in paths and ("behaviour", "train") in paths
    for path in paths:
        with pytest.raises(SystemExit) as e:
            main([*path, "--help"])
        assert e.value.code == 0, path
        assert "usage: spinrl " + " ".join(path) in capsys.readouterr().out
    main_help = build_parser().format_help()
    assert "pretrain" in main_help


def test_cli_warnings_are_one_line_and_only_spinrls():
    """The CLI prints spinrl's warnings as one line; a third-party warning (Ray's deprecations) keeps Python's
    format instead of being passed off as spinrl's."""
    import spinrl.cli.main as cli

    own = cli._one_line_warning("--threads 2: pass --threads 1", UserWarning, cli.__file__, 1)
    assert own == "spinrl: warning: --threads 2: pass --threads 1\n"
    other = cli._one_line_warning("`use_polars` is deprecated", DeprecationWarning, "/site-packages/ray/data/context.py", 7)
    assert other.startswith("/site-packages/ray/data/context.py:7: DeprecationWarning:") and "spinrl" not in other
