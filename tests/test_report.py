"""spinrl report: statistics over seeds, time to target with pretraining, files written, from run dirs only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spinrl.cli.main import main
from spinrl.errors import ConfigError
from spinrl.experiments.report import build_report, format_markdown, write_report

COLUMNS = "step,wall_seconds,grad_steps_per_s,critic_loss,eval_return_mean,eval_return_std,normalized_score,normalized_std"


def fake_run(root: Path, name: str, actor: str, seed: int, returns: list[float], walls: list[float], asm_seconds: float = 0.0,
             finished: bool = True, env_kwargs: dict | None = None, precision: str | None = None) -> Path:
    """A run directory as the trainer writes it (config.json, metrics.csv, policy.pt), with known numbers."""
    d = root / name
    d.mkdir(parents=True)
    cfg = {"config": {"algo": "iql", "actor": actor, "seed": seed, "preset": "cpu", "steps": 10 * len(returns),
                      "eval_every": 10, "eval_episodes": 5, "greedy": False, "dataset": str(root / "nodata.d"),
                      **({"precision": precision} if precision else {})},
           "resolved": {"batch_size": 256, "model": {"d_model": 64, "n_blocks": 2}},
           "dataset": {"env_id": "maze", "env_kwargs": env_kwargs or {"actuators": 5}, "level": "medium-expert"},
           "asm_wall_seconds": asm_seconds, "versions": {"torch": "x"}, "device": {"type": "cpu", "name": "x86_64",
                                                                                 "torch_threads": 1, "platform": "linux"}}
    (d / "config.json").write_text(json.dumps(cfg))
    lines = [COLUMNS]
    for i, (r, w) in enumerate(zip(returns, walls)):
        lines.append(f"{10 * (i + 1)},{w},{100 + seed},1.0,{r},1.0,{r / 2},0.5")
    (d / "metrics.csv").write_text("\n".join(lines) + "\n")
    if finished:
        (d / "policy.pt").write_bytes(b"")
    return d


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "sweep"
    fake_run(root, "f0", "factored", 0, [10, 50, 100], [1, 2, 3])
    fake_run(root, "f1", "factored", 1, [20, 60, 80], [1, 2, 3])
    fake_run(root, "s0", "spin", 0, [40, 90, 95], [2, 4, 6], asm_seconds=5.0)
    fake_run(root, "s1", "spin", 1, [60, 88, 99], [2, 4, 6], asm_seconds=7.0)
    fake_run(root, "s2", "spin", 2, [0, 0, 0], [2, 4, 6], asm_seconds=7.0, finished=False)  # interrupted: left out
    return root


def test_statistics_and_time_to_target(runs):
    rep = build_report(runs)
    t = rep["tasks"]["maze[actuators=5] medium-expert"]
    f, s = t["methods"]["F-IQL"], t["methods"]["SPIN-IQL"]
    assert s["seeds"] == [0, 1]
    assert f["final_return"]["mean"] == pytest.approx(90.0) and f["final_return"]["std"] == pytest.approx(10.0)
    assert f["final_normalized"]["mean"] == pytest.approx(45.0)
    assert s["best_normalized"]["mean"] == pytest.approx(np.mean([95 / 2, 99 / 2]))
    # target = 0.95 * 90 = 85.5: SPIN's seed-mean (89) reaches it at its 2nd evaluation, wall 4 s + mean ASM 6 s.
    assert s["time_to_target_seconds"] == pytest.approx(10.0) and s["steps_to_target"] == 20
    assert f["time_to_target_seconds"] == pytest.approx(3.0)
    assert s["pretrain_wall_seconds"]["mean"] == pytest.approx(6.0) and s["total_wall_seconds"]["mean"] == pytest.approx(12.0)
    assert f["grad_steps_per_s"]["mean"] == pytest.approx(100.5)


def test_report_files_and_cli(runs, tmp_path):
    assert main(["report", str(runs), "--doc", str(tmp_path / "docs" / "RESULTS.md")]) == 0
    md = (runs / "report.md").read_text()
    assert "| SPIN-IQL | 2 | 48.5 ± 1.0 |" in md and "10.0 s" in md
    assert "paper: Maze 5/10/15 actuators saturated" in md.lower() or "Paper: Maze" in md
    assert json.loads((runs / "report.json").read_text())["setting"]["seeds"] == [0, 1]
    assert (runs / "report_img" / "curves_maze_actuators_5__medium-expert.png").stat().st_size > 1000
    doc = (tmp_path / "docs" / "RESULTS.md").read_text()
    img = next(line for line in doc.splitlines() if line.startswith("![learning"))
    assert (tmp_path / "docs" / img.split("](")[1].rstrip(")")).exists()


def test_paired_comparisons_spin_cached_and_bf16(runs):
    fake_run(runs, "c0", "spin-cached", 0, [50, 95, 110], [1, 2, 3], asm_seconds=5.0)
    fake_run(runs, "c1", "spin-cached", 1, [70, 90, 104], [1, 2, 3], asm_seconds=7.0)
    fake_run(runs, "b0", "spin", 0, [40, 90, 91], [1, 2, 3], asm_seconds=5.0, precision="bf16")
    rep = build_report(runs)
    by = {(c["method"], c["baseline"]): c for c in rep["comparisons"]}
    c = by[("SPIN-cached-IQL", "SPIN-IQL")]
    # normalized = return / 2; paired per seed: (110 - 95) / 2 = 7.5 and (104 - 99) / 2 = 2.5
    assert c["paired_difference"]["mean"] == pytest.approx(5.0) and c["paired_difference"]["std"] == pytest.approx(2.5)
    assert c["wall_ratio"] == pytest.approx((3 + 6) / (6 + 6))
    b = by[("SPIN-IQL bf16", "SPIN-IQL")]
    assert b["seeds"] == 1 and b["paired_difference"]["mean"] == pytest.approx((91 - 95) / 2)
    md = format_markdown(rep, "img")
    assert "## Paired comparisons" in md and "**spin-cached vs spin** (paired by seed, final evaluation): higher by " \
        "more than one std on 1 of 1" in md
    # the answer leads: verdicts and the preamble's lead before the tables; notes, setting, provenance after
    md = format_markdown(rep, "img", command="spinrl report x", preamble="LEAD\n<!-- notes -->\nNOTE\n"
                         "<!-- provenance -->\nPROV\n")
    order = [md.index(x) for x in ("**spin-cached vs spin**", "LEAD", "## Paired comparisons", "## maze",
                                   "## Notes", "NOTE", "## Setting", "## Provenance", "Generated by", "PROV")]
    assert order == sorted(order) and md.count("LEAD") == 1 and md.endswith("PROV\n")


def test_paired_comparison_spin_vs_saint(runs):
    """SPIN against SAINT on the same seeds: what the pretrained ASM adds (SAINT has no pretraining time)."""
    fake_run(runs, "t0", "saint", 0, [30, 70, 85], [3, 6, 9])
    fake_run(runs, "t1", "saint", 1, [30, 80, 95], [3, 6, 9])
    by = {(c["method"], c["baseline"]): c for c in build_report(runs)["comparisons"]}
    c = by[("SPIN-IQL", "SAINT-IQL")]
    assert c["kind"] == "spin vs saint" and c["seeds"] == 2
    # normalized = return / 2; per seed (95 - 85) / 2 = 5 and (99 - 95) / 2 = 2
    assert c["paired_difference"]["mean"] == pytest.approx(3.5) and c["paired_difference"]["std"] == pytest.approx(1.5)
    assert c["wall_ratio"] == pytest.approx((6 + 6) / 9)  # SPIN's wall includes its ASM (mean 6 s)
    assert ("SPIN-cached-IQL", "SAINT-IQL") not in by


def test_empty_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="holds no run directory"):
        write_report(tmp_path)
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_records_carry_finished_runs_to_later_reports(runs, tmp_path):
    """--records: a later report on another machine, with only its new runs, still has the earlier ones."""
    rec = tmp_path / "records"
    (runs / "f0" / "best.json").write_text('{"step": 30}')
    assert main(["report", str(runs), "--records", str(rec)]) == 0
    before = build_report(runs)["tasks"]["maze[actuators=5] medium-expert"]["methods"]
    assert not list(rec.rglob("*.pt")) and not (rec / "s2").exists()  # no checkpoints; the interrupted run left out
    assert json.loads((rec / "f0" / "best.json").read_text()) == {"step": 30}
    assert json.loads((rec / "f0" / "record.json").read_text())["policy_sha256"]
    import shutil

    shutil.rmtree(runs)  # the first machine is gone
    new = tmp_path / "sweep2"
    fake_run(new, "c0", "spin-cached", 0, [50, 95, 110], [1, 2, 3], asm_seconds=5.0)
    write_report(new, records=rec)
    after = json.loads((new / "report.json").read_text())["tasks"]["maze[actuators=5] medium-expert"]["methods"]
    assert set(after) == {"F-IQL", "SPIN-IQL", "SPIN-cached-IQL"}
    for m in ("F-IQL", "SPIN-IQL"):
        for key in ("final_return", "best_normalized", "time_to_target_seconds", "seeds"):
            assert after[m][key] == before[m][key]
    assert "--records" in (new / "report.md").read_text()


@pytest.mark.parametrize("page, records, preamble, img, paper", [
    ("RESULTS.md", "paper", "results_preamble.md", "img/results", True),
    ("BF16.md", "bf16", "bf16_preamble.md", "img/bf16", False),
])
def test_committed_results_page_is_rebuilt_from_committed_records(monkeypatch, page, records, preamble, img, paper):
    """docs/RESULTS.md and docs/BF16.md come from benchmarks/records/<name> alone: a clean clone rebuilds the
    same text (this fails when a record is missing from git, or the page was edited by hand)."""
    import re

    repo = Path(__file__).resolve().parents[1]
    doc = (repo / "docs" / page).read_text()
    monkeypatch.chdir(repo)
    title = doc.splitlines()[0].removeprefix("# ")
    command = re.search(r"Generated by `([^`]+)`", doc).group(1)
    rep = build_report(Path("benchmarks/records") / records)
    pre = (Path("benchmarks") / preamble).read_text()
    md = format_markdown(rep, img, title, command, paper=paper, preamble=pre)
    assert md == doc


@pytest.mark.parametrize("page, records, step, preamble, img", [
    ("EARLY_SUBSETS.md", "paper", 250, "early_subsets_preamble.md", "img/early_subsets_curves.png"),
    ("EARLY.md", "early", 10000, "early_preamble.md", "img/early_curves.png"),
])
def test_committed_early_pages_are_rebuilt_from_committed_records(monkeypatch, page, records, step, preamble, img):
    """docs/EARLY*.md are `spinrl report benchmarks/records/<name> --early-step S ...` of committed records."""
    import re

    from spinrl.experiments import early

    repo = Path(__file__).resolve().parents[1]
    doc = (repo / "docs" / page).read_text()
    monkeypatch.chdir(repo)
    command = re.search(r"Rebuild: `([^`]+)`", doc).group(1)
    ref = re.search(r"--reference (\S+)", command)
    roots = [command.split()[2], *re.findall(r"--pool (\S+)", command)]
    assert roots[0] == f"benchmarks/records/{records}"
    rep = early.build(roots, step, ref.group(1) if ref else None)
    pre = (Path("benchmarks") / preamble).read_text()
    assert early.format_markdown(rep, command, pre, img) == doc
