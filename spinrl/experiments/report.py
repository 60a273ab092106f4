"""``spinrl report DIR``: tables and learning curves from run directories only (never live objects, so any
finished or copied run can be reported again).

Runs are found by their ``config.json`` + ``metrics.csv`` and grouped by task (env id, env kwargs,
dataset level) and method (algorithm x actor, preset when a task mixes presets); the seeds of a group
give mean +/- std (numpy's population std, ddof 0). Time to target follows docs/method.md (section
"Evaluation and time to target"): the first wall time at which the seed-mean evaluation return reaches
95% of factored-IQL's final return on the same task, with the ASM's pretraining time added for SPIN. ASM
directories (``asm.json``) give the pretraining curves. Nothing is read from live objects, so a report can
be rebuilt at any time.

Run directories hold checkpoints (MB each) and live outside git, on one machine. ``--records DIR``
first copies what a report reads of every finished run and ASM (config.json, metrics.csv,
offline_eval.json, asm.json: a few KB each) into DIR under the same relative paths, with
``record.json`` (policy digest, dataset size) standing in for ``policy.pt``, then reports from DIR. DIR
can be committed: runs made in later sessions or on other machines join the same tables.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from spinrl.errors import ConfigError
from spinrl.evaluation.targets import pretrain_seconds, read_metrics, target_value, time_to_target
from spinrl.utils.checkpoint import write_text_atomic

ACTOR_NAMES = {"factored": "F", "autoregressive": "AR", "saint": "SAINT", "spin": "SPIN", "spin-cached": "SPIN-cached"}
ACTOR_ORDER = list(ACTOR_NAMES)
REFERENCE_METHOD = "F-IQL"

# docs/benchmarks.md s.5: what the paper reported (IQL, 1M steps, A40, 5 seeds), final raw return
# F-IQL / AR-IQL / SAINT-IQL / SPIN-IQL. Shown only beside a task that matches (env, kwargs, level).
PAPER_DMC = {
    "medium": {
        "cheetah-run": (293.0, 284.7, 293.5, 293.6),
        "finger-spin": (385.4, 383.5, 391.5, 392.7),
        "humanoid-stand": (335.4, 327.3, 332.3, 334.8),
        "quadruped-walk": (353.4, 343.4, 354.7, 359.7),
    },
    "medium-expert": {
        "cheetah-run": (612.9, 609.9, 627.4, 651.1),
        "finger-spin": (844.5, 857.8, 847.6, 855.2),
        "humanoid-stand": (603.0, 567.6, 621.5, 652.5),
        "quadruped-walk": (838.2, 833.4, 836.5, 854.1),
    },
    "random-medium-expert": {
        "cheetah-run": (289.6, 276.5, 302.4, 332.4),
        "finger-spin": (693.4, 762.7, 747.2, 773.2),
        "humanoid-stand": (230.1, 192.8, 237.3, 330.2),
        "quadruped-walk": (340.0, 350.2, 468.8, 561.0),
    },
    "expert": {
        "cheetah-run": (665.9, 665.7, 664.5, 672.7),
        "finger-spin": (874.0, 873.3, 870.2, 868.5),
        "humanoid-stand": (729.0, 717.2, 726.1, 734.7),
        "quadruped-walk": (843.5, 824.9, 831.6, 839.0),
    },
}

# The paper's Table 4 (docs/benchmarks.md): % of converged F-IQL's final return after 10,000 gradient steps,
# DM Control with 3 bins; (F-IQL, AR-IQL, SAINT-IQL, SPIN-IQL) per level and task.
PAPER_TABLE4_STEP = 10_000
PAPER_TABLE4 = {
    "medium": {
        "cheetah-run": (94.0, 91.0, 94.6, 94.5),
        "finger-spin": (90.2, 89.0, 89.8, 91.2),
        "humanoid-stand": (50.9, 67.3, 84.9, 94.2),
        "quadruped-walk": (90.3, 82.7, 92.7, 94.0),
    },
    "medium-expert": {
        "cheetah-run": (30.3, 40.9, 46.1, 90.6),
        "finger-spin": (0.37, 0.70, 0.39, 68.5),
        "humanoid-stand": (2.2, 3.1, 9.3, 93.4),
        "quadruped-walk": (34.1, 38.1, 39.0, 78.6),
    },
    "random-medium-expert": {
        "cheetah-run": (87.7, 93.3, 94.0, 103.6),
        "finger-spin": (31.1, 34.6, 33.6, 49.0),
        "humanoid-stand": (23.3, 30.4, 50.5, 110.7),
        "quadruped-walk": (43.3, 48.2, 45.0, 80.7),
    },
    "expert": {
        "cheetah-run": (26.5, 35.8, 49.1, 94.3),
        "finger-spin": (31.6, 33.1, 8.4, 94.9),
        "humanoid-stand": (2.8, 2.3, 14.0, 95.1),
        "quadruped-walk": (44.6, 45.7, 53.0, 79.2),
    },
}
PAPER_METHODS = ("F-IQL", "AR-IQL", "SAINT-IQL", "SPIN-IQL")


def paper_numbers(env_id: str, env_kwargs: dict, level: str) -> dict | None:
    """The paper's numbers for this task, or None when the paper has no matching task."""
    if env_id.startswith("dmc:") and int((env_kwargs or {}).get("bins", 3)) == 3:
        vals = PAPER_DMC.get(level, {}).get(env_id[4:])
        if vals:
            return {
                "final_return": dict(zip(PAPER_METHODS, vals)),
                "note": "paper: final raw return after 1M steps, 5 seeds, their datasets (docs/benchmarks.md s.5)",
            }
    if env_id == "maze" and int((env_kwargs or {}).get("actuators", 0)) in (5, 10, 15):
        return {
            "final_return": None,
            "note": "paper: Maze 5/10/15 actuators saturated at ~99.4 return for every method (1M steps); "
            "SPIN's gain there is speed only",
        }
    return None


def reference_for(method: str) -> str:
    """The factored method with the same algorithm: the time-to-target reference of ``method``."""
    return f"F-{method.split(' ')[0].split('-')[-1]}"


def method_name(algo: str, actor: str) -> str:
    return f"{ACTOR_NAMES.get(actor, actor)}-{algo.upper()}"


def task_name(env_id: str, env_kwargs: dict, level: str | None) -> str:
    kw = ",".join(f"{k}={v}" for k, v in sorted((env_kwargs or {}).items()))
    return f"{env_id}" + (f"[{kw}]" if kw else "") + (f" {level}" if level else "")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_")


# ---------------------------------------------------------------------- discovery
RECORD = "record.json"
# best.json: the step and scores of the best evaluation (policy_best.pt is its policy; only its record is kept)
RECORD_FILES = ("config.json", "metrics.csv", "offline_eval.json", "asm.json", "final_eval.json", "best.json")


def save_records(root: str | Path, records: str | Path) -> int:
    """Copy the report's inputs of every finished run and every ASM under ``root`` into ``records``.

    Returns the number of directories recorded. Existing records of other runs are kept; a run recorded
    again is overwritten (the live directory is the newer truth).
    """
    from spinrl.utils.rundir import sha256_file

    root, records = Path(root), Path(records)
    if records.exists() and not records.is_dir():
        raise ConfigError(f"--records {records} is a file; pass a directory (created if missing)")
    dirs = [r["dir"] for r in find_runs(root)] + [a["dir"] for a in find_asms(root)]
    for d in dirs:
        dst = records / d.relative_to(root)
        dst.mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:
            if (d / name).exists():
                write_text_atomic(dst / name, (d / name).read_text())
        if (d / "policy.pt").exists():
            cfg = json.loads((d / "config.json").read_text()).get("config", {})
            rec = {
                "policy_sha256": sha256_file(d / "policy.pt"),
                "num_transitions": _dataset_size({"config": cfg}),
                "source": str(d),
            }
            write_text_atomic(dst / RECORD, json.dumps(rec, indent=1) + "\n")
    return len(dirs)


def find_runs(root: str | Path, include_unfinished: bool = False) -> list[dict]:
    """Every finished training run under ``root`` (with ``include_unfinished``, interrupted ones too)."""
    runs = []
    for cfg_path in sorted(Path(root).rglob("config.json")):
        d = cfg_path.parent
        if not (d / "metrics.csv").exists():
            continue
        try:
            cj = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        c = cj.get("config", {})
        if "algo" not in c or "actor" not in c:
            continue
        rows = read_metrics(d)
        evals = [r for r in rows if r.get("eval_return_mean") is not None]
        finished = (d / "policy.pt").exists() or (d / RECORD).exists()
        if not evals or (not include_unfinished and not finished):
            continue  # an interrupted run's last evaluation is not a final score
        ds = cj.get("dataset", {})
        offline = None
        if (d / "offline_eval.json").exists():
            offline = json.loads((d / "offline_eval.json").read_text())
        final_eval = json.loads((d / "final_eval.json").read_text()) if (d / "final_eval.json").exists() else None
        runs.append(
            {
                "dir": d,
                "config": c,
                "cj": cj,
                "rows": rows,
                "evals": evals,
                "env_id": ds.get("env_id"),
                "env_kwargs": ds.get("env_kwargs") or {},
                "level": ds.get("level"),
                "finished": finished,
                "offline": offline,
                "final_eval": final_eval,
            }
        )
    return runs


def find_asms(root: str | Path) -> list[dict]:
    out = []
    for p in sorted(Path(root).rglob("asm.json")):
        try:
            info = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        sig = info.get("signature", {})
        cj = p.parent / "config.json"
        seed = json.loads(cj.read_text()).get("config", {}).get("seed") if cj.exists() else None
        out.append(
            {
                "dir": p.parent,
                "info": info,
                "env_id": sig.get("env_id"),
                "env_kwargs": sig.get("env_kwargs") or {},
                "level": (info.get("dataset") or {}).get("level"),
                "seed": seed,
            }
        )
    return out


# ---------------------------------------------------------------------- statistics
def _ms(values: Sequence[float | None]) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}


def _score(r: dict) -> str:
    return "normalized_score" if r["evals"][0].get("normalized_score") is not None else "eval_return_mean"


def group_runs(runs: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """task -> method -> runs (seeds); the preset joins the method name when a task mixes presets."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        by_task[task_name(r["env_id"], r["env_kwargs"], r["level"])].append(r)
    out: dict[str, dict[str, list[dict]]] = {}
    for task, rs in sorted(by_task.items()):
        presets = {r["config"].get("preset") for r in rs}
        steps = {r["config"].get("steps") for r in rs}
        g: dict[str, list[dict]] = defaultdict(list)
        for r in rs:
            name = method_name(r["config"]["algo"], r["config"]["actor"])
            if len(presets) > 1:
                name += f" ({r['config'].get('preset')})"
            if len(steps) > 1:
                name += f" [{r['config'].get('steps')} steps]"
            if r["config"].get("precision", "fp32") != "fp32":
                name += f" {r['config']['precision']}"
            g[name].append(r)
        order = sorted(
            g,
            key=lambda n: (
                n.split("-")[-1].split(" ")[0],
                ACTOR_ORDER.index(_actor(g[n][0])) if _actor(g[n][0]) in ACTOR_ORDER else 99,
                n,
            ),
        )
        out[task] = {n: sorted(g[n], key=lambda r: r["config"].get("seed", 0)) for n in order}
    return out


def _actor(r: dict) -> str:
    return r["config"]["actor"]


def summarize_method(runs: list[dict], reference: list[dict] | None) -> dict:
    """Mean +/- std over seeds of one method on one task (from run directories)."""
    key = _score(runs[0])
    finals = [r["evals"][-1] for r in runs]
    best = [max(e[key] for e in r["evals"]) for r in runs]
    sps = [float(np.mean([x["grad_steps_per_s"] for x in r["rows"] if x.get("grad_steps_per_s")])) for r in runs]
    train_wall = [r["rows"][-1]["wall_seconds"] for r in runs]
    pre = [pretrain_seconds(r["dir"]) for r in runs]
    res = {
        "seeds": [r["config"].get("seed") for r in runs],
        "finished": sum(r["finished"] for r in runs),
        "steps": _ms([r["rows"][-1]["step"] for r in runs]),
        "score_key": key,
        "final_normalized": _ms([f.get("normalized_score") for f in finals]),
        "final_per_seed": {str(r["config"].get("seed")): f.get(key) for r, f in zip(runs, finals)},
        "best_normalized": _ms(best if key == "normalized_score" else [None]),
        "final_return": _ms([f["eval_return_mean"] for f in finals]),
        "best_return": _ms([max(e["eval_return_mean"] for e in r["evals"]) for r in runs]),
        "train_wall_seconds": _ms(train_wall),
        "pretrain_wall_seconds": _ms(pre),
        "total_wall_seconds": _ms([a + b for a, b in zip(train_wall, pre)]),
        "grad_steps_per_s": _ms(sps),
        "time_to_target_seconds": None,
        "steps_to_target": None,
        "time_to_target_per_seed": None,
    }
    if reference:
        ref_final = float(np.mean([r["evals"][-1]["eval_return_mean"] for r in reference]))
        target = target_value(ref_final)
        res["target_return"] = target
        dirs = [r["dir"] for r in runs]
        res["time_to_target_seconds"] = time_to_target(dirs, ref_final)
        n = min(len(r["evals"]) for r in runs)
        for i in range(n):
            if np.mean([r["evals"][i]["eval_return_mean"] for r in runs]) >= target:
                res["steps_to_target"] = runs[0]["evals"][i]["step"]
                break
        res["time_to_target_per_seed"] = [time_to_target(d, ref_final) for d in dirs]
    offs = [r["offline"] for r in runs if r.get("offline")]
    if offs:
        res["offline"] = {
            k: _ms([o.get(k) for o in offs])
            for k in ("fqe_value", "behaviour_value", "exact_match", "sub_action_agreement")
        }
        res["offline"]["gamma"] = offs[0].get("gamma")
        res["offline"]["discounted_return"] = _ms([o.get("simulator_discounted_return") for o in offs])
    return res


def build_report(root: str | Path) -> dict:
    """The report's data (also written as report.json)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"report DIR {root} is not a directory")
    runs = find_runs(root)
    if not runs:
        raise ConfigError(f"report DIR {root} holds no run directory with evaluation rows (config.json + metrics.csv)")
    groups = group_runs(runs)
    asms = find_asms(root)
    tasks = {}
    for task, methods in groups.items():
        ref = methods.get(REFERENCE_METHOD)
        r0 = next(iter(methods.values()))[0]
        t_asms = [a for a in asms if task_name(a["env_id"], a["env_kwargs"], a["level"]) == task]
        tasks[task] = {
            "env_id": r0["env_id"],
            "env_kwargs": r0["env_kwargs"],
            "level": r0["level"],
            "reference_method": REFERENCE_METHOD if ref else None,
            # each algorithm's target comes from the factored actor trained with it (F-AWAC for AWAC...), as the paper
            # does
            "methods": {
                m: {
                    **summarize_method(rs, methods.get(reference_for(m))),
                    "reference": reference_for(m) if methods.get(reference_for(m)) else None,
                }
                for m, rs in methods.items()
            },
            "asms": [
                {
                    "dir": str(a["dir"]),
                    "seed": a["seed"],
                    "chosen_epoch": a["info"].get("chosen_epoch"),
                    "epochs_run": a["info"].get("epochs_run"),
                    "stop_reason": a["info"].get("stop_reason"),
                    "masking": a["info"].get("masking"),
                    "wall_seconds": a["info"].get("wall_seconds"),
                    "best_val_loss": a["info"].get("best_val_loss"),
                }
                for a in t_asms
            ],
            "paper": paper_numbers(r0["env_id"], r0["env_kwargs"], r0["level"] or ""),
        }
    cfgs = [r["cj"] for r in runs]
    setting = {
        "runs": len(runs),
        "finished_runs": sum(r["finished"] for r in runs),
        "seeds": sorted({r["config"].get("seed") for r in runs}),
        "steps": sorted({r["config"].get("steps") for r in runs}),
        "eval_every": sorted({r["config"].get("eval_every") for r in runs}),
        "eval_episodes": sorted({r["config"].get("eval_episodes") for r in runs}),
        "greedy": sorted({r["config"].get("greedy") for r in runs}),
        "presets": sorted({r["config"].get("preset") for r in runs}),
        "batch_size": sorted({c.get("resolved", {}).get("batch_size") for c in cfgs}),
        "d_model": sorted({c.get("resolved", {}).get("model", {}).get("d_model") for c in cfgs}),
        "n_blocks": sorted({c.get("resolved", {}).get("model", {}).get("n_blocks") for c in cfgs}),
        "threads": sorted({c.get("device", {}).get("torch_threads") for c in cfgs}),
        "devices": sorted({f"{c.get('device', {}).get('type')} ({c.get('device', {}).get('name')})" for c in cfgs}),
        "platform": sorted({c.get("device", {}).get("platform") for c in cfgs}),
        "versions": cfgs[0].get("versions", {}),
        "dataset_sizes": sorted({n for r in runs if (n := _dataset_size(r)) is not None}),
        "cpu_count": os.cpu_count(),
    }
    rep: dict[str, Any] = {"root": str(root), "setting": setting, "tasks": tasks}
    rep["comparisons"] = comparisons(rep)
    return rep


def _dataset_size(r: dict) -> int | None:
    """Transitions of the run's dataset: from its meta.json, else from the run's record."""
    for path, key in (
        (Path(r["config"].get("dataset") or "") / "meta.json", "num_transitions"),
        (Path(r.get("dir") or "") / RECORD, "num_transitions"),
    ):
        try:
            return int(json.loads(path.read_text()).get(key))
        except (OSError, ValueError, TypeError, json.JSONDecodeError):
            continue
    return None


# ---------------------------------------------------------------------- plots
def _mean_curve(runs: list[dict], key: str, pre: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, wall seconds, mean, std) over seeds, rows aligned by evaluation index."""
    n = min(len(r["evals"]) for r in runs)
    steps = np.array([runs[0]["evals"][i]["step"] for i in range(n)])
    y = np.array([[r["evals"][i][key] for i in range(n)] for r in runs], dtype=float)
    off = np.array([pretrain_seconds(r["dir"]) if pre else 0.0 for r in runs])
    wall = np.array([[r["evals"][i]["wall_seconds"] for i in range(n)] for r in runs], dtype=float) + off[:, None]
    return steps, wall.mean(0), y.mean(0), y.std(0)


def plot_learning_curves(methods: dict[str, list[dict]], path: Path, title: str, target: float | None = None) -> None:
    """Mean with a +/- std band over seeds, against gradient steps and against wall-clock (pretraining included)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10.5, 3.9))
    key = _score(next(iter(methods.values()))[0])
    for name, runs in methods.items():
        steps, wall, m, s = _mean_curve(runs, key, pre=True)
        (line,) = ax[0].plot(steps, m, marker=".", label=f"{name} (n={len(runs)})")
        ax[0].fill_between(steps, m - s, m + s, color=line.get_color(), alpha=0.18)
        ax[1].plot(wall, m, marker=".", color=line.get_color(), label=name)
        ax[1].fill_between(wall, m - s, m + s, color=line.get_color(), alpha=0.18)
    if target is not None and key == "eval_return_mean":
        for a in ax:
            a.axhline(target, color="k", ls=":", lw=1, label="target (95% of F-IQL final)")
    ylabel = "normalized score" if key == "normalized_score" else "return"
    ax[0].set_xlabel("gradient steps")
    ax[1].set_xlabel("wall-clock seconds (SPIN: incl. ASM pretraining)")
    for a in ax:
        a.set_ylabel(ylabel)
        a.grid(alpha=0.3)
    ax[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    _save_fig(fig, path)


def plot_asm_curves(asms: list[dict], path: Path, title: str) -> None:
    """Validation masked loss per epoch of every ASM of a task, the chosen epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for a in asms:
        curve = a["info"].get("curve") or []
        if not curve:
            continue
        ep = [c["epoch"] for c in curve]
        lab = f"seed {a['seed']} ({a['info'].get('masking', 'bert')})"
        (line,) = ax[0].plot(ep, [c["val_loss"] for c in curve], marker=".", label=lab)
        ax[0].plot(ep, [c["train_loss"] for c in curve], ls="--", color=line.get_color(), alpha=0.6)
        ax[1].plot(ep, [c["val_masked_acc"] for c in curve], marker=".", color=line.get_color())
        ce = a["info"].get("chosen_epoch")
        if ce:
            ax[0].axvline(ce, color=line.get_color(), ls=":", lw=1)
    ax[0].set_xlabel("epoch")
    ax[0].set_ylabel("masked cross-entropy (solid: validation, dashed: train)")
    ax[1].set_xlabel("epoch")
    ax[1].set_ylabel("validation masked accuracy")
    ax[0].legend(fontsize=8)
    for x in ax:
        x.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    _save_fig(fig, path)


def _save_fig(fig, path: Path, dpi: int = 100) -> None:
    from spinrl.utils.rundir import save_figure  # the one atomic figure saver (never a partial PNG)

    save_figure(fig, path, dpi=dpi)


# ---------------------------------------------------------------------- markdown
def _fmt(ms: dict | None, digits: int = 1) -> str:
    if not ms or ms.get("mean") is None:
        return "n/a"
    if ms["n"] == 1:
        return f"{ms['mean']:.{digits}f}"
    return f"{ms['mean']:.{digits}f} ± {ms['std']:.{digits}f}"


def _fmt_time(sec: float | None) -> str:
    if sec is None:
        return "not reached"
    return f"{sec:.0f} s" if sec >= 100 else f"{sec:.1f} s"


def _j(values) -> str:
    return ", ".join(map(str, values))


def paper_differences(rep: dict) -> list[str]:
    """Every way this report's setting differs from the paper's (docs/benchmarks.md s.5, docs/method.md), from the
    runs."""
    st = rep["setting"]
    asms = [a for t in rep["tasks"].values() for a in t["asms"]]
    envs = sorted({t["env_id"] for t in rep["tasks"].values()})
    out = [
        f"- gradient steps: {', '.join(map(str, st['steps']))} per run here vs 1,000,000 in the paper",
        f"- hardware: {', '.join(st['devices'])} with {_j(st['threads'])} "
        f"torch thread(s) per run on a {st['cpu_count']}-core "
        "machine shared with other jobs, vs one NVIDIA A40 GPU; "
        "wall-clock times (and so time to target) are not comparable "
        "in absolute terms, and contention from other jobs adds noise to them",
        f"- seeds: {len(st['seeds'])} ({_j(st['seeds'])}) vs 5",
        f"- evaluation every {_j(st['eval_every'])} steps on "
        f"{_j(st['eval_episodes'])} episodes vs every 5,000 steps on 10",
        f"- model preset {_j(st['presets'])}: transformer d_model "
        f"{_j(st['d_model'])}, {_j(st['n_blocks'])} blocks vs d_model 256, "
        "3 blocks (critics, heads, batch 256 and learning rates as in the paper)",
        f"- tasks: {', '.join(envs)}; the paper's main table is DM Control (cheetah-run, finger-spin, humanoid-stand, "
        "quadruped-walk at 4 levels), and its Maze results are 5/10/15 actuators",
        f"- datasets: generated by `spinrl data make` with our behaviour policies (scripted for maze, cone and sepsis; "
        f"DecQN checkpoints for DM Control), {_j(st['dataset_sizes'])} transitions, not the paper's files",
    ]
    if asms:
        ep = sorted({a["epochs_run"] for a in asms})
        masks = sorted({a["masking"] for a in asms})
        out.append(
            "- ASM pretraining: stopped on validation masked loss "
            f"after {_j(ep)} epochs (ours), masking {_j(masks)}, "
            "vs a fixed number of epochs (100 by default) with BERT 15% masking; one ASM per (dataset, seed)"
        )
    if any("SPIN-cached" in m for t in rep["tasks"].values() for m in t["methods"]):
        out.append("- spin-cached (heads on cached frozen-ASM features) is ours, not in the paper")
    return out


def format_markdown(
    rep: dict,
    img_dir: str,
    title: str | None = None,
    command: str | None = None,
    paper: bool = False,
    preamble: str = "",
) -> str:
    """The page, answer first: the computed verdicts and the preamble's lead paragraph, the paired comparisons,
    the per-task tables, then the preamble's notes, the setting and the provenance (command, the preamble's
    provenance part). A preamble splits into those three parts at the lines ``<!-- notes -->`` and
    ``<!-- provenance -->``; without them it is all lead."""
    lead, notes, prov = split_preamble(preamble)
    st = rep["setting"]
    comps = rep.get("comparisons", [])
    lines = [f"# {title or 'Results'}", ""]
    summary = comparison_summary(comps)
    if summary:
        lines += [*summary, ""]
    if lead:
        lines += [lead, ""]
    lines += format_comparisons(comps)
    tail = []
    if notes:
        tail += ["## Notes", "", notes, ""]
    tail += [
        "## Setting",
        "",
        f"- runs: {st['runs']} ({st['finished_runs']} finished), seeds {_j(st['seeds'])}",
        f"- gradient steps per run: {_j(st['steps'])}; evaluation every "
        f"{_j(st['eval_every'])} steps on {_j(st['eval_episodes'])} "
        f"episodes ({'greedy' if st['greedy'] == [True] else 'sampled'} actions, reset seeds seed+100+k)",
        f"- preset {_j(st['presets'])}: transformer d_model {_j(st['d_model'])}, "
        f"{_j(st['n_blocks'])} blocks; batch {_j(st['batch_size'])}",
        f"- dataset sizes (transitions): {_j(st['dataset_sizes'])}",
        f"- hardware: {', '.join(st['devices'])}, {_j(st['threads'])} torch thread(s) per run, machine with "
        f"{st['cpu_count']} cores shared with other jobs; {', '.join(st['platform'])}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in st["versions"].items()),
        "- mean ± std over seeds (population std); final = last evaluation; best = best evaluation of each seed, "
        "then averaged; time to target = first wall time at which the seed-mean return reaches 95% of F-IQL's "
        "final return (SPIN: ASM pretraining included); steps/s = gradient steps per second excluding evaluation",
        "",
    ]
    if paper:
        tail += (
            ["## How this differs from the paper's setting", ""]
            + paper_differences(rep)
            + [
                "",
                "The paper's numbers are shown beside ours only where the task matches; none of ours is a "
                "reproduction of a paper number.",
                "",
            ]
        )
    if command or prov:
        tail += ["## Provenance", ""]
        if command:
            tail += [
                f"Generated by `{command}` from the run directories under `{rep['root']}`; every number on this "
                "page comes from those directories.",
                "",
            ]
        if prov:
            tail += [prov, ""]
    for task, t in rep["tasks"].items():
        slug = _slug(task)
        lines += [f"## {task}", ""]
        offline = any("offline" in m for m in t["methods"].values())
        head = (
            "| method | seeds | final normalized | best normalized | final return | time "
            "to target | steps to target | train wall (s) | ASM wall (s) | steps/s |"
        )
        sep = "|---|---|---|---|---|---|---|---|---|---|"
        if offline:
            head += " FQE value (held-out) | disc. return (sim) | action agreement exact / per sub-action |"
            sep += "---|---|---|"
        lines += [head, sep]
        for name, m in t["methods"].items():
            row = (
                f"| {name} | {len(m['seeds'])} | {_fmt(m['final_normalized'])} | {_fmt(m['best_normalized'])} | "
                f"{_fmt(m['final_return'], 2)} | "
                f"{_fmt_time(m['time_to_target_seconds']) if m.get('reference') else 'no ' + reference_for(name)} | "
                f"{int(m['steps_to_target']) if m['steps_to_target'] is not None else '-'} "
                f"| {_fmt(m['train_wall_seconds'], 0)} | "
                f"{_fmt(m['pretrain_wall_seconds'], 0) if m['pretrain_wall_seconds']['mean'] else '-'} "
                f"| {_fmt(m['grad_steps_per_s'], 0)} |"
            )
            if offline:
                o = m.get("offline")
                row += (
                    f" {_fmt(o['fqe_value'], 2)} | {_fmt(o['discounted_return'], 2)} "
                    f"| {_fmt(o['exact_match'], 2)} / "
                    f"{_fmt(o['sub_action_agreement'], 2)} |"
                    if o
                    else " - | - | - |"
                )
            lines.append(row)
        lines.append("")
        p = t.get("paper")
        if p:
            if p.get("final_return"):
                lines += [
                    p["note"][0].upper()
                    + p["note"][1:]
                    + ": "
                    + ", ".join(f"{k} {v}" for k, v in p["final_return"].items()),
                    "",
                ]
            else:
                lines += [p["note"][0].upper() + p["note"][1:] + ".", ""]
        lines += [f"![learning curves {task}]({img_dir}/curves_{slug}.png)", ""]
        if t["asms"]:
            a = t["asms"]
            lines += [
                "ASM pretraining: "
                + "; ".join(
                    f"seed {x['seed']}: epoch {x['chosen_epoch']} of "
                    f"{x['epochs_run']} ({x['stop_reason']}, {x['masking']}), "
                    f"{x['wall_seconds']:.0f} s"
                    for x in a
                ),
                "",
                f"![ASM pretraining {task}]({img_dir}/asm_{slug}.png)",
                "",
            ]
    lines += tail
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def split_preamble(text: str) -> tuple[str, str, str]:
    """(lead, notes, provenance) of a hand-written preamble, split at ``<!-- notes -->`` and
    ``<!-- provenance -->`` lines (each part optional, in that order)."""
    parts: dict[str, list[str]] = {"lead": [], "notes": [], "provenance": []}
    cur = "lead"
    for line in (text or "").splitlines():
        tag = line.strip()
        if tag in ("<!-- notes -->", "<!-- provenance -->"):
            cur = tag[5:-4]
            continue
        parts[cur].append(line)
    lead, notes, prov = ("\n".join(parts[k]).strip() for k in ("lead", "notes", "provenance"))
    return lead, notes, prov


def comparisons(rep: dict) -> list[dict]:
    """Paired comparisons the runs allow: spin-cached vs SPIN (same ASMs and seeds), bf16 vs fp32, and SPIN vs
    SAINT (the same transformer actor with and without the pretrained ASM: what pretraining buys).

    Per task: each side's final score, the per-seed difference (paired by seed), and the wall-time and
    steps/s ratios, so a reader sees whether a faster variant gives up return.
    """
    out = []
    for task, t in rep["tasks"].items():
        ms = t["methods"]
        for name, m in ms.items():
            if name.endswith(" bf16"):
                base = name[: -len(" bf16")]
                kind = "bf16 vs fp32"
            elif name.startswith("SPIN-cached-"):
                base = "SPIN-" + name[len("SPIN-cached-") :]
                kind = "spin-cached vs spin"
            elif name.startswith("SPIN-"):
                base = "SAINT-" + name[len("SPIN-") :]
                kind = "spin vs saint"
            else:
                continue
            b = ms.get(base)
            if b is None:
                continue
            seeds = sorted(set(m["final_per_seed"]) & set(b["final_per_seed"]))
            diffs = [
                m["final_per_seed"][k] - b["final_per_seed"][k]
                for k in seeds
                if m["final_per_seed"][k] is not None and b["final_per_seed"][k] is not None
            ]
            tw, bw = m["total_wall_seconds"]["mean"], b["total_wall_seconds"]["mean"]
            out.append(
                {
                    "kind": kind,
                    "task": task,
                    "method": name,
                    "baseline": base,
                    "score_key": m["score_key"],
                    "final": m["final_normalized"] if m["score_key"] == "normalized_score" else m["final_return"],
                    "baseline_final": (
                        b["final_normalized"] if b["score_key"] == "normalized_score" else b["final_return"]
                    ),
                    "paired_difference": _ms(diffs),
                    "seeds": len(diffs),
                    "wall_ratio": tw / bw if tw and bw else None,
                    "steps_per_s_ratio": (
                        m["grad_steps_per_s"]["mean"] / b["grad_steps_per_s"]["mean"]
                        if b["grad_steps_per_s"]["mean"]
                        else None
                    ),
                    "time_to_target": m["time_to_target_seconds"],
                    "baseline_time_to_target": b["time_to_target_seconds"],
                }
            )
    return out


def format_comparisons(comps: list[dict]) -> list[str]:
    if not comps:
        return []
    lines = [
        "## Paired comparisons",
        "",
        "Each row pairs a variant with its baseline on the same datasets and seeds (and the same ASMs, except "
        "SAINT, which trains the same transformer from scratch without one); the difference is "
        "variant minus baseline per seed (mean ± std over seeds); wall time includes ASM pretraining. "
        "A difference smaller than its std is not evidence either way.",
        "",
        "| comparison | task | variant final | baseline final | difference (paired) "
        "| total wall ratio | steps/s ratio | time to target (variant / baseline) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in comps:
        d = c["paired_difference"]
        diff = "-" if d["mean"] is None else f"{d['mean']:+.1f} ± {d['std']:.1f}"
        wall = "-" if c["wall_ratio"] is None else f"{c['wall_ratio']:.2f}x"
        sps = "-" if c["steps_per_s_ratio"] is None else f"{c['steps_per_s_ratio']:.2f}x"
        lines.append(
            f"| {c['method']} vs {c['baseline']} | {c['task']} | "
            f"{_fmt(c['final'])} | {_fmt(c['baseline_final'])} | "
            f"{diff} | {wall} | {sps} | {_fmt_time(c['time_to_target'])} "
            f"/ {_fmt_time(c['baseline_time_to_target'])} |"
        )
    return lines + [""]


def comparison_summary(comps: list[dict]) -> list[str]:
    """The page's computed answer: per kind of comparison, on how many tasks the variant is higher or lower
    than its baseline by more than one std of the paired difference."""
    out = []
    for kind in dict.fromkeys(c["kind"] for c in comps):
        cs = [c for c in comps if c["kind"] == kind and c["paired_difference"]["mean"] is not None]
        up = sum(c["paired_difference"]["mean"] > c["paired_difference"]["std"] for c in cs)
        down = sum(-c["paired_difference"]["mean"] > c["paired_difference"]["std"] for c in cs)
        out.append(
            f"- **{kind}** (paired by seed, final evaluation): higher by more than one std on {up} of {len(cs)} "
            f"task(s), lower by more than one std on {down}, within one std on {len(cs) - up - down} (the std of "
            "the per-seed differences over a few seeds: a sign to look at, not a significance test)."
        )
    return out


def write_report(
    root: str | Path,
    doc: str | Path | None = None,
    title: str | None = None,
    command: str | None = None,
    paper: bool = False,
    preamble: str | None = None,
    records: str | Path | None = None,
) -> Path:
    """Write ``report.md``, ``report.json`` and PNGs into ``root`` (and optionally a copy at ``doc``).

    With ``records``, ``root``'s finished runs are first saved there and the report is built from it.
    """
    from spinrl.utils.progress import progress_bar

    root = Path(root)
    source = root
    if records is not None:
        if not root.is_dir():
            raise ConfigError(f"report DIR {root} is not a directory")
        save_records(root, records)
        source = Path(records)
    rep = build_report(source)
    img = root / "report_img"
    groups = group_runs(find_runs(source))
    asms = find_asms(source)
    bar = progress_bar(total=len(groups), desc="report plots", unit="task")
    for task, methods in groups.items():
        slug = _slug(task)
        ref = rep["tasks"][task]["methods"].get(REFERENCE_METHOD, {})
        plot_learning_curves(
            methods, img / f"curves_{slug}.png", f"{task}: mean ± std over seeds", ref.get("target_return")
        )
        t_asms = [a for a in asms if task_name(a["env_id"], a["env_kwargs"], a["level"]) == task]
        if t_asms:
            plot_asm_curves(t_asms, img / f"asm_{slug}.png", f"{task}: ASM pretraining")
        bar.update(1)
    bar.close()
    command = command or (
        f"spinrl report {root}"
        + (f" --records {records}" if records else "")
        + (f" --doc {doc}" if doc else "")
        + (" --paper" if paper else "")
        + (f" --title '{title}'" if title else "")
        + (f" --preamble {preamble}" if preamble else "")
    )
    pre = Path(preamble).read_text() if preamble else ""
    write_text_atomic(root / "report.json", json.dumps(rep, indent=2, default=str))
    write_text_atomic(root / "report.md", format_markdown(rep, "report_img", title, command, paper, pre))
    if doc:
        doc = Path(doc)
        doc.parent.mkdir(parents=True, exist_ok=True)
        dimg = doc.parent / "img" / _slug(doc.stem.lower())
        dimg.mkdir(parents=True, exist_ok=True)
        for f in img.glob("*.png"):
            shutil.copyfile(f, dimg / f.name)
        rel = os.path.relpath(dimg, doc.parent)
        write_text_atomic(doc, format_markdown(rep, rel, title, command, paper, pre))
    return root


@dataclass
class ReportOptions:
    """report.md + report.json + learning-curve PNGs from a directory of run directories (or, with
    --early-step, the early-learning page).

    ``report(ReportOptions("sw", doc="docs/RESULTS.md"))`` is ``spinrl report sw --doc docs/RESULTS.md``.
    """

    dir: str
    """directory holding run directories (e.g. a sweep's --out)"""
    doc: str | None = None
    """also write the markdown to this path with images beside it (docs/RESULTS.md)"""
    title: str | None = None
    """report title"""
    records: str | None = field(default=None, metadata={"metavar": "RECORDS"})
    """first copy the report's inputs of DIR's finished runs (KB each, no checkpoints) into RECORDS, then report
    from RECORDS, which keeps earlier runs too (commit it, e.g. benchmarks/records/paper)"""
    paper: bool = False
    """add the section listing how the runs' setting differs from the SPIN paper's"""
    preamble: str | None = None
    """markdown file inserted after the title (context; no numbers)"""
    early_step: int | None = field(default=None, metadata={"metavar": "S"})
    """write the early-learning page instead (the paper's Table 4 protocol): returns at step S with IQM and
    bootstrap intervals, paired SPIN differences, ASM controls, % of a converged F-IQL (--reference)"""
    reference: str | None = field(default=None, metadata={"metavar": "DIR"})
    """with --early-step: run directories or records of converged factored-IQL runs (the 100% and the target)"""
    pool: list[str] | None = field(default=None, metadata={"action": "append", "metavar": "DIR"})
    """with --early-step: more directories of runs or records pooled with DIR on the page (repeatable; e.g. the
    grid's records beside the controls'); the page keeps one section per task, whichever directory holds its runs"""

    def __post_init__(self) -> None:
        if self.early_step is not None and not self.doc:
            raise ConfigError("--early-step needs --doc PAGE.md (the page to write, e.g. docs/EARLY.md)")
        if self.pool and self.early_step is None:
            raise ConfigError("--pool pools runs on the early-learning page only; add --early-step S --doc PAGE.md")


def report(opts: ReportOptions, command: str | None = None) -> list[Path]:
    """Write what ``opts`` asks for; returns the files written (the page first). ``command``: the command
    line quoted on the early-learning page."""
    if opts.early_step is not None:
        from spinrl.experiments import early

        assert opts.doc is not None  # __post_init__: --early-step needs --doc
        if opts.records:
            save_records(opts.dir, opts.records)
        roots = [opts.records or opts.dir, *(opts.pool or [])]
        doc = early.write(roots, opts.doc, opts.early_step, opts.reference, opts.preamble, command)
        return [doc, doc.with_suffix(".json")]
    out = write_report(
        opts.dir, doc=opts.doc, title=opts.title, paper=opts.paper, preamble=opts.preamble, records=opts.records
    )
    return [out / "report.md", out / "report.json", *([Path(opts.doc)] if opts.doc else [])]
