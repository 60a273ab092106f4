"""The embedded-default main job (``make demo`` / ``spinrl demo``).

Maze with 12 actuators, medium-expert data (generated and cached on first use): pretrain the ASM,
train SPIN-IQL and factored-IQL with the same budget and seed, evaluate, print a comparison table and
write ``learning_curves.png`` and ``results.json``. Every stage resumes or is reused when rerun.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from spinrl.utils.jsonable import to_jsonable
from spinrl.evaluation.targets import final_return, target_value, time_to_target
from spinrl.experiments.datasets import DataMakeConfig, cached_dataset
from spinrl.utils.checkpoint import write_text_atomic
from spinrl.training.config import PretrainConfig, TrainConfig
from spinrl.training.pretrain import pretrain
from spinrl.training.trainer import run


@dataclass
class DemoConfig:
    """SPIN-IQL vs factored-IQL on Maze (12 actuators, medium-expert): table, learning curves, results.json."""

    out: str = "demo_out"
    """output directory (dataset cache is $SPINRL_DATA)"""
    actuators: int = 12
    """maze actuators (2^actuators joint actions)"""
    transitions: int = 50_000
    """dataset size (medium-expert: half medium, half expert)"""
    steps: int = 6000
    """gradient steps per method"""
    eval_every: int = 500
    """gradient steps between evaluations"""
    eval_episodes: int = 20
    """episodes per evaluation"""
    seed: int = 0
    """seed of the data, the ASM and both policies"""
    preset: str = "cpu"
    """model sizes (cpu or paper)"""
    asm_max_epochs: int = 3
    """upper bound on ASM epochs (validation loss may stop it earlier)"""
    masking: str = "variable"
    """ASM masking: variable (ours; needed by spin-cached) or bert (the paper's 15%)"""
    methods: tuple[str, ...] = ("factored", "spin", "spin-cached")
    """actors trained with IQL; the first is the time-to-target reference"""
    doc: str | None = None
    """also write the markdown report to this path (e.g. docs/DEMO.md)"""
    threads: int | None = None
    """torch CPU threads"""
    progress: bool = True
    """progress bars on a terminal"""


NAMES = {"factored": "factored-IQL", "autoregressive": "AR-IQL", "saint": "SAINT-IQL", "spin": "SPIN-IQL",
         "spin-cached": "SPIN-cached-IQL"}


def _method_dirs(out: Path, methods) -> dict[str, Path]:
    return {NAMES[m]: out / f"{m.replace('-', '_')}_iql" for m in methods}


def _train(cfg: TrainConfig) -> None:
    if (Path(cfg.out) / "policy.pt").exists():
        return  # finished earlier: reuse
    cfg.resume = (Path(cfg.out) / "checkpoints" / "last.pt").exists()
    run(cfg)


def demo(cfg: DemoConfig) -> dict:
    """Run the demo end to end and return the results dict (also written to ``results.json``)."""
    t_start = time.time()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data_cfg = DataMakeConfig(env="maze", env_kwargs={"actuators": cfg.actuators}, level="medium-expert",
                              transitions=cfg.transitions, seed=cfg.seed)
    print(f"[1/4] dataset: maze actuators={cfg.actuators} medium-expert {cfg.transitions} transitions", flush=True)
    data_path = str(cached_dataset(data_cfg, progress=cfg.progress))
    print(f"      {data_path}", flush=True)

    asm_dir = out / "asm"
    print("[2/4] pretraining the Action Structure Model (stops when validation loss stops improving)", flush=True)
    if not (asm_dir / "asm.json").exists():
        pretrain(PretrainConfig(dataset=data_path, out=str(asm_dir), preset=cfg.preset, max_epochs=cfg.asm_max_epochs,
                                seed=cfg.seed, threads=cfg.threads, progress=cfg.progress, masking=cfg.masking,
                                resume=(asm_dir / "checkpoints" / "last.pt").exists()))
    asm_info = json.loads((asm_dir / "asm.json").read_text())
    print(f"      chosen epoch {asm_info['chosen_epoch']} of {asm_info['epochs_run']}, {asm_info['wall_seconds']:.1f}s", flush=True)

    for m in cfg.methods:
        if m not in NAMES:
            from spinrl.errors import ConfigError

            raise ConfigError(f"--methods {m!r} is unknown; choose from {', '.join(NAMES)}")
    dirs = _method_dirs(out, cfg.methods)
    common = dict(dataset=data_path, algo="iql", preset=cfg.preset, steps=cfg.steps, eval_every=cfg.eval_every,
                  eval_episodes=cfg.eval_episodes, seed=cfg.seed, threads=cfg.threads, progress=cfg.progress,
                  log_every=cfg.eval_every)
    print(f"[3/4] training {', '.join(dirs)} for {cfg.steps} gradient steps each (same data, seed, critics)", flush=True)
    for m, (name, d) in zip(cfg.methods, dirs.items()):
        _train(TrainConfig(out=str(d), actor=m, asm=str(asm_dir) if m.startswith("spin") else None, **common))

    print("[4/4] results", flush=True)
    reference = next(iter(dirs))
    results = summarize(dirs, reference_method=reference)
    results["config"] = to_jsonable(cfg)
    results["dataset"] = data_path
    results["asm"] = {"chosen_epoch": asm_info["chosen_epoch"], "epochs_run": asm_info["epochs_run"],
                      "wall_seconds": asm_info["wall_seconds"], "stop_reason": asm_info["stop_reason"]}
    results["demo_wall_seconds"] = round(time.time() - t_start, 1)
    results["stage_seconds"] = round(asm_info["wall_seconds"] + sum(m["train_wall_seconds"] for m in results["methods"].values()), 1)
    results["load_average"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    print(format_table(results))
    plot_curves(dirs, out / "learning_curves.png")
    write_text_atomic(out / "results.json", json.dumps(results, indent=2))
    if cfg.doc:
        write_report(results, out, Path(cfg.doc))
    print(f"wrote {out / 'results.json'} and {out / 'learning_curves.png'}")
    return results


def write_report(results: dict, out: Path, doc: Path) -> None:
    """A markdown report of this run (tables and the curve image), for docs/DEMO.md."""
    import shutil

    from spinrl.training.runinfo import environment_info

    doc.parent.mkdir(parents=True, exist_ok=True)
    img = doc.parent / "img" / "demo_learning_curves.png"
    img.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "learning_curves.png", img)
    c = results["config"]
    env = environment_info()
    lines = [
        "# The demo: SPIN vs factored IQL on Maze",
        "",
        f"Generated by `spinrl demo --doc {doc}` (spinrl {env['versions']['spinrl']}, torch {env['versions']['torch']}, "
        f"{env['device']['name'] or 'cpu'}, {env['device']['torch_threads']} torch threads, load average at the end "
        f"{results.get('load_average')}). ASM pretraining plus the trainings (with their evaluations) took "
        f"{results['stage_seconds']:.0f} s"
        + (f"; this invocation took {results['demo_wall_seconds']:.0f} s." if results["demo_wall_seconds"] > 0.5 * results["stage_seconds"]
           else " (this invocation only regenerated the report from the finished stages)."),
        "",
        f"Setting: maze with {c['actuators']} actuators, medium-expert data ({c['transitions']} transitions), "
        f"IQL, {c['steps']} gradient steps per method, evaluation every {c['eval_every']} steps on {c['eval_episodes']} "
        f"episodes (sampled actions), seed {c['seed']}, preset `{c['preset']}`. ASM: masking `{c['masking']}`, "
        f"chosen epoch {results['asm']['chosen_epoch']} of {results['asm']['epochs_run']} "
        f"({results['asm']['stop_reason']}), {results['asm']['wall_seconds']:.1f} s.",
        "",
        "```",
        format_table(results),
        "```",
        "",
        f"![learning curves](img/{img.name})",
        "",
        "## What the numbers say",
        "",
        "One seed and one evaluation of 20 episodes per point, so single points are noisy (a policy that reaches",
        "the goal in some episodes and not in others has a large std); docs/RESULTS.md repeats such comparisons",
        "over three seeds. Everything below is computed from the table.",
        "",
        *interpretation(results),
        "",
        "Steps/s is the median training throughput (gradient steps per second, evaluation excluded).",
        "Time to target counts wall-clock from the start of training, plus the ASM's pretraining for the SPIN",
        "variants (and the feature-cache build for SPIN-cached, which happens inside its training run).",
    ]
    doc.write_text("\n".join(lines) + "\n")


def summarize(dirs: dict[str, Path], reference_method: str) -> dict:
    """Per method: final and best normalized score, wall time, time to target (from run dirs only)."""
    from spinrl.evaluation.targets import pretrain_seconds, read_metrics

    methods = {}
    for name, d in dirs.items():
        rows = [r for r in read_metrics(d) if r.get("eval_return_mean") is not None]
        last = rows[-1]
        pre = pretrain_seconds(d)
        ttt = time_to_target(d, dirs[reference_method])
        first_step = rows[0]
        target = target_value(final_return(dirs[reference_method]))
        steps_to_target = next((r["step"] for r in rows if r["eval_return_mean"] >= target), None)
        methods[name] = {
            "final_return_mean": last["eval_return_mean"],
            "final_return_std": last["eval_return_std"],
            "final_normalized_mean": last.get("normalized_score"),
            "final_normalized_std": last.get("normalized_std"),
            "best_normalized": max((r.get("normalized_score") or float("-inf")) for r in rows),
            "first_eval": {"step": first_step["step"], "normalized": first_step.get("normalized_score")},
            "train_wall_seconds": last["wall_seconds"],
            "pretrain_wall_seconds": pre,
            "total_wall_seconds": last["wall_seconds"] + pre,
            "time_to_target_seconds": ttt,
            "steps_to_target": steps_to_target,
            "steps": last["step"],
            "grad_steps_per_s": _median([r["grad_steps_per_s"] for r in read_metrics(d) if r.get("grad_steps_per_s")]),
        }
    ref_final = methods[reference_method]["final_return_mean"]
    return {"methods": methods, "target": {"reference": reference_method, "fraction": 0.95, "reference_final_return": ref_final}}


def interpretation(results: dict) -> list[str]:
    """Plain sentences computed from the results (so the explanation cannot drift from the numbers)."""
    ms = results["methods"]
    ref_name = results["target"]["reference"]
    ref = ms[ref_name]
    out = []
    for name, m in ms.items():
        if name == ref_name:
            continue
        parts = [f"- **{name}**:"]
        if m.get("grad_steps_per_s") and ref.get("grad_steps_per_s"):
            parts.append(f"one gradient step costs {ref['grad_steps_per_s'] / m['grad_steps_per_s']:.1f}x a {ref_name} step;")
        if m.get("steps_to_target") is not None and ref.get("steps_to_target") is not None:
            parts.append(f"it needed {m['steps_to_target'] / ref['steps_to_target']:.2f}x the gradient steps of "
                         f"{ref_name} to reach the target ({int(m['steps_to_target'])} vs {int(ref['steps_to_target'])});")
        elif m.get("steps_to_target") is None:
            parts.append("it did not reach the target within the budget;")
        if m["pretrain_wall_seconds"]:
            parts.append(f"ASM pretraining was {100 * m['pretrain_wall_seconds'] / m['total_wall_seconds']:.0f}% of its wall time;")
        t, tr = m.get("time_to_target_seconds"), ref.get("time_to_target_seconds")
        if t is not None and tr is not None:
            verdict = "sooner" if t < tr else "later"
            parts.append(f"in wall-clock it reached the target {max(t, tr) / min(t, tr):.2f}x {verdict} than {ref_name} "
                         f"({t:.0f} s vs {tr:.0f} s, pretraining included).")
        out.append(" ".join(parts))
    out += [
        "",
        "Why: IQL learns its critic and value from the data alone, so every actor waits for the same critic and",
        "an actor can only turn the same advantages into a good policy in fewer steps. That is where the",
        "pretrained ASM helps. On CPU a transformer actor's step costs several factored steps (ratios above),",
        "which SPIN must win back in steps; SPIN-cached (ours) moves the frozen transformer out of the step",
        "(features computed once per dataset state), leaving only the heads' cost on top of the critics'.",
    ]
    return out


def _median(xs: list[float]) -> float | None:
    import statistics

    return statistics.median(xs) if xs else None


def format_table(results: dict) -> str:
    head = (f"{'method':<16} {'final normalized':>18} {'best':>7} {'wall (s)':>9} {'steps/s':>8} "
            f"{'steps to target':>16} {'time to target (s)':>19}")
    lines = [head, "-" * len(head)]
    for name, m in results["methods"].items():
        fin = "n/a" if m["final_normalized_mean"] is None else f"{m['final_normalized_mean']:.1f} +/- {m['final_normalized_std']:.1f}"
        ttt = "not reached" if m["time_to_target_seconds"] is None else f"{m['time_to_target_seconds']:.1f}"
        stt = "not reached" if m.get("steps_to_target") is None else f"{int(m['steps_to_target'])}"
        sps = "n/a" if m.get("grad_steps_per_s") is None else f"{m['grad_steps_per_s']:.0f}"
        wall = f"{m['total_wall_seconds']:.1f}"
        lines.append(f"{name:<16} {fin:>18} {m['best_normalized']:>7.1f} {wall:>9} {sps:>8} {stt:>16} {ttt:>19}")
    t = results["target"]
    lines.append(f"target: 95% of {t['reference']}'s final return ({t['reference_final_return']:.2f}); "
                 "SPIN's wall time and time to target include ASM pretraining")
    return "\n".join(lines)


def plot_curves(dirs: dict[str, Path], path: Path) -> None:
    """Learning curves against gradient steps and wall-clock (pretraining included): the report's plot."""
    from spinrl.experiments.report import find_runs, plot_learning_curves

    methods = {name: find_runs(d) for name, d in dirs.items()}
    plot_learning_curves(methods, path, "Maze medium-expert: " + " vs ".join(dirs))
