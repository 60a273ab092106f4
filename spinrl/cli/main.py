"""The ``spinrl`` command. It only parses flags and calls the public Python API.

Every verb's flags come from one typed dataclass, the same object its Python API function takes (e.g.
``spinrl data make`` and ``make_dataset(DataMakeConfig(...))``, ``spinrl eval`` and
``run_eval(EvalConfig(...))``): see :data:`VERBS`. Each verb's parser is built once, by one function, and
only when that verb runs, so ``spinrl --help`` and the data verbs start without loading torch; the config
modules import no torch either.

Every :class:`spinrl.errors.SpinError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from spinrl.cli.args import (
    add_config_args,
    add_nested_args,
    config_from_args,
    nested_from_args,
    parse_kwargs,
    resumed_config,
)
from spinrl.errors import ConfigError, SpinError


@dataclass
class Output:
    """How the command prints its result: the CLI's own choice, so not part of any API config."""

    json: bool = False
    """machine-readable output"""


# ---------------------------------------------------------------------- envs
def cmd_envs(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl import envs
    from spinrl.spaces import FactoredSpace

    rows = envs.list_envs()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    print(f"{'id':<22} {'obs':>5} {'N':>4}  nvec, joint actions / kwargs")
    for r in rows:
        nvec = r.get("nvec") or []
        short = FactoredSpace(nvec).describe() if nvec else "?"
        print(f"{r['id']:<22} {str(r.get('obs_dim', '?')):>5} {len(nvec):>4}  {short} {r.get('kwargs', '')}")
        if r.get("note"):
            print(f"{'':<22} {r['note']}")
    return 0


# ---------------------------------------------------------------------- data
def cmd_data_make(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.experiments.datasets import DataMakeConfig, make_dataset

    cfg = config_from_args(DataMakeConfig, args, env_kwargs=parse_kwargs(extra))
    path = make_dataset(cfg)
    from spinrl.data import load

    s = load(path).summary()
    print(s.format())
    print(f"saved {path}")
    return 0


def cmd_data_info(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.data import load
    from spinrl.experiments.datasets import DataInfoConfig

    cfg = config_from_args(DataInfoConfig, args)
    s = load(cfg.path, verify=cfg.verify).summary()
    if args.json:
        d = s.as_dict()
        d["path"] = str(cfg.path)
        print(json.dumps(d, indent=2))
    else:
        print(s.format())
    return 0


def cmd_data_validate(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.experiments.datasets import DataValidateConfig, validate_dataset

    cfg = config_from_args(DataValidateConfig, args)
    ds = validate_dataset(cfg)
    print(
        f"ok: {cfg.path} ({ds.num_transitions} transitions, {ds.num_episodes} episodes, "
        f"checksum {ds.meta['checksum'][:12]})"
    )
    return 0


def cmd_data_import_dmc(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.experiments.datasets import ImportDmcConfig, import_dmc

    out, report = import_dmc(config_from_args(ImportDmcConfig, args))
    print(report)
    print(f"saved {out}")
    return 0


def cmd_data_export_dmc(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.experiments.datasets import ExportDmcConfig, export_dmc

    print(f"wrote {export_dmc(config_from_args(ExportDmcConfig, args))}")
    return 0


def cmd_data_export_minari(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.experiments.datasets import ExportMinariConfig, export_to_minari

    cfg = config_from_args(ExportMinariConfig, args)
    out = export_to_minari(cfg)
    print(f"exported to Minari dataset {cfg.dataset_id} ({out})")
    return 0


def cmd_data_import_minari(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.experiments.datasets import ImportMinariConfig, import_from_minari

    out, ds = import_from_minari(config_from_args(ImportMinariConfig, args))
    print(ds.summary().format())
    print(f"saved {out}")
    return 0


def cmd_data_report(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.experiments.dataset_report import DatasetReportConfig, write_dataset_report

    print(f"wrote {write_dataset_report(config_from_args(DatasetReportConfig, args))}")
    return 0


# ---------------------------------------------------------------------- learning
def _resumed(cls: type, cfg, args: argparse.Namespace, positional: tuple[str, ...], key: str | None = "config"):
    """With --resume, the flags not given keep the values in the run's config.json (under ``key``; None: the
    whole file) so that `--out DIR --resume` alone continues a run made with other flags; without --resume,
    or before the run has a config.json, ``cfg`` (the command then says what is missing)."""
    path = Path(cfg.out) / "config.json" if cfg.out else None
    if not cfg.resume or path is None or not path.exists():
        return cfg
    from spinrl.utils.outdir import read_kind

    if read_kind(cfg.out) is None:  # a folder spinrl did not write: the command refuses it, naming --overwrite
        return cfg
    saved = json.loads(path.read_text())
    return resumed_config(cls, cfg, args.argv, saved if key is None else saved[key], positional)


def _nested_kwargs(args: argparse.Namespace, algo: str | None) -> tuple[dict, dict]:
    """The algorithm and model flags given (``--iql-beta 10``, ``--model-d-model 128``); a flag of another
    algorithm than ``--algo`` is refused rather than ignored."""
    algo_all = nested_from_args(args, "algo_kwargs")
    other = sorted(k for k in algo_all if k != algo)
    if other:
        f = next(iter(algo_all[other[0]]))
        raise ConfigError(
            f"--{other[0]}-{f.replace('_', '-')} is a flag of --algo {other[0]}; this run uses "
            f"--algo {algo}: drop it or pass --algo {other[0]}"
        )
    return algo_all.get(algo or "", {}), nested_from_args(args, "model_kwargs").get("model", {})


def cmd_pretrain(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.training.config import PretrainConfig
    from spinrl.training.launch import DistributedConfig, pretrain_launch

    dist = config_from_args(DistributedConfig, args)  # its flag combinations are checked before anything is read
    _, model_kw = _nested_kwargs(args, None)
    cfg = _resumed(PretrainConfig, config_from_args(PretrainConfig, args), args, ("dataset",))
    if model_kw:
        cfg = dataclasses.replace(cfg, model_kwargs={**cfg.model_kwargs, **model_kw})
    if dist.distributed:
        out = pretrain_launch(cfg, dist)
        if out is not None:  # rank 0
            info = json.loads((out / "asm.json").read_text())
            print(
                f"ASM saved to {out} ({info['world_size']} processes, global batch {info['batch_size']}): chosen "
                f"epoch {info['chosen_epoch']} of {info['epochs_run']}, wall {info['wall_seconds']:.1f}s"
            )
        return 0
    from spinrl.evaluation.structure import describe
    from spinrl.training.pretrain import stop_summary

    with warnings.catch_warnings():  # the still-falling warning is printed below, once
        warnings.filterwarnings("ignore", message="ASM stopped")
        out = pretrain_launch(cfg, dist)
    assert out is not None  # not distributed: this process is rank 0
    info = json.loads((out / "asm.json").read_text())
    print(f"ASM saved to {out} (wall {info['wall_seconds']:.1f}s)")
    print(stop_summary(info))
    print(describe(info["structure"]))
    return 0


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.training.config import TrainConfig
    from spinrl.training.trainer import train

    algo_kw, model_kw = _nested_kwargs(args, args.algo)
    cfg = _resumed(TrainConfig, config_from_args(TrainConfig, args), args, ("dataset",))
    if algo_kw or model_kw:  # typed flags win over the saved run's values (a resume then refuses a change)
        cfg = dataclasses.replace(
            cfg, algo_kwargs={**cfg.algo_kwargs, **algo_kw}, model_kwargs={**cfg.model_kwargs, **model_kw}
        )
    last = None
    for row in train(cfg):
        last = row if row.get("eval_return_mean") is not None else last
    msg = f"run saved to {cfg.out}"
    if last is not None:
        if last.get("eval_method") == "exact":
            msg += f": final expected return {last['eval_return_mean']:.4f} (exact, on the env's model)"
        else:
            msg += f": final eval return {last['eval_return_mean']:.2f} +/- {last['eval_return_std']:.2f}"
        if last.get("normalized_score") is not None:
            msg += f", normalized {last['normalized_score']:.1f}"
    print(msg)
    return 0


def cmd_eval(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.evaluation.config import EvalConfig, run_eval

    cfg = config_from_args(EvalConfig, args, env_kwargs=parse_kwargs(extra))
    res = run_eval(cfg)
    if cfg.offline is not None:
        if args.json:
            print(json.dumps(res, indent=2))
        else:
            print(
                f"offline ({res['heldout_episodes']} held-out episodes): FQE value {res['fqe_value']:.3f} (gamma "
                f"{res['gamma']}; behaviour's discounted return {res['behaviour_value']:.3f}); action agreement: exact "
                f"{res['exact_match']:.3f}, per sub-action {res['sub_action_agreement']:.3f}"
                + (
                    f"; simulator discounted return {res['simulator_discounted_return']:.3f} over "
                    f"{res['simulator_episodes']} episodes"
                    if res.get("simulator_discounted_return") is not None
                    else ""
                )
            )
        return 0
    if args.json:
        print(json.dumps(res.as_dict(), indent=2))
        return 0
    line = (
        f"expected return {res.mean:.4f} (exact, on the env's model)"
        if res.exact
        else f"return {res.mean:.2f} +/- {res.std:.2f} over {len(res.returns)} episodes"
    )
    if res.normalized_mean is not None:
        line += f", normalized {res.normalized_mean:.1f} (reference: {res.reference.get('source')})"
    print(line)
    if res.video:
        print(
            f"video: {res.video['path']} ({res.video['frames']} frames, episode seed {res.video['seed']}, "
            f"return {res.video['return']:.2f})"
        )
    return 0


def cmd_demo(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.experiments.demo import DemoConfig, demo

    demo(config_from_args(DemoConfig, args))
    return 0


# ---------------------------------------------------------------------- behaviour agents
def cmd_behaviour_train(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.training.behaviour import (
        DIVERGING,
        BehaviourConfig,
        q_divergence,
        reward_max,
        train_behaviour,
        training_return,
    )

    cfg = _resumed(BehaviourConfig, config_from_args(BehaviourConfig, args), args, ("env",), key=None)
    for row in train_behaviour(cfg):
        q = "-" if row["q_mean"] is None else f"{row['q_mean']:.2f}"
        print(
            f"step {row['env_step']}: eval return {row['eval_return_mean']:.1f} +/- {row['eval_return_std']:.1f}, "
            f"epsilon {row['epsilon']:.3f}, loss {row['loss']}, q {q}, wall {row['wall_seconds']:.0f}s",
            flush=True,
        )
        warning = q_divergence(row["q_mean"], cfg.gamma, reward_max(vars(cfg)), training_return(row, vars(cfg)))
        if warning:
            print(f"warning: step {row['env_step']}: {warning}{DIVERGING}", file=sys.stderr, flush=True)
    print(f"run saved to {cfg.out}")
    return 0


def cmd_behaviour_export(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.experiments.behaviour_sets import BehaviourExportConfig, export_set

    bset, out = export_set(config_from_args(BehaviourExportConfig, args))
    for level in ("expert", "medium"):
        c = bset.index.get(level)
        again = (
            f", {c['selection_episodes']} fresh episodes {c['selection_return_mean']:.1f}"
            if c and "selection_episodes" in c
            else ""
        )
        print(
            f"{level}: "
            + (
                "none in range"
                if c is None
                else f"{c['file']} (env step {c['env_step']}, greedy return {c['eval_return_mean']:.1f}{again})"
            )
        )
    ref = bset.index["reference"]
    print(
        f"reference: random {ref['random']:.1f}, expert {ref['expert']:.1f} ({ref['episodes']} episodes each); "
        f"exported to {out}"
    )
    return 0


def cmd_behaviour_carry(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.experiments.behaviour_sets import CarryConfig, carry

    cfg = config_from_args(CarryConfig, args)
    info = carry(cfg)
    best = info["best"]
    print(
        f"carried {info['env']} bins {info['bins']} at env step {info['env_step']:,} "
        f"(best greedy return {best['eval_return_mean']:.1f} at {best['env_step']:,}; {len(info['kept'])} policy "
        "files) "
        f"to {cfg.out}\ncontinue with: {info['continue']}"
    )
    return 0


# ---------------------------------------------------------------------- experiments (sweep, report)
def cmd_sweep(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.experiments.sweep import SweepOptions, sweep

    res = sweep(config_from_args(SweepOptions, args))
    return 1 if res.get("failed") else 0


def cmd_report(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.experiments.report import ReportOptions, report

    command = " ".join(["spinrl report", *sys.argv[2:]]) if sys.argv[1:2] == ["report"] else None
    print("wrote " + " and ".join(str(p) for p in report(config_from_args(ReportOptions, args), command)))
    return 0


# ---------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), like every other spinrl error; exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def _verb(
    sub,
    name: str,
    help: str,
    fn: Callable,
    *configs: type,
    positional: tuple[str, ...] = (),
    skip: tuple[str, ...] = (),
    allow_extra: bool = False,
    **parser_kw,
) -> argparse.ArgumentParser:
    """One (sub)command: flags from ``configs`` (the first one's docstring is the description; ``skip``/
    ``positional`` apply to it); ``allow_extra``: leftover ``--name value`` tokens reach the handler."""
    first = configs[0] if configs and configs[0] is not Output else None
    doc = (first.__doc__ or "").split("\n\n")[0] if first else None  # the first paragraph: what the verb does
    p = sub.add_parser(name, help=help, description=doc, **parser_kw)
    for i, cls in enumerate(configs):
        add_config_args(p, cls, positional=positional if i == 0 else (), skip=skip if i == 0 else ())
    p.set_defaults(fn=fn, allow_extra=allow_extra)
    return p


def _group(sub, name: str, help: str) -> argparse._SubParsersAction:
    g = sub.add_parser(name, help=help)
    gsub = g.add_subparsers(dest=f"{name}_command", metavar=f"{name.upper()}_COMMAND")
    gsub.required = True
    return gsub


def _envs_parser(sub, name: str, help: str) -> None:
    _verb(sub, name, help, cmd_envs, Output)


def _data_parser(sub, name: str, help: str) -> None:
    from spinrl.experiments import datasets as d
    from spinrl.experiments.dataset_report import DatasetReportConfig

    g = _group(sub, name, help)
    _verb(
        g,
        "make",
        "generate a dataset; environment options follow as --name value (e.g. --actuators 12)",
        cmd_data_make,
        d.DataMakeConfig,
        positional=("env",),
        skip=("env_kwargs",),
        allow_extra=True,
        allow_abbrev=False,
    )
    _verb(
        g,
        "info",
        "summary of a dataset (episodes, returns, normalized score, action histograms)",
        cmd_data_info,
        d.DataInfoConfig,
        Output,
        positional=("path",),
    )
    _verb(
        g,
        "validate",
        "verify checksums and contents; exit 2 on any problem",
        cmd_data_validate,
        d.DataValidateConfig,
        positional=("path",),
    )
    _verb(
        g,
        "import-dmc",
        "import the public factorised-DMC pickle format (restricted unpickler)",
        cmd_data_import_dmc,
        d.ImportDmcConfig,
        positional=("path",),
    )
    _verb(
        g,
        "export-dmc",
        "export a dataset to the public pickle layout <root>/<bins>_bins/<domain>-<task>-<level>",
        cmd_data_export_dmc,
        d.ExportDmcConfig,
        positional=("path",),
    )
    _verb(
        g,
        "export-minari",
        "export to a local Minari dataset (extra: minari)",
        cmd_data_export_minari,
        d.ExportMinariConfig,
        positional=("path",),
    )
    _verb(
        g,
        "import-minari",
        "import a local Minari dataset with a MultiDiscrete action space (extra: minari)",
        cmd_data_import_minari,
        d.ImportMinariConfig,
        positional=("dataset_id",),
    )
    _verb(
        g,
        "report",
        "write docs/datasets.md (+ learning-curve PNGs) from behaviour sets and datasets",
        cmd_data_report,
        DatasetReportConfig,
    )


_MODEL_SIZES = "model sizes (override the --preset)"


def _pretrain_parser(sub, name: str, help: str) -> None:
    from spinrl.models.config import ModelConfig
    from spinrl.training.config import PretrainConfig
    from spinrl.training.launch import DistributedConfig

    p = _verb(sub, name, help, cmd_pretrain, PretrainConfig, positional=("dataset",), skip=("model_kwargs",))
    add_config_args(p.add_argument_group("distributed pretraining"), DistributedConfig)
    add_nested_args(p, _MODEL_SIZES, {"model": ModelConfig}, "model_kwargs", default_note="paper preset")


def _train_parser(sub, name: str, help: str) -> None:
    from spinrl.algorithms import CONFIGS as ALGO_CONFIGS  # each beside its algorithm's losses: this loads torch
    from spinrl.models.config import ModelConfig
    from spinrl.training.config import TrainConfig

    p = _verb(sub, name, help, cmd_train, TrainConfig, positional=("dataset",), skip=("algo_kwargs", "model_kwargs"))
    add_nested_args(
        p,
        "algorithm hyper-parameters (each --ALGO-NAME sets NAME of --algo ALGO; --gamma is above)",
        ALGO_CONFIGS,
        "algo_kwargs",
        skip=("gamma",),
    )
    add_nested_args(p, _MODEL_SIZES, {"model": ModelConfig}, "model_kwargs", default_note="paper preset")


def _eval_parser(sub, name: str, help: str) -> None:
    from spinrl.evaluation.config import EvalConfig

    _verb(sub, name, help, cmd_eval, EvalConfig, Output, positional=("policy",), skip=("env_kwargs",), allow_extra=True)


def _demo_parser(sub, name: str, help: str) -> None:
    from spinrl.experiments.demo import DemoConfig

    _verb(sub, name, help, cmd_demo, DemoConfig)


def _behaviour_parser(sub, name: str, help: str) -> None:
    from spinrl.experiments.behaviour_sets import BehaviourExportConfig, CarryConfig
    from spinrl.training.behaviour.config import BehaviourConfig

    g = _group(sub, name, help)
    _verb(
        g,
        "train",
        "online DecQN on dmc:<domain>-<task> with checkpoints and exact --resume",
        cmd_behaviour_train,
        BehaviourConfig,
        positional=("env",),
    )
    _verb(
        g,
        "export",
        "choose expert/medium checkpoints of a run, compute references, copy them to --out",
        cmd_behaviour_export,
        BehaviourExportConfig,
        positional=("run",),
    )
    _verb(
        g,
        "carry",
        "a run's state without its replay (a few MB) to continue it elsewhere with `behaviour train --continue-from`",
        cmd_behaviour_carry,
        CarryConfig,
        positional=("run",),
    )


def _sweep_parser(sub, name: str, help: str) -> None:
    from spinrl.experiments.sweep import SweepOptions

    _verb(sub, name, help, cmd_sweep, SweepOptions, positional=("spec",))


def _report_parser(sub, name: str, help: str) -> None:
    from spinrl.experiments.report import ReportOptions

    _verb(sub, name, help, cmd_report, ReportOptions, positional=("dir",))


VERBS: dict[str, tuple[str, Callable]] = {
    "envs": ("list environments: ids, observation dims, nvec, joint-space size", _envs_parser),
    "data": ("make, inspect, validate, import and export datasets", _data_parser),
    "pretrain": (
        "pretrain an Action Structure Model (masked action modelling; stops at a validation plateau or a budget)",
        _pretrain_parser,
    ),
    "train": (
        "train a policy: --algo {iql,awac,bcq} --actor {factored,autoregressive,saint,spin,spin-cached}",
        _train_parser,
    ),
    "eval": (
        "evaluate a policy file in its dataset's environment (or --env ID with --name value options)",
        _eval_parser,
    ),
    "demo": (
        "the main job: SPIN (and SPIN-cached) vs factored IQL on Maze-12 medium-expert, table + plot",
        _demo_parser,
    ),
    "behaviour": ("train DecQN behaviour agents for the DM Control datasets", _behaviour_parser),
    "sweep": ("run a TOML grid of pretraining + training runs (local process pool or Ray Tune)", _sweep_parser),
    "report": ("report.md + report.json + learning-curve PNGs from a directory of run dirs", _report_parser),
}
"""Top-level verb -> (its one-line help, the function that builds its parser from the verb's config dataclasses)."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser. ``only``: build the flags of that verb alone (the others are listed, without flags),
    which is what :func:`main` does so that a verb imports only its own configs; None builds every verb."""
    from spinrl import __version__

    p = _Parser(prog="spinrl", description="Offline RL in factored discrete action spaces: SPIN and baselines.")
    p.add_argument("--version", action="version", version=f"spinrl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_, build) in VERBS.items():
        if only is None or name == only:
            build(sub, name, help_)
        else:
            sub.add_parser(name, help=help_)
    return p


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_python_formatwarning = warnings.formatwarning


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """spinrl's own warnings on the command line: the one-line message, not Python's file:line and source echo;
    other packages' warnings (Ray, torch) keep Python's format, so none is passed off as spinrl's."""
    if os.path.abspath(filename).startswith(_PACKAGE + os.sep):
        return f"spinrl: warning: {message}\n"
    return _python_formatwarning(message, category, filename, lineno, line)


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(only=argv[0] if argv and argv[0] in VERBS else "")
    args, extra = parser.parse_known_args(argv)
    args.argv = list(argv)  # a command that resumes tells the flags given from their defaults
    if extra and not getattr(args, "allow_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.fn(args, extra) or 0)
    except SpinError as e:
        print(f"spinrl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spinrl: interrupted; rerun with --resume where the command supports it", file=sys.stderr)
        return 130
    except (OSError, MemoryError, RecursionError, OverflowError) as e:
        print(f"spinrl: error: {os_error_line(e)}", file=sys.stderr)
        return 2


def os_error_line(e: BaseException) -> str:
    """One line for an OS or resource error (disk full, read-only, permission, out of memory), naming the path
    and the fix: these come from the machine, not from a bug, so no traceback."""
    import errno

    where = " ".join(f"'{f}'" for f in (getattr(e, "filename", None), getattr(e, "filename2", None)) if f)
    fixes: dict[int | None, str] = {
        errno.ENOSPC: "the disk is full; free space or write elsewhere",
        errno.EDQUOT: "the disk quota is exceeded; free space or write elsewhere",
        errno.EROFS: "the file system is read-only; write somewhere writable",
        errno.EACCES: "permission denied; check the path's permissions or choose another path",
        errno.EPERM: "operation not permitted; check the path's permissions or choose another path",
        errno.ENOTDIR: "a path component is a file, not a directory; choose another path",
        errno.EISDIR: "a directory is in the way where a file is written; choose another path",
        errno.EEXIST: "something is already there; choose another path",
        errno.ENAMETOOLONG: "the path is too long; choose a shorter one",
    }
    if isinstance(e, MemoryError):
        return "out of memory for the requested size; use smaller sizes (--batch-size, --transitions, ...)"
    if isinstance(e, RecursionError):
        return "input nested too deeply to read; the file is malformed"
    if isinstance(e, OverflowError):
        return f"a number is out of range ({e}); use a smaller value"
    fix = fixes.get(getattr(e, "errno", None), "check the path and the machine's resources")
    msg = (getattr(e, "strerror", None) or str(e)).replace("\n", " ")
    return f"{msg}{' ' + where if where else ''}: {fix}"


if __name__ == "__main__":
    sys.exit(main())
