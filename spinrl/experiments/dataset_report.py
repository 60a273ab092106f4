"""``spinrl data report``: write docs/datasets.md from the exported behaviour sets and the datasets made.

Inputs are files only, never live objects, so the page can be rebuilt from them:
``behaviour_checkpoints/<task>-<bins>/behaviour.json`` (selection,
references and the behaviour run's metrics, written by ``spinrl behaviour export``) and the dataset
directories under ``$SPINRL_DATA`` (or ``--data``) whose metadata names those checkpoints.
Run ``python -m spinrl.experiments.dataset_report`` or ``spinrl data report``.

Datasets live in a cache outside git, so each report also keeps a ledger (``docs/datasets.json`` beside
the markdown): the summaries of every dataset it has seen, keyed by checksum. A later report on a machine
whose cache lacks a dataset still lists it from the ledger, marked as recorded, until its behaviour set
changes; ``spinrl data make`` with the same seed regenerates it with the same checksum.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spinrl.data.cache import data_dir
from spinrl.envs import DMC_REFERENCE
from spinrl.experiments.behaviour_sets import (
    REFERENCE_EPISODES,
    REFERENCE_MAX_EPISODES,
    REFERENCE_PRECISION,
    SELECT_EPISODES,
    SETS_VARIABLE,
)
from spinrl.utils.checkpoint import write_text_atomic
from spinrl.utils.rundir import save_figure, sha256_file

BENCHMARK_SIZES = {
    "medium": 1_000_000,
    "expert": 1_000_000,
    "medium-expert": 2_000_000,
    "random-medium-expert": 200_000,
}
"""Transitions per level in the public benchmark (docs/benchmarks.md s.1)."""
WANTED = [
    ("cheetah-run", 3),
    ("finger-spin", 3),
    ("humanoid-stand", 3),
    ("quadruped-walk", 3),
    ("dog-trot", 3),
    ("dog-trot", 10),
    ("dog-trot", 30),
]
"""Task/bins pairs issue 4 asks for (paper main table and the dog-trot cardinality study)."""
LEVEL_ORDER = ("random", "medium", "expert", "medium-expert", "random-medium-expert")


def _changed(cfg: dict) -> str:
    """``--lr 5e-05, `` for a run that changed learner flags from their defaults, else empty."""
    from spinrl.training.behaviour import changed_flags

    flags = changed_flags(cfg)
    return f"{flags}, " if flags else ""


def _norm(r: float, ref: dict | None) -> float | None:
    if not ref or ref["expert"] == ref["random"]:
        return None
    return 100.0 * (r - ref["random"]) / (ref["expert"] - ref["random"])


def _fmt(x: float | None, nd: int = 1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def summarize_dataset(path: Path) -> dict:
    """Returns per level and per source, with normalized scores on our and the public references."""
    from spinrl.data import load

    ds = load(path, verify=False)
    meta = ds.meta
    rets = np.asarray(ds.episode_returns(), dtype=float)
    lengths = np.asarray(ds.episode_lengths)
    per_source: dict[str, dict[str, Any]] = {}
    k = 0
    for src, n in meta.get("episode_sources") or []:
        r = rets[k : k + n]
        full = lengths[k : k + n] == lengths.max()  # the last episode of a source may be cut short
        r_full = r[full] if full.any() else r
        per_source[src] = {"episodes": int(n), "return_mean": float(r_full.mean()), "return_std": float(r_full.std())}
        k += n
    ours, public = meta.get("reference"), meta.get("public_reference")
    full = lengths == lengths.max()
    out = {
        "path": str(path),
        "env": meta["env_id"],
        "bins": int((meta.get("env_kwargs") or {}).get("bins", 3)),
        "level": meta["level"],
        "transitions": int(lengths.sum()),
        "episodes": int(len(lengths)),
        "return_mean": float(rets[full].mean()),
        "return_std": float(rets[full].std()),
        "seed": meta.get("generator", {}).get("seed"),
        "wall_seconds": meta.get("generator", {}).get("wall_seconds"),
        "reference": ours,
        "public_reference": public,
        "per_source": per_source,
        "expert_sha": (meta.get("behaviour_checkpoints") or {}).get("expert", {}).get("sha256"),
        "checksum": meta.get("checksum"),
    }
    out["normalized"] = _norm(out["return_mean"], ours)
    out["normalized_public"] = _norm(out["return_mean"], public)
    for s in per_source.values():
        s["normalized"] = _norm(s["return_mean"], ours)
        s["normalized_public"] = _norm(s["return_mean"], public)
    return out


def find_datasets(root: Path) -> list[dict]:
    """Every dmc dataset under ``root`` made from a behaviour set (metadata has behaviour_checkpoints)."""
    found: list[dict] = []
    if not root.exists():
        return found
    for meta_path in sorted(root.glob("*/meta.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if str(meta.get("env_id", "")).startswith("dmc:") and meta.get("behaviour_checkpoints"):
            found.append(summarize_dataset(meta_path.parent))
    return found


LEDGER_FIELDS = (
    "env",
    "bins",
    "level",
    "transitions",
    "episodes",
    "return_mean",
    "return_std",
    "seed",
    "wall_seconds",
    "reference",
    "public_reference",
    "per_source",
    "expert_sha",
    "checksum",
    "normalized",
    "normalized_public",
)
"""What the ledger keeps of a summary (not the cache path: it is this machine's)."""


def merge_ledger(found: list[dict], ledger: list[dict], today: str) -> tuple[list[dict], list[dict]]:
    """Datasets present now plus those only recorded earlier; returns (rows for the report, new ledger).

    Present datasets get ``recorded`` = today; a ledger entry with a checksum seen now is replaced by it.
    Entries without a checksum are dropped (nothing could verify a regeneration against them).
    """
    by_sum: dict[str, dict] = {}
    for e in ledger:
        if e.get("checksum"):
            by_sum[e["checksum"]] = {**e, "present": False}
    for d in found:
        if not d.get("checksum"):
            continue
        by_sum[d["checksum"]] = {**{k: d.get(k) for k in LEDGER_FIELDS}, "recorded": today, "present": True}
    rows = sorted(by_sum.values(), key=lambda e: (e["env"], e["bins"], e["level"], e["transitions"], str(e["seed"])))
    new_ledger = [{k: v for k, v in e.items() if k != "present"} for e in rows]
    return rows, new_ledger


def plot_curve(index: dict, path: Path) -> None:
    """Greedy evaluation return vs env steps, with the chosen checkpoints and the references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in index["run"]["metrics"] if r.get("eval_return_mean") is not None]
    x = np.array([r["env_step"] for r in rows]) / 1e6
    y = np.array([r["eval_return_mean"] for r in rows])
    s = np.array([r["eval_return_std"] for r in rows])
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(x, y, color="C0", label="greedy eval return (10 episodes)")
    ax.fill_between(x, y - s, y + s, color="C0", alpha=0.2)
    for level, color in (("expert", "C3"), ("medium", "C2")):
        c = index.get(level)
        if c:
            ax.scatter([c["env_step"] / 1e6], [c["eval_return_mean"]], color=color, zorder=3, label=f"chosen {level}")
    for k, step in enumerate(index["run"]["config"].get("continued_at") or []):
        ax.axvline(
            step / 1e6, color="gray", ls=":", lw=1, label="continued from a carry (replay refilled)" if k == 0 else None
        )
    task = index["env"].split(":", 1)[1]
    pub = DMC_REFERENCE.get((task, int(index["bins"])))
    if pub:
        ax.axhline(pub[1], color="gray", ls="--", lw=1, label="public expert reference")
    ax.set_xlabel("env steps (millions)")
    ax.set_ylabel("episode return")
    ax.set_title(f"DecQN behaviour agent, {task}, {index['bins']} bins, hidden {index['run']['config'].get('hidden')}")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    save_figure(fig, path, dpi=110, bbox_inches="tight")  # the one atomic figure saver; closes the figure


def _current(d: dict, current: dict) -> bool:
    """Whether a dataset summary comes from a current behaviour set and its current references."""
    if d.get("expert_sha") not in current:
        return False
    ref, mine = current[d["expert_sha"]], d.get("reference") or {}
    return ref is None or all(
        abs(float(mine.get(k, float("nan"))) - float(ref[k])) <= 1e-9 * max(1.0, abs(float(ref[k])))
        for k in ("random", "expert")
    )


def _going_on(behaviour_root: Path, task: str, bins: int, exported_steps: int) -> dict | None:
    """The task's main carry (``carry/<task>-<bins>/carry.json``) when it is further along than the exported set."""
    carry_json = behaviour_root / "carry" / f"{task}-{bins}" / "carry.json"
    if not carry_json.exists():
        return None
    info = json.loads(carry_json.read_text())
    return info if int(info["env_step"]) > int(exported_steps) else None


def _attempts(behaviour_root: Path, task: str, bins: int) -> list[str]:
    """Lines listing the carried runs of a task other than its main carry (``carry/<task>-<bins>-<name>``):
    attempts with other learner flags, kept so the page says what was tried and how far each got."""
    from spinrl.training.behaviour import changed_flags, q_divergence, reward_max, training_return

    rows = []
    for carry_json in sorted((behaviour_root / "carry").glob(f"{task}-{bins}-*/carry.json")):
        info = json.loads(carry_json.read_text())
        if info.get("env") != f"dmc:{task}" or int(info.get("bins", -1)) != bins:
            continue
        cfg, best = info["run"]["config"], info["best"]
        flags = " ".join(f for f in (f"--hidden {cfg.get('hidden')}", changed_flags(cfg)) if f)
        evals = [r for r in info["run"].get("metrics", []) if r.get("eval_return_mean") is not None]
        last = evals[-1] if evals else None
        why = last and q_divergence(
            last.get("q_mean"), cfg.get("gamma", 0.99), reward_max(cfg), training_return(last, cfg)
        )
        rows.append(
            f"| `{carry_json.parent.name}` | `{flags}` | {info['env_step']:,} | "
            f"{(info['run'].get('wall_seconds') or 0.0) / 3600:.2f} h | {best['eval_return_mean']:.1f} +/- "
            f"{best['eval_return_std']:.1f} at {best['env_step']:,} | "
            + (f"{last['eval_return_mean']:.1f}" + (f" (diverged: {why})" if why else "") if last else "")
            + " |"
        )
    if not rows:
        return []
    return [
        "Other attempts, carried in `behaviour_checkpoints/carry` (continue one with `spinrl behaviour train "
        "--continue-from` and its flags):",
        "",
        "| carry | learner flags | env steps | wall | best greedy return | last greedy return |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def build_report(
    behaviour_root: Path, data_root: Path, out: Path, img_dir: Path, ledger: list[dict] | None = None
) -> tuple[str, list[dict]]:
    """Returns the markdown and the new ledger (see the module docstring)."""
    from spinrl.training.behaviour import changed_flags, q_divergence, reward_max, training_return

    sets = {}
    for idx_path in sorted(behaviour_root.glob("*/behaviour.json")):
        index = json.loads(idx_path.read_text())
        sets[(index["env"].split(":", 1)[1], int(index["bins"]))] = (idx_path.parent, index)
    current = {
        sha256_file(folder / "expert.pt"): index.get("reference")
        for folder, index in sets.values()
        if (folder / "expert.pt").exists()
    }
    today = time.strftime("%Y-%m-%d", time.gmtime())
    datasets, new_ledger = merge_ledger(find_datasets(data_root), ledger or [], today)
    # A dataset from a behaviour set that no longer exists, or made with other references than the set's
    # current ones (an earlier reference rule), is not what `spinrl data make` gives now: not on the page.
    stale = [d for d in datasets if not _current(d, current)]
    datasets = [d for d in datasets if _current(d, current)]
    new_ledger = [e for e in new_ledger if _current(e, current)]
    any_recorded = False
    lines = [
        "# Discretized DM Control datasets",
        "",
        f"Generated by `spinrl data report` (`python -m spinrl.experiments.dataset_report`) on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from `{behaviour_root}` and the datasets in the data "
        "cache. Do not edit by hand: rerun the command.",
        "",
        "Protocol (docs/benchmarks.md s.1; *ours* where the sources are silent): behaviour agents are online DecQN "
        "(`spinrl behaviour train`: mean-decomposed factored Q, double Q, 3-step returns, Huber, Adam 1e-4, clip 40, "
        "batch 256, Polyak 0.005, uniform replay, 10k random warm-up steps, one update per 5 env steps, epsilon "
        "1.0 -> 0.05 multiplied by 0.999 per exploratory action) "
        "evaluated greedily on 10 episodes every 25k env steps. "
        "Expert = the checkpoint with the best greedy return; medium = among the checkpoints whose greedy return is "
        "35-55% of the expert's, the one closest to 45% (*ours*). Data "
        "are collected epsilon-greedily with epsilon 0.05 (*ours*), "
        "random = uniform joint actions, random-medium-expert = whole episodes, one third from each source. "
        "Normalized scores use *our* references stored in each dataset (uniform random and the epsilon-0.05 expert, "
        f"in blocks of {REFERENCE_EPISODES} episodes until each mean's standard error is at most "
        f"{REFERENCE_PRECISION:.0%} of expert - random, at most "
        f"{REFERENCE_MAX_EPISODES}); the column `norm. (public refs)` "
        "uses the public benchmark's constants for comparison. `spinrl behaviour export` re-evaluates the best "
        f"checkpoints and the medium candidates on {SELECT_EPISODES} fresh greedy episodes and chooses by those "
        "(the best of a hundred 10-episode means overstates the expert); sets exported before that rule say so. "
        "Return means and stds in the tables count full-length episodes only: a level's (or source's) last episode "
        "may be cut short by the transition count (`spinrl data info` counts it, so its per-source means can differ "
        "by a point or two). "
        "A seed fixes a dataset's checksum on one machine; on fresh machines the cheetah-run and finger-spin datasets "
        "came out bit for bit identical, quadruped-walk's medium and expert rollouts did not (mean returns within "
        "1 point): a last-bit difference in the policy's float32 forward flips a near-tied greedy choice, and "
        "quadruped's dynamics let such a flip change the episode (our reading; not shown).",
        "",
    ]
    if stale:
        lines += [
            f"Not shown: {len(stale)} dataset(s) in the cache or ledger made from earlier behaviour sets or "
            "with earlier reference returns (remake them with `spinrl data make`).",
            "",
        ]
    for task, bins in WANTED + sorted(k for k in sets if k not in WANTED):
        lines.append(f"## {task}, {bins} bins")
        lines.append("")
        pub = DMC_REFERENCE.get((task, bins))
        if (task, bins) not in sets:
            carry_json = behaviour_root / "carry" / f"{task}-{bins}" / "carry.json"
            if not carry_json.exists():
                lines += [
                    "Not made: no behaviour agent was trained for this task and bin count yet (compute).",
                    "",
                    *_attempts(behaviour_root, task, bins),
                ]
                continue
            info = json.loads(carry_json.read_text())
            img = img_dir / f"{task}-{bins}-behaviour.png"
            plot_curve(info, img)
            wall = info["run"].get("wall_seconds") or 0.0
            best = info["best"]
            lines += [
                f"![behaviour learning curve (in progress)]({os.path.relpath(img, out.parent)})",
                "",
                f"Not made yet: the DecQN behaviour run is in progress, carried between machines in "
                f"`{carry_json.parent}` (`spinrl behaviour carry`): "
                f"{info['env_step']:,} env steps in {wall / 3600:.2f} h "
                f"wall so far (hidden {info['run']['config'].get('hidden')}"
                + (f"; {changed_flags(info['run']['config'])}" if changed_flags(info["run"]["config"]) else "")
                + "), best greedy return "
                f"{best['eval_return_mean']:.1f} +/- "
                f"{best['eval_return_std']:.1f} at env step {best['env_step']:,}"
                + (f" (public expert reference {pub[1]})" if pub else "")
                + f". Continue: `{info['continue']}`. "
                "A carry holds no replay: continuing refills an empty one from the carried policy (`--refill`, "
                "default 100k: with 10k a dog-trot continuation lost its "
                "fit; with 100k two continuations dipped for 25-50k steps "
                "and then went on rising), so where the "
                "original run directory (replay included) still exists, `--resume` "
                "it instead.",
                "",
                *_attempts(behaviour_root, task, bins),
            ]
            continue
        folder, index = sets[(task, bins)]
        run = index["run"]
        img = img_dir / f"{task}-{bins}-behaviour.png"
        going_on = _going_on(behaviour_root, task, bins, run["env_steps"])
        # a run that went on after the export: its longer curve, with the exported choices marked on it
        plot_curve({**index, "run": going_on["run"]} if going_on else index, img)
        rel_img = os.path.relpath(img, out.parent)
        cfg = run["config"]
        wall = run.get("wall_seconds") or 0.0
        lines += [
            f"![behaviour learning curve{' (the run went on after this set was exported)' if going_on else ''}]"
            f"({rel_img})",
            "",
        ]
        lines.append(
            f"- Behaviour run: {run['env_steps']:,} env steps in {wall / 3600:.2f} h wall "
            f"({wall / max(run['env_steps'], 1) * 1e6 / 3600:.2f} h per 1M steps; hidden {cfg.get('hidden')}, "
            f"{_changed(cfg)}{cfg.get('num_envs')} envs batched, seed {cfg.get('seed')}, "
            f"{cfg.get('threads')} CPU thread(s) on a shared 2-core machine)."
        )
        evals = [r for r in run.get("metrics", []) if r.get("eval_return_mean") is not None]
        if evals:
            last, top = evals[-1], max(evals, key=lambda r: r["eval_return_mean"])
            fell = last["eval_return_mean"] < 0.5 * top["eval_return_mean"]
            why = q_divergence(last.get("q_mean"), cfg.get("gamma", 0.99), reward_max(cfg), training_return(last, cfg))
            lines.append(
                f"- Last evaluation: env step {int(last['env_step']):,}, greedy return {last['eval_return_mean']:.1f}"
                + (
                    f"; the run fell after its best ({top['eval_return_mean']:.1f} at {int(top['env_step']):,})"
                    + (
                        f", its mean Q going from {top['q_mean']:.1f} to {last['q_mean']:.1f} (diverged: {why})"
                        if top.get("q_mean") is not None and why
                        else ""
                    )
                    if fell
                    else ""
                )
                + "."
            )
        if going_on:
            best = going_on["best"]
            lines.append(
                f"- The run went on after this set was exported (at {run['env_steps']:,} env steps), carried in "
                f"`{behaviour_root / 'carry' / f'{task}-{bins}'}`: {going_on['env_step']:,} env steps in "
                f"{(going_on['run'].get('wall_seconds') or 0.0) / 3600:.2f} h so far, best greedy return "
                f"{best['eval_return_mean']:.1f} +/- {best['eval_return_std']:.1f} at env step {best['env_step']:,}. "
                f"The set below is the exported one until `spinrl behaviour export` re-exports the run. "
                f"Continue: `{going_on['continue']}`."
            )
        for level in ("expert", "medium"):
            c = index.get(level)
            if c:
                again = (
                    f"; on {c['selection_episodes']} fresh episodes {c['selection_return_mean']:.1f} "
                    f"+/- {c['selection_return_std']:.1f}"
                    if "selection_episodes" in c
                    else "; chosen by the training evaluations alone (exported before re-selection)"
                )
                lines.append(
                    f"- Chosen {level}: env step {c['env_step']:,}, greedy return {c['eval_return_mean']:.1f} "
                    f"+/- {c['eval_return_std']:.1f} in training{again} (`{folder}/{c['file']}`)."
                )
            else:
                lines.append(f"- Chosen {level}: none (no checkpoint in 35-55% of the expert's return).")
        ref = index.get("reference") or {}
        if ref:
            lines.append(
                f"- References (ours): random {ref['random']:.2f}, expert {ref['expert']:.2f} "
                f"({ref['episodes']} episodes each"
                + (f", standard errors {ref['random_se']:.2f} / {ref['expert_se']:.2f}" if "random_se" in ref else "")
                + f", expert with epsilon {ref['epsilon']})"
                + (
                    f"; public benchmark: random {pub[0]}, expert {pub[1]} - our expert reaches "
                    f"{_norm(ref['expert'], {'random': pub[0], 'expert': pub[1]}):.1f} "
                    "on the public scale."
                    if pub
                    else "."
                )
            )
        sha = sha256_file(folder / "expert.pt") if (folder / "expert.pt").exists() else None
        mine = [d for d in datasets if d["env"] == f"dmc:{task}" and d["bins"] == bins and d["expert_sha"] == sha]
        mine.sort(key=lambda d: (LEVEL_ORDER.index(d["level"]), d["transitions"]))
        lines += [
            "",
            "| level | transitions made / benchmark size | "
            "episodes | return mean +/- std | normalized (ours) "
            "| norm. (public refs) | per source: return (normalized, ours) | seed | wall |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for d in mine:
            size = BENCHMARK_SIZES.get(d["level"])
            src = "; ".join(f"{k} {v['return_mean']:.1f} ({_fmt(v['normalized'])})" for k, v in d["per_source"].items())
            mark = "" if d["present"] else " (recorded)"
            any_recorded |= not d["present"]
            lines.append(
                f"| {d['level']}{mark} | {d['transitions']:,} / "
                f"{'-' if size is None else f'{size:,}'} | {d['episodes']} | "
                f"{d['return_mean']:.1f} +/- {d['return_std']:.1f} | "
                f"{_fmt(d['normalized'])} | {_fmt(d['normalized_public'])} "
                f"| {src} | {d['seed']} | {_fmt(d['wall_seconds'], 0)} s |"
            )
        made = {d["level"] for d in mine}
        missing = [lv for lv in BENCHMARK_SIZES if lv not in made]
        if not mine:
            lines.append("| (none made yet) | | | | | | | | |")
        largest: dict[str, int] = {}
        for d in mine:
            largest[d["level"]] = max(largest.get(d["level"], 0), d["transitions"])
        short = [(lv, n) for lv, n in largest.items() if n < BENCHMARK_SIZES.get(lv, 0)]  # no full-size one made
        if short or missing:
            lines.append("")
        if short:
            lines.append(
                "Reduced sizes (compute): "
                + "; ".join(f"{lv} {n:,} of {BENCHMARK_SIZES[lv]:,} transitions" for lv, n in short)
                + "."
            )
        if missing:
            lines.append("Not made here: " + ", ".join(missing) + ".")
        lines += [
            "",
            f"Regenerate: `spinrl data make dmc:{task} --bins {bins} --level LEVEL --behaviour {folder} "
            f"--transitions N --seed S` (same seed, same checksum).",
            "",
            *_attempts(behaviour_root, task, bins),
        ]
    if any_recorded:
        lines += [
            "Rows marked *(recorded)* were not in this machine's data cache when the report ran: they come from "
            "the ledger `datasets.json` beside this page, written by an earlier `spinrl data report` from the "
            "dataset itself (the date it was last seen is its `recorded` field). The regenerate command with the "
            "same level, size and seed gives the same checksum.",
            "",
        ]
    return "\n".join(lines) + "\n", new_ledger


def write_report(
    behaviour_root: str | Path = "behaviour_checkpoints",
    data_root: str | Path | None = None,
    out: str | Path = "docs/datasets.md",
    img_dir: str | Path = "docs/img",
) -> Path:
    """Write the report (and its PNGs) atomically; returns the markdown path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ledger_path = out.with_suffix(".json")
    ledger = json.loads(ledger_path.read_text())["datasets"] if ledger_path.exists() else []
    text, new_ledger = build_report(
        Path(behaviour_root), Path(data_root) if data_root else data_dir(), out, Path(img_dir), ledger
    )
    write_text_atomic(
        ledger_path,
        json.dumps(
            {
                "about": "dataset summaries seen by `spinrl data report` (spinrl/experiments/dataset_report.py)",
                "datasets": new_ledger,
            },
            indent=1,
        )
        + "\n",
    )
    write_text_atomic(out, text)
    return out


@dataclass
class DatasetReportConfig:
    """Write docs/datasets.md (+ learning-curve PNGs) from behaviour sets and datasets.

    ``spinrl data report``; in Python :func:`write_dataset_report`.
    """

    behaviour_root: str | None = None
    """folder of exported behaviour sets (default: $SPINRL_BEHAVIOUR_SETS, else behaviour_checkpoints)"""
    data: str | None = None
    """dataset folder to scan (default: $SPINRL_DATA)"""
    out: str = "docs/datasets.md"
    """markdown output; its ledger of dataset summaries is the same path with .json"""
    img_dir: str = "docs/img"
    """folder for the learning-curve PNGs"""


def write_dataset_report(cfg: DatasetReportConfig) -> Path:
    """:func:`write_report` from a :class:`DatasetReportConfig`; returns the markdown path."""
    root = cfg.behaviour_root or os.environ.get(SETS_VARIABLE) or "behaviour_checkpoints"
    return write_report(root, cfg.data, cfg.out, cfg.img_dir)


if __name__ == "__main__":  # the same flags as `spinrl data report` (all strings), without importing the CLI
    import dataclasses

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(DatasetReportConfig):
        ap.add_argument("--" + f.name.replace("_", "-"), default=f.default)
    print(f"wrote {write_dataset_report(DatasetReportConfig(**vars(ap.parse_args())))}")
