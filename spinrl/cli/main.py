"""The ``spinrl`` command. It only parses flags and calls the public Python API.

Every :class:`spinrl.errors.SpinError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from pathlib import Path

from spinrl.cli.args import add_config_args, add_nested_args, config_from_args, nested_from_args, parse_kwargs, resumed_config
from spinrl.errors import ConfigError, SpinError
from spinrl.spaces import FactoredSpace

COMMANDS = {}


def command(name: str):
    def deco(fn):
        COMMANDS[name] = fn
        return fn

    return deco


# ---------------------------------------------------------------------- envs
def cmd_envs(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl import envs

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

    ds = load(args.path, verify=not args.no_verify)
    s = ds.summary()
    if args.json:
        d = s.as_dict()
        d["path"] = str(args.path)
        print(json.dumps(d, indent=2))
    else:
        print(s.format())
    return 0


def cmd_data_validate(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.data import load

    ds = load(args.path, verify=True)
    if args.env:
        from spinrl import envs

        env = envs.make(ds.env_id, **ds.env_kwargs)
        obs_dim = int(env.observation_space.shape[0])
        if obs_dim != ds.observation_dim:
            raise SpinError(
                f"observations have {ds.observation_dim} features but {ds.env_id} produces {obs_dim}; "
                "the dataset belongs to another environment or kwargs"
            )
        nvec = [int(m) for m in env.action_space.nvec]
        if nvec != list(ds.nvec):
            raise SpinError(f"nvec {list(ds.nvec)} does not match {ds.env_id}'s action space {nvec}")
    print(f"ok: {args.path} ({ds.num_transitions} transitions, {ds.num_episodes} episodes, checksum {ds.meta['checksum'][:12]})")
    return 0


def cmd_data_import_dmc(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.data.interop import import_public_dmc

    ds, report = import_public_dmc(args.path, env_id=args.env, bins=args.bins, level=args.level,
                                   done_means=args.done_means, time_limit=args.time_limit)
    print(report)
    out = ds.save(args.out, overwrite=args.overwrite)
    print(f"saved {out}")
    return 0


def cmd_data_export_dmc(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.data import load
    from spinrl.data.interop import export_public_dmc

    path = export_public_dmc(load(args.path), args.root)
    print(f"wrote {path}")
    return 0


def cmd_data_export_minari(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.data import load
    from spinrl.data.minari_io import export_minari

    out = export_minari(load(args.path), args.dataset_id)
    print(f"exported to Minari dataset {args.dataset_id} ({out})")
    return 0


def cmd_data_import_minari(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.data.minari_io import import_minari

    ds = import_minari(args.dataset_id)
    out = ds.save(args.out, overwrite=args.overwrite)
    print(ds.summary().format())
    print(f"saved {out}")
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
        raise ConfigError(f"--{other[0]}-{f.replace('_', '-')} is a flag of --algo {other[0]}; this run uses --algo {algo}: "
                          f"drop it or pass --algo {other[0]}")
    return algo_all.get(algo or "", {}), nested_from_args(args, "model_kwargs").get("model", {})


def cmd_pretrain(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.training.config import PretrainConfig
    from spinrl.evaluation.structure import describe
    from spinrl.training.pretrain import pretrain, stop_summary

    with warnings.catch_warnings():  # the still-falling warning is printed below, once
        warnings.filterwarnings("ignore", message="ASM stopped")
        _, model_kw = _nested_kwargs(args, None)
        cfg = _resumed(PretrainConfig, config_from_args(PretrainConfig, args), args, ("dataset",))
        if model_kw:
            cfg = dataclasses.replace(cfg, model_kwargs={**cfg.model_kwargs, **model_kw})
        out = pretrain(cfg)
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
        cfg = dataclasses.replace(cfg, algo_kwargs={**cfg.algo_kwargs, **algo_kw}, model_kwargs={**cfg.model_kwargs, **model_kw})
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
    from spinrl.evaluation.evaluate import evaluate

    res = evaluate(args.policy, env=args.env, episodes=args.episodes, seed=args.seed, greedy=args.greedy,
                   mode=args.mode, threads=args.threads, video=args.video, **parse_kwargs(extra))
    if args.json:
        print(json.dumps(res.as_dict(), indent=2))
    else:
        line = (f"expected return {res.mean:.4f} (exact, on the env's model)" if res.exact
                else f"return {res.mean:.2f} +/- {res.std:.2f} over {len(res.returns)} episodes")
        if res.normalized_mean is not None:
            line += f", normalized {res.normalized_mean:.1f} (reference: {res.reference.get('source')})"
        print(line)
        if res.video:
            print(f"video: {res.video['path']} ({res.video['frames']} frames, episode seed {res.video['seed']}, "
                  f"return {res.video['return']:.2f})")
    return 0


def cmd_demo(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.experiments.demo import DemoConfig, demo

    demo(config_from_args(DemoConfig, args))
    return 0


def cmd_behaviour_train(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.training.behaviour import DIVERGING, BehaviourConfig, q_divergence, reward_max, train_behaviour, training_return

    cfg = _resumed(BehaviourConfig, config_from_args(BehaviourConfig, args), args, ("env",), key=None)
    for row in train_behaviour(cfg):
        q = "-" if row["q_mean"] is None else f"{row['q_mean']:.2f}"
        print(f"step {row['env_step']}: eval return {row['eval_return_mean']:.1f} +/- {row['eval_return_std']:.1f}, "
              f"epsilon {row['epsilon']:.3f}, loss {row['loss']}, q {q}, wall {row['wall_seconds']:.0f}s", flush=True)
        warning = q_divergence(row["q_mean"], cfg.gamma, reward_max(vars(cfg)), training_return(row, vars(cfg)))
        if warning:
            print(f"warning: step {row['env_step']}: {warning}{DIVERGING}", file=sys.stderr, flush=True)
    print(f"run saved to {cfg.out}")
    return 0


def cmd_data_report(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.experiments.dataset_report import write_report

    print(f"wrote {write_report(args.behaviour_root, args.data, args.out, args.img_dir)}")
    return 0


def cmd_behaviour_export(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.experiments.behaviour_sets import BehaviourSet
    from spinrl.utils.hardware import check_threads

    if args.select_top < 1 or args.select_episodes < 0:
        raise ConfigError("--select-top must be >= 1 and --select-episodes >= 0 (0 keeps the training evaluations' choice)")
    check_threads(args.threads)  # before the run folder is read
    bset = BehaviourSet(args.run)
    out = bset.export(args.out, top=args.select_top, episodes=args.select_episodes, threads=args.threads)
    for level in ("expert", "medium"):
        c = bset.index.get(level)
        again = f", {c['selection_episodes']} fresh episodes {c['selection_return_mean']:.1f}" if c and "selection_episodes" in c else ""
        print(f"{level}: " + ("none in range" if c is None else
                              f"{c['file']} (env step {c['env_step']}, greedy return {c['eval_return_mean']:.1f}{again})"))
    ref = bset.index["reference"]
    print(f"reference: random {ref['random']:.1f}, expert {ref['expert']:.1f} ({ref['episodes']} episodes each); exported to {out}")
    return 0


def cmd_behaviour_carry(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.experiments.behaviour_sets import carry

    info = carry(args.run, args.out, overwrite=args.overwrite)
    best = info["best"]
    print(f"carried {info['env']} bins {info['bins']} at env step {info['env_step']:,} "
          f"(best greedy return {best['eval_return_mean']:.1f} at {best['env_step']:,}; {len(info['kept'])} policy files) "
          f"to {args.out}\ncontinue with: {info['continue']}")
    return 0


# ---------------------------------------------------------------------- parser
_OVERWRITE = "write into --out even if it is a directory spinrl did not write (files spinrl did not write are kept)"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), like every other spinrl error; exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def build_parser(light: bool = False) -> argparse.ArgumentParser:
    """The CLI's parser; ``light``: only ``envs`` and ``data``, whose parsers import no torch (those verbs then
    start in about a second instead of the several that loading torch takes)."""
    from spinrl import __version__
    from spinrl.experiments.behaviour_sets import SELECT_EPISODES, SELECT_TOP
    from spinrl.experiments.datasets import DataMakeConfig

    p = _Parser(
        prog="spinrl",
        description="Offline RL in factored discrete action spaces: SPIN and baselines.",
    )
    p.add_argument("--version", action="version", version=f"spinrl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    e = sub.add_parser("envs", help="list environments: ids, observation dims, nvec, joint-space size")
    e.add_argument("--json", action="store_true", help="machine-readable output")
    e.set_defaults(fn=cmd_envs)

    d = sub.add_parser("data", help="make, inspect, validate, import and export datasets")
    dsub = d.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    dsub.required = True
    mk = dsub.add_parser(
        "make",
        allow_abbrev=False,
        help="generate a dataset; environment options follow as --name value (e.g. --actuators 12)",
        description=DataMakeConfig.__doc__,
    )
    add_config_args(mk, DataMakeConfig, positional=("env",))
    mk.set_defaults(fn=cmd_data_make, allow_extra=True)
    info = dsub.add_parser("info", help="summary of a dataset (episodes, returns, normalized score, action histograms)")
    info.add_argument("path")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument("--no-verify", action="store_true", help="skip the checksum check (faster on huge datasets)")
    info.set_defaults(fn=cmd_data_info)
    val = dsub.add_parser("validate", help="verify checksums and contents; exit 2 on any problem")
    val.add_argument("path")
    val.add_argument("--env", action=argparse.BooleanOptionalAction, default=False, help="also check against the environment")
    val.set_defaults(fn=cmd_data_validate)
    imp = dsub.add_parser("import-dmc", help="import the public factorised-DMC pickle format (restricted unpickler)")
    imp.add_argument("path", help="file <root>/<bins>_bins/<domain>-<task>-<level>")
    imp.add_argument("--out", required=True, help="output dataset directory")
    imp.add_argument("--env", default=None, help="env id (default: inferred from the file name)")
    imp.add_argument("--bins", type=int, default=None, help="bins per dimension (default: from the <bins>_bins folder)")
    imp.add_argument("--level", default=None, help="dataset level (default: inferred from the file name)")
    imp.add_argument("--done-means", choices=("auto", "truncation", "termination"), default="auto",
                     help="how to read the done flag: auto = truncation when the episode ran to the time limit, "
                          "else termination (DMC never terminates: pass truncation for DMC files with short episodes)")
    imp.add_argument("--time-limit", type=int, default=None, help="episode time limit for --done-means auto (dmc: 1000)")
    imp.add_argument("--overwrite", action="store_true", help=_OVERWRITE)
    imp.set_defaults(fn=cmd_data_import_dmc)
    exp = dsub.add_parser("export-dmc", help="export a dataset to the public pickle layout <root>/<bins>_bins/<domain>-<task>-<level>")
    exp.add_argument("path")
    exp.add_argument("--root", required=True)
    exp.set_defaults(fn=cmd_data_export_dmc)
    em = dsub.add_parser("export-minari", help="export to a local Minari dataset (extra: minari)")
    em.add_argument("path")
    em.add_argument("--dataset-id", required=True, help="Minari id, e.g. spinrl/maze12/medium-expert-v0")
    em.set_defaults(fn=cmd_data_export_minari)
    im = dsub.add_parser("import-minari", help="import a local Minari dataset with a MultiDiscrete action space (extra: minari)")
    im.add_argument("dataset_id")
    im.add_argument("--out", required=True)
    im.add_argument("--overwrite", action="store_true", help=_OVERWRITE)
    im.set_defaults(fn=cmd_data_import_minari)

    from spinrl.experiments.dataset_report import add_arguments as report_arguments

    rp = dsub.add_parser("report", help="write docs/datasets.md (+ learning-curve PNGs) from behaviour sets and datasets")
    report_arguments(rp)
    rp.set_defaults(fn=cmd_data_report)
    if light:
        return p

    from spinrl.experiments.demo import DemoConfig
    from spinrl.algorithms import CONFIGS as ALGO_CONFIGS
    from spinrl.models.config import ModelConfig
    from spinrl.training.config import PretrainConfig, TrainConfig

    pt = sub.add_parser("pretrain", help="pretrain an Action Structure Model (masked action modelling; stops at a validation plateau or a budget)",
                        description=PretrainConfig.__doc__)
    add_config_args(pt, PretrainConfig, positional=("dataset",), skip=("model_kwargs",))
    add_nested_args(pt, "model sizes (override the --preset)", {"model": ModelConfig}, "model_kwargs",
                    default_note="paper preset")
    pt.set_defaults(fn=cmd_pretrain)
    tr = sub.add_parser("train", help="train a policy: --algo {iql,awac,bcq} --actor {factored,autoregressive,saint,spin,spin-cached}",
                        description=TrainConfig.__doc__)
    add_config_args(tr, TrainConfig, positional=("dataset",), skip=("algo_kwargs", "model_kwargs"))
    add_nested_args(tr, "algorithm hyper-parameters (each --ALGO-NAME sets NAME of --algo ALGO; --gamma is above)",
                    ALGO_CONFIGS, "algo_kwargs", skip=("gamma",))
    add_nested_args(tr, "model sizes (override the --preset)", {"model": ModelConfig}, "model_kwargs",
                    default_note="paper preset")
    tr.set_defaults(fn=cmd_train)
    ev = sub.add_parser("eval", help="evaluate a policy file in its dataset's environment (or --env ID with --name value options)")
    ev.add_argument("policy", help="policy.pt of a run directory")
    ev.add_argument("--env", default=None, help="environment id: spinrl's, or any registered Gymnasium id, module:ID "
                    "importing the module that registers it (default: the policy's dataset environment)")
    ev.add_argument("--episodes", type=int, default=10, help="episodes, reset with seeds seed+100+k (default: 10)")
    ev.add_argument("--seed", type=int, default=0, help="seed of resets and action sampling (default: 0)")
    ev.add_argument("--greedy", action="store_true", help="most likely action instead of a sample")
    ev.add_argument("--mode", choices=("auto", "rollout", "exact"), default="auto",
                    help="exact: expected return on the env's known model (sepsis); auto (default): exact where known")
    ev.add_argument("--json", action="store_true", help="machine-readable output")
    ev.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's own count); 1 beside another job, where more only stall")
    ev.add_argument("--video", default=None, metavar="OUT.mp4",
                    help="also render episode 0 (maze, dmc, Gymnasium envs with rgb_array) into this .mp4 (extra 'video')")
    ev.set_defaults(fn=cmd_eval, allow_extra=True)
    dm = sub.add_parser("demo", help="the main job: SPIN (and SPIN-cached) vs factored IQL on Maze-12 medium-expert, table + plot",
                        description=DemoConfig.__doc__)
    add_config_args(dm, DemoConfig)
    dm.set_defaults(fn=cmd_demo)

    from spinrl.training.behaviour import BehaviourConfig

    bh = sub.add_parser("behaviour", help="train DecQN behaviour agents for the DM Control datasets")
    bsub = bh.add_subparsers(dest="behaviour_command", metavar="BEHAVIOUR_COMMAND")
    bsub.required = True
    bt = bsub.add_parser("train", help="online DecQN on dmc:<domain>-<task> with checkpoints and exact --resume",
                         description=BehaviourConfig.__doc__)
    add_config_args(bt, BehaviourConfig, positional=("env",))
    bt.set_defaults(fn=cmd_behaviour_train)
    bx = bsub.add_parser("export", help="choose expert/medium checkpoints of a run, compute references, copy them to --out")
    bx.add_argument("run", help="run directory of `spinrl behaviour train`")
    bx.add_argument("--out", required=True, help="output folder, e.g. behaviour_checkpoints/cheetah-run-3")
    bx.add_argument("--select-top", type=int, default=SELECT_TOP,
                    help="re-evaluate this many best checkpoints and medium candidates before choosing (default: %(default)s)")
    bx.add_argument("--select-episodes", type=int, default=SELECT_EPISODES,
                    help="fresh greedy episodes per re-evaluated checkpoint; 0 keeps the training evaluations' choice "
                         "(default: %(default)s)")
    bx.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads for the policies' forward passes; more only spin beside other jobs "
                         "(default: %(default)s)")
    bx.set_defaults(fn=cmd_behaviour_export)
    bc = bsub.add_parser("carry", help="a run's state without its replay (a few MB) to continue it elsewhere with "
                         "`behaviour train --continue-from`")
    bc.add_argument("run", help="run directory of `spinrl behaviour train`")
    bc.add_argument("--out", required=True, help="output folder, e.g. behaviour_checkpoints/carry/humanoid-stand-3")
    bc.add_argument("--overwrite", action="store_true", help=_OVERWRITE)
    bc.set_defaults(fn=cmd_behaviour_carry)

    for hook in _EXTRA_PARSERS:
        hook(sub)
    return p


_EXTRA_PARSERS: list = []


# ---------------------------------------------------------------------- experiments (sweep, report, offline eval)
def cmd_sweep(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.experiments.sweep import sweep

    res = sweep(args.spec, args.out, backend=args.backend, workers=args.workers, dry_run=args.dry_run,
                only=args.only, ray_num_cpus=args.ray_num_cpus, ray_address=args.ray_address)
    return 1 if res.get("failed") else 0


def cmd_report(args: argparse.Namespace, extra: list[str]) -> int:
    from spinrl.experiments.report import save_records, write_report

    if args.early_step is not None:
        from spinrl.experiments import early

        if not args.doc:
            raise ConfigError("--early-step needs --doc PAGE.md (the page to write, e.g. docs/EARLY.md)")
        if args.records:
            save_records(args.dir, args.records)
        cmd = " ".join(["spinrl report", *sys.argv[2:]]) if sys.argv[1:2] == ["report"] else None
        doc = early.write(args.records or args.dir, args.doc, args.early_step, args.reference, args.preamble, cmd)
        print(f"wrote {doc} and {doc.with_suffix('.json')}")
        return 0
    out = write_report(args.dir, doc=args.doc, title=args.title, paper=args.paper, preamble=args.preamble,
                       records=args.records)
    print(f"wrote {out / 'report.md'} and {out / 'report.json'}" + (f" and {args.doc}" if args.doc else ""))
    return 0


def cmd_pretrain_or_distributed(args: argparse.Namespace, extra: list[str]) -> int:
    if not getattr(args, "distributed", False):
        if args.dist_backend != "torchrun" or args.workers is not None:
            raise ConfigError("--dist-backend and --workers only apply with --distributed; add --distributed")
        return cmd_pretrain(args, extra)
    from spinrl.training.config import PretrainConfig
    from spinrl.training.pretrain import pretrain_distributed, pretrain_ray

    cfg = config_from_args(PretrainConfig, args)
    if args.dist_backend == "ray":
        out = pretrain_ray(cfg, workers=args.workers or 2, use_gpu=cfg.device.startswith("cuda"), address=args.ray_address)
    else:
        if args.workers is not None:
            raise ConfigError("--workers is for --dist-backend ray; under torchrun use torchrun --nproc_per_node K")
        out = pretrain_distributed(cfg)
    if out is not None:  # rank 0
        info = json.loads((out / "asm.json").read_text())
        print(f"ASM saved to {out} ({info['world_size']} processes, global batch {info['batch_size']}): chosen epoch "
              f"{info['chosen_epoch']} of {info['epochs_run']}, wall {info['wall_seconds']:.1f}s")
    return 0


def cmd_eval_or_offline(args: argparse.Namespace, extra: list[str]) -> int:
    if not getattr(args, "offline", None):
        return cmd_eval(args, extra)
    from spinrl.evaluation.offline import offline_evaluate

    res = offline_evaluate(args.policy, args.offline, seed=args.seed, iterations=args.fqe_iterations, threads=args.threads)
    if Path(args.policy).name == "policy.pt" and (Path(args.policy).parent / "config.json").exists():
        from spinrl.evaluation.offline import write_offline_eval

        write_offline_eval(Path(args.policy).parent, res)  # where `spinrl report` finds it
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(
            f"offline ({res['heldout_episodes']} held-out episodes): FQE value {res['fqe_value']:.3f} (gamma {res['gamma']}; "
            f"behaviour's discounted return {res['behaviour_value']:.3f}); action agreement: exact {res['exact_match']:.3f}, "
            f"per sub-action {res['sub_action_agreement']:.3f}"
            + (f"; simulator discounted return {res['simulator_discounted_return']:.3f} over {res['simulator_episodes']} episodes"
               if res.get("simulator_discounted_return") is not None else "")
        )
    return 0


def _experiment_parsers(sub) -> None:
    sw = sub.add_parser("sweep", help="run a TOML grid of pretraining + training runs (local process pool or Ray Tune)",
                        description="Run every trial of SPEC (see benchmarks/smoke.toml); rerunning skips finished "
                                    "runs and resumes interrupted ones.")
    sw.add_argument("spec", help="sweep spec (TOML)")
    sw.add_argument("--out", required=True, help="sweep directory: runs/, asm/, sweep.json")
    sw.add_argument("--backend", choices=("local", "ray"), default="local",
                    help="local = a process pool on this machine; ray = Ray Tune with per-trial resources (extra: ray)")
    sw.add_argument("--workers", type=int, default=None, help="local: concurrent runs (default: sweep.workers or the cores)")
    sw.add_argument("--only", action="append", default=None, metavar="KEY=V1,V2",
                    help="run only trials whose KEY is one of the values (repeatable), e.g. --only actor=factored,spin")
    sw.add_argument("--dry-run", action="store_true", help="list the trials and their state, run nothing")
    sw.add_argument("--ray-num-cpus", type=int, default=None, help="ray: CPUs of a local Ray started by the sweep")
    sw.add_argument("--ray-address", default=None,
                    help="ray: join a running cluster (e.g. 'auto' or HOST:6379 after `ray start --head`) instead of "
                         "starting one; --out must be on a filesystem every node sees")
    sw.set_defaults(fn=cmd_sweep)
    rp = sub.add_parser("report", help="report.md + report.json + learning-curve PNGs from a directory of run dirs")
    rp.add_argument("dir", help="directory holding run directories (e.g. a sweep's --out)")
    rp.add_argument("--doc", default=None, help="also write the markdown to this path with images beside it (docs/RESULTS.md)")
    rp.add_argument("--title", default=None, help="report title")
    rp.add_argument("--records", default=None, metavar="RECORDS",
                    help="first copy the report's inputs of DIR's finished runs (KB each, no checkpoints) into RECORDS, "
                         "then report from RECORDS, which keeps earlier runs too (commit it, e.g. benchmarks/records/paper)")
    rp.add_argument("--paper", action="store_true", help="add the section listing how the runs' setting differs from the SPIN paper's")
    rp.add_argument("--preamble", default=None, help="markdown file inserted after the title (context; no numbers)")
    rp.add_argument("--early-step", type=int, default=None, metavar="S",
                    help="write the early-learning page instead (the paper's Table 4 protocol): returns at step S with IQM and "
                         "bootstrap intervals, paired SPIN differences, ASM controls, %% of a converged F-IQL (--reference)")
    rp.add_argument("--reference", default=None, metavar="DIR",
                    help="with --early-step: run directories or records of converged factored-IQL runs (the 100%% and the target)")
    rp.set_defaults(fn=cmd_report)
    if "pretrain" in sub.choices:
        pt = sub.choices["pretrain"]
        pt.add_argument("--distributed", action="store_true",
                        help="data-parallel under torchrun (gloo on CPU, nccl on GPU): the batch is split across ranks, rank 0 writes")
        pt.add_argument("--dist-backend", choices=["torchrun", "ray"], default="torchrun",
                        help="with --distributed: torchrun (start with torchrun --nproc_per_node K) or ray (Ray Train "
                             "TorchTrainer, started by this command; extra: ray)")
        pt.add_argument("--workers", type=int, default=None, help="with --dist-backend ray: ranks, one CPU each (default 2)")
        pt.add_argument("--ray-address", default=None, help="with --dist-backend ray: join this Ray cluster (default: a local one)")
        pt.set_defaults(fn=cmd_pretrain_or_distributed)
    if "eval" in sub.choices:
        ev = sub.choices["eval"]
        ev.add_argument("--offline", default=None, metavar="DATASET",
                        help="dataset-only evaluation: FQE on held-out episodes and action agreement with the data "
                             "(saved as offline_eval.json in the policy's run directory, a column of `spinrl report`)")
        ev.add_argument("--fqe-iterations", type=int, default=None, help="--offline: FQE target updates (default: 50)")
        ev.set_defaults(fn=cmd_eval_or_offline)


_EXTRA_PARSERS.append(_experiment_parsers)


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
    parser = build_parser(light=bool(argv) and argv[0] in ("envs", "data"))
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
    fixes = {errno.ENOSPC: "the disk is full; free space or write elsewhere",
             errno.EDQUOT: "the disk quota is exceeded; free space or write elsewhere",
             errno.EROFS: "the file system is read-only; write somewhere writable",
             errno.EACCES: "permission denied; check the path's permissions or choose another path",
             errno.EPERM: "operation not permitted; check the path's permissions or choose another path",
             errno.ENOTDIR: "a path component is a file, not a directory; choose another path",
             errno.EISDIR: "a directory is in the way where a file is written; choose another path",
             errno.EEXIST: "something is already there; choose another path",
             errno.ENAMETOOLONG: "the path is too long; choose a shorter one"}
    if isinstance(e, MemoryError):
        return "out of memory for the requested size; use smaller sizes (--batch-size, --transitions, ...)"
    if isinstance(e, RecursionError):
        return "input nested too deeply to read; the file is malformed"
    if isinstance(e, OverflowError):
        return f"a number is out of range ({e}); use a smaller value"
    fix = fixes.get(getattr(e, "errno", None), "check the path and the machine's resources")
    msg = (e.strerror or str(e)).replace("\n", " ")
    return f"{msg}{' ' + where if where else ''}: {fix}"


if __name__ == "__main__":
    sys.exit(main())
