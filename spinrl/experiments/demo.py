"""The embedded-default main job (``make demo`` / ``spinrl demo``).

Maze with 12 actuators, medium-expert data (generated and cached on first use): pretrain the ASM until
its validation loss plateaus or its budget runs out (it says which), then train factored-IQL, SAINT-IQL
(the SPIN actor from scratch, so the ASM's own part is visible), SPIN-IQL and SPIN-cached-IQL with the
same data, critics, budget and seeds. The target is a stated reference that no method defines: a
normalized score, by default 50: halfway from uniform random to the data's expert. Every sentence
of the summary is computed from what was measured. Each stage resumes or is reused when rerun.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from spinrl.errors import ConfigError
from spinrl.evaluation.targets import pretrain_seconds, read_metrics
from spinrl.experiments.datasets import DataMakeConfig, cached_dataset
from spinrl.training.config import PretrainConfig, TrainConfig
from spinrl.utils.checkpoint import write_text_atomic
from spinrl.utils.jsonable import to_jsonable


@dataclass
class DemoConfig:
    """Factored, SAINT, SPIN and SPIN-cached IQL on Maze (12 actuators, medium-expert): table, curves, results.json."""

    out: str = "demo_out"
    """output directory (dataset cache is $SPINRL_DATA)"""
    actuators: int = 12
    """maze actuators (2^actuators joint actions)"""
    transitions: int = 50_000
    """dataset size (medium-expert: half medium, half expert)"""
    steps: int = 3000
    """gradient steps per method and seed"""
    eval_every: int = 250
    """gradient steps between evaluations"""
    eval_episodes: int = 20
    """episodes per evaluation"""
    seeds: tuple[int, ...] = (0,)
    """policy seeds (the data and the ASM use the first); one seed is labelled as such, use 3 for intervals"""
    preset: str = "cpu"
    """model sizes (cpu or paper)"""
    asm_max_minutes: float = 1.5
    """ASM budget in minutes (it stops earlier on a validation plateau; the screen says which)"""
    asm_max_steps: int = 3000
    """ASM budget in gradient steps"""
    masking: str = "variable"
    """ASM masking: variable (ours; needed by spin-cached, used by spin too here) or bert (the paper's 15%)"""
    methods: tuple[str, ...] = ("factored", "saint", "spin", "spin-cached")
    """actors trained with IQL"""
    target_normalized: float | None = 50.0
    """target normalized score (100 = the data's expert behaviour policy, 0 = uniform random): by default halfway;
    none = the data's own mean (the behaviour's level; 95 on this Maze data, out of reach in the demo's budget)"""
    doc: str | None = None
    """also write the markdown report to this path (e.g. docs/DEMO.md)"""
    note: str = ""
    """a sentence for the page's provenance, e.g. what else ran on the machine (timings depend on it)"""
    threads: int | None = None
    """torch CPU threads"""
    progress: bool = True
    """progress bars on a terminal"""


NAMES = {
    "factored": "factored-IQL",
    "autoregressive": "AR-IQL",
    "saint": "SAINT-IQL",
    "spin": "SPIN-IQL",
    "spin-cached": "SPIN-cached-IQL",
}


def _method_dirs(out: Path, methods, seed: int) -> dict[str, Path]:
    return {NAMES[m]: out / f"seed{seed}" / f"{m.replace('-', '_')}_iql" for m in methods}


def _train(cfg: TrainConfig) -> None:
    if (Path(cfg.out) / "policy.pt").exists():
        return  # finished earlier: reuse
    cfg.resume = (Path(cfg.out) / "checkpoints" / "last.pt").exists()
    from spinrl.training.trainer import run  # torch loads here, not when the CLI reads DemoConfig

    run(cfg)


def demo(cfg: DemoConfig) -> dict:
    """Run the demo end to end and return the results dict (also written to ``results.json``)."""
    for m in cfg.methods:
        if m not in NAMES:
            raise ConfigError(f"--methods {m!r} is unknown; choose from {', '.join(NAMES)}")
    if not cfg.seeds:
        raise ConfigError("--seeds needs at least one seed, e.g. --seeds 0 1 2")
    from spinrl.training.pretrain import pretrain, stop_summary  # torch loads here, not when the CLI reads DemoConfig

    t_start = time.time()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seed0 = cfg.seeds[0]
    data_cfg = DataMakeConfig(
        env="maze",
        env_kwargs={"actuators": cfg.actuators},
        level="medium-expert",
        transitions=cfg.transitions,
        seed=seed0,
    )
    print(f"[1/4] dataset: maze actuators={cfg.actuators} medium-expert {cfg.transitions} transitions", flush=True)
    data_path = str(cached_dataset(data_cfg, progress=cfg.progress))
    print(f"      {data_path}", flush=True)

    asm_dir = out / "asm"
    print(
        "[2/4] pretraining the Action Structure Model (until a "
        f"validation plateau, at most {cfg.asm_max_steps} steps "
        f"or {cfg.asm_max_minutes} min)",
        flush=True,
    )
    if not (asm_dir / "asm.json").exists():
        import warnings

        with warnings.catch_warnings():  # the still-falling warning is part of the summary printed below
            warnings.filterwarnings("ignore", message="ASM stopped")
            # preset and masking are checked by PretrainConfig.validate (DemoConfig's flags are plain strings)
            preset = cast(Literal["cpu", "paper"], cfg.preset)
            pretrain(
                PretrainConfig(
                    dataset=data_path,
                    out=str(asm_dir),
                    preset=preset,
                    max_epochs=10_000,
                    max_steps=cfg.asm_max_steps,
                    max_minutes=cfg.asm_max_minutes,
                    steps_per_epoch=250,
                    seed=seed0,
                    threads=cfg.threads,
                    progress=cfg.progress,
                    masking=cast(Literal["bert", "variable"], cfg.masking),
                    resume=(asm_dir / "checkpoints" / "last.pt").exists(),
                )
            )
    asm_info = json.loads((asm_dir / "asm.json").read_text())
    print("      " + stop_summary(asm_info), flush=True)
    from spinrl.evaluation.structure import describe

    print("      " + describe(asm_info["structure"]), flush=True)

    common: dict[str, Any] = dict(
        dataset=data_path,
        algo="iql",
        preset=cfg.preset,
        steps=cfg.steps,
        eval_every=cfg.eval_every,
        eval_episodes=cfg.eval_episodes,
        threads=cfg.threads,
        progress=cfg.progress,
        log_every=cfg.eval_every,
    )
    names = [NAMES[m] for m in cfg.methods]
    label = "one seed: single runs, no intervals" if len(cfg.seeds) == 1 else f"{len(cfg.seeds)} seeds"
    print(
        f"[3/4] training {', '.join(names)} for {cfg.steps} gradient steps each (same data and critics; {label})",
        flush=True,
    )
    dirs_by_seed = {}
    for s in cfg.seeds:
        dirs = _method_dirs(out, cfg.methods, s)
        for m, d in zip(cfg.methods, dirs.values()):
            actor = cast(Literal["factored", "autoregressive", "saint", "spin", "spin-cached"], m)  # checked above
            _train(
                TrainConfig(
                    out=str(d), actor=actor, seed=s, asm=str(asm_dir) if m.startswith("spin") else None, **common
                )
            )
        dirs_by_seed[s] = dirs

    print("[4/4] results", flush=True)
    target, source = cfg.target_normalized, "halfway from uniform random to the data's expert"
    if target is None:
        from spinrl.data import load

        target = load(data_path).summary().normalized_score
        source = "the dataset's own mean return: the level of the behaviour that made it"
    assert target is not None  # maze datasets carry reference scores
    results = summarize(dirs_by_seed, target)
    results["target"]["source"] = source
    results["config"] = to_jsonable(cfg)
    results["dataset"] = data_path
    results["asm"] = {
        k: asm_info.get(k)
        for k in (
            "steps_run",
            "chosen_step",
            "stop_reason",
            "still_falling",
            "best_val_loss",
            "wall_seconds",
            "masking",
        )
    }
    results["asm"]["summary"] = stop_summary(asm_info)
    results["asm"]["structure"] = describe(asm_info["structure"])
    results["demo_wall_seconds"] = round(time.time() - t_start, 1)
    results["stage_seconds"] = round(
        float(asm_info["wall_seconds"]) + sum(sum(m["train_wall"]) for m in results["methods"].values()), 1
    )
    results["load_average"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    print(format_table(results))
    print("\n".join(interpretation(results)))
    plot_curves(dirs_by_seed, out / "learning_curves.png", cfg.target_normalized)
    write_text_atomic(out / "results.json", json.dumps(results, indent=2))
    if cfg.doc:
        write_report(results, out, Path(cfg.doc))
    print(f"wrote {out / 'results.json'} and {out / 'learning_curves.png'}")
    return results


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(dirs_by_seed: dict[int, dict[str, Path]], target: float) -> dict:
    """Per method, over seeds: final and best normalized score, steps/s, steps and seconds to the target."""
    methods: dict[str, dict] = {}
    for seed, dirs in dirs_by_seed.items():
        for name, d in dirs.items():
            rows = read_metrics(d)
            evals = [r for r in rows if r.get("eval_return_mean") is not None]
            pre = pretrain_seconds(d)
            hit = next((r for r in evals if (r.get("normalized_score") or float("-inf")) >= target), None)
            m = methods.setdefault(
                name,
                {
                    "seeds": [],
                    "final": [],
                    "best": [],
                    "steps_to_target": [],
                    "time_to_target": [],
                    "steps_per_s": [],
                    "train_wall": [],
                    "pretrain_wall": pre,
                },
            )
            m["seeds"].append(seed)
            m["final"].append(evals[-1].get("normalized_score"))
            m["best"].append(max((r.get("normalized_score") or float("-inf")) for r in evals))
            m["steps_to_target"].append(int(hit["step"]) if hit else None)
            m["time_to_target"].append(float(hit["wall_seconds"]) + pre if hit else None)
            m["steps_per_s"].append(_median([r["grad_steps_per_s"] for r in rows if r.get("grad_steps_per_s")]))
            m["train_wall"].append(float(evals[-1]["wall_seconds"]))
            m["curve"] = m.get("curve", {})
            for r in evals:
                m["curve"].setdefault(int(r["step"]), []).append(r.get("normalized_score"))
    for m in methods.values():
        m["final_mean"] = statistics.fmean(m["final"])
        m["final_min"], m["final_max"] = min(m["final"]), max(m["final"])
        m["reached"] = sum(x is not None for x in m["time_to_target"])
        m["median_steps_to_target"] = _median(m["steps_to_target"]) if m["reached"] == len(m["seeds"]) else None
        m["median_time_to_target"] = _median(m["time_to_target"]) if m["reached"] == len(m["seeds"]) else None
        m["median_steps_per_s"] = _median(m["steps_per_s"])
        m["curve"] = {s: statistics.fmean(v) for s, v in sorted(m["curve"].items())}
    return {
        "methods": methods,
        "target": {"normalized": target, "reference": "the dataset's expert behaviour policy = 100"},
    }


def format_table(results: dict) -> str:
    n = len(next(iter(results["methods"].values()))["seeds"])
    head = (
        f"{'method':<16} {'final normalized':>22} {'best':>6} {'steps/s':>8} {'steps to target':>16} "
        f"{'time to target (s)':>19}"
    )
    lines = [head, "-" * len(head)]
    for name, m in results["methods"].items():
        fin = f"{m['final_mean']:.1f}" + (f" [{m['final_min']:.0f}, {m['final_max']:.0f}]" if n > 1 else "")
        reached = f"{m['reached']}/{n} reached"
        stt = f"{m['median_steps_to_target']:.0f}" if m["median_steps_to_target"] is not None else reached
        ttt = f"{m['median_time_to_target']:.1f}" if m["median_time_to_target"] is not None else reached
        sps = "n/a" if m["median_steps_per_s"] is None else f"{m['median_steps_per_s']:.0f}"
        lines.append(f"{name:<16} {fin:>22} {statistics.fmean(m['best']):>6.1f} {sps:>8} {stt:>16} {ttt:>19}")
    t = results["target"]
    lines.append(
        f"target: normalized score {t['normalized']:.1f} ({t.get('source', 'given')}; {t['reference']}); "
        + (
            "ONE SEED: single runs, differences of a few points are noise; "
            if n == 1
            else f"{n} seeds: mean [min, max] and medians over seeds; "
        )
        + "SPIN's time to target includes ASM pretraining"
    )
    return "\n".join(lines)


def interpretation(results: dict) -> list[str]:
    """Plain sentences computed from the results (so the explanation cannot drift from the numbers)."""
    ms = results["methods"]
    out = []
    f, saint, spin = ms.get("factored-IQL"), ms.get("SAINT-IQL"), ms.get("SPIN-IQL")

    def cmp(a: dict, b: dict, an: str, bn: str) -> str:
        d = a["final_mean"] - b["final_mean"]
        s = f"{an} ends {abs(d):.1f} normalized points {'above' if d >= 0 else 'below'} {bn}"
        ta, tb = a["median_time_to_target"], b["median_time_to_target"]
        if ta is not None and tb is not None:
            s += f"; it reaches the target {'sooner' if ta < tb else 'later'} in wall-clock ({ta:.0f} s vs {tb:.0f} s)"
        elif ta is not None:
            s += f"; it reached the target on every seed, {bn} did not"
        elif tb is not None:
            s += f"; {bn} reached the target on every seed, {an} did not"
        sa, sb = a["median_steps_to_target"], b["median_steps_to_target"]
        if sa is not None and sb is not None:
            s += f", after {sa:.0f} vs {sb:.0f} gradient steps"
        return s + "."

    if spin and saint:
        out.append(
            "- The ASM's part (SPIN vs SAINT, the same actor from scratch): "
            + cmp(spin, saint, "SPIN-IQL", "SAINT-IQL")
        )
    if spin and f:
        out.append("- SPIN vs factored: " + cmp(spin, f, "SPIN-IQL", "factored-IQL"))
        if f["median_steps_per_s"] and spin["median_steps_per_s"]:
            ratio = f["median_steps_per_s"] / spin["median_steps_per_s"]
            pre = spin["pretrain_wall"]
            out.append(
                "- Cost on this CPU: a SPIN-IQL step takes "
                f"{ratio:.1f}x a factored-IQL step (a transformer over "
                f"the state and sub-action tokens against MLP heads), and its ASM pretraining "
                f"took {pre:.0f} s before the first step. "
                + _wall_verdict(spin["median_time_to_target"], f["median_time_to_target"], ratio)
            )
    if ms.get("SPIN-cached-IQL") and f:
        out.append("- SPIN-cached vs factored: " + cmp(ms["SPIN-cached-IQL"], f, "SPIN-cached-IQL", "factored-IQL"))
    n = len(next(iter(ms.values()))["seeds"])
    if n == 1:
        out.append(
            "- One seed: these are single runs; run `spinrl demo "
            "--seeds 0 1 2` (about 3x as long) before reading "
            "a difference of a few points as real."
        )
    return out


def _wall_verdict(t_spin: float | None, t_f: float | None, ratio: float) -> str:
    if t_f is not None and (t_spin is None or t_spin > t_f):
        return (
            "So in wall-clock SPIN is slower here: to break even "
            f"it must reach the target in {ratio:.1f}x fewer steps "
            "than factored, pretraining aside."
        )
    if t_spin is not None and t_f is not None:
        return "Even so it reached the target sooner in wall-clock."
    if t_spin is not None:
        return "It reached the target and factored did not."
    return "Neither reached the target within the budget."


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
        "# The demo: factored, SAINT, SPIN and SPIN-cached IQL on Maze",
        "",
        "```",
        format_table(results),
        "```",
        "",
        *interpretation(results),
        "",
        f"![learning curves](img/{img.name})",
        "",
        "## Setting and provenance",
        "",
        f"Maze with {c['actuators']} actuators, medium-expert data ({c['transitions']} transitions), IQL, {c['steps']} "
        f"gradient steps per method, evaluation every {c['eval_every']} "
        f"steps on {c['eval_episodes']} sampled episodes, "
        f"seeds {list(c['seeds'])}, preset `{c['preset']}`. ASM "
        f"(masking `{c['masking']}`, shared by SPIN and SPIN-cached): "
        f"{results['asm']['summary']}, {results['asm']['wall_seconds']:.1f} s. {results['asm']['structure']}.",
        "",
        f"Generated by `spinrl demo --doc {doc}"
        + (f" --threads {c['threads']}" if c.get("threads") else "")
        + (f" --seeds {' '.join(map(str, c['seeds']))}" if list(c["seeds"]) != [0] else "")
        + f"` (spinrl {env['versions']['spinrl']} at commit {env.get('commit')}, torch "
        f"{env['versions']['torch']}, {env['device']['name'] or 'cpu'}, "
        f"{env['device']['torch_threads']} torch threads); "
        f"ASM pretraining and the trainings (evaluations included) took {results['stage_seconds']:.0f} s"
        + (
            f", this invocation {results['demo_wall_seconds']:.0f} s"
            if results["demo_wall_seconds"] > 0.5 * results["stage_seconds"]
            else " (this invocation reused those finished stages and only rebuilt the report)"
        )
        + f"; load average at the end {results.get('load_average')}. "
        + (c.get("note") or "").rstrip(". ")
        + (". " if c.get("note") else "")
        + "Steps/s is the median training throughput (evaluation "
        "excluded); time to target counts wall-clock from the start "
        "of training to the first evaluation at or above the target, "
        "plus the ASM's pretraining for the SPIN variants (and "
        "the feature-cache build for SPIN-cached, inside its training run).",
    ]
    write_text_atomic(doc, "\n".join(lines) + "\n")


def plot_curves(dirs_by_seed: dict[int, dict[str, Path]], path: Path, target: float | None) -> None:
    """Learning curves against gradient steps and wall-clock (pretraining included), with the target line."""
    from spinrl.experiments.report import find_runs, plot_learning_curves

    methods: dict[str, list] = {}
    for dirs in dirs_by_seed.values():
        for name, d in dirs.items():
            methods.setdefault(name, []).extend(find_runs(d))
    plot_learning_curves(methods, path, "Maze medium-expert: " + " vs ".join(methods), None)
