"""The speed report script (benchmarks/train_step.py) runs end to end and resumes from its results file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import train_step  # noqa: E402


def _rows(path: Path, kind: str) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if r["kind"] == kind:
            out.append(r)
    return out


def test_results_file_resumes_and_renders(tmp_path, capsys):
    res, doc = tmp_path / "speed.jsonl", tmp_path / "SPEED.md"
    argv = ["--quick", "--shapes", "cheetah", "--presets", "cpu", "--algos", "iql", "--actors", "factored",
            "--no-bf16", "--threads", "1", "--results", str(res)]
    assert train_step.main(argv + ["--no-asm"]) == 0
    first = _rows(res, "train_step")
    assert len(first) == 1 and first[0]["ref_over_lib"] > 0 and first[0]["limit_gflop_per_s"] > 0
    assert first[0]["interleaved"] is True and "code" in first[0]
    # rerun: the train row is already there (not re-measured); the ASM row is new
    assert train_step.main(argv + ["--write-doc", str(doc)]) == 0
    assert _rows(res, "train_step") == first and len(_rows(res, "asm_step")) == 1
    text = doc.read_text()
    assert "| cpu | iql | factored |" in text and "2 invocations" in text
    # the full grid is 3 shapes x 2 presets x (15 train + 1 ASM) rows; this file has 2 cheetah rows
    assert "**Incomplete:** rows not measured yet" in text and "cheetah 30 of 32, dog 32 of 32, dog30 32 of 32" in text
    # --render-only: the same doc from the file, nothing measured or appended
    before = res.read_text()
    doc.unlink()
    assert train_step.main(argv + ["--render-only", "--write-doc", str(doc)]) == 0
    assert res.read_text() == before and "| cpu | iql | factored |" in doc.read_text() and "--render-only" in doc.read_text()
    # a torn last line (a kill mid-write) is ignored
    with open(res, "a") as f:
        f.write('{"kind": "train_st')
    assert train_step.main(argv + ["--no-asm"]) == 0 and _rows(res, "train_step") == first
    lines = res.read_text().splitlines()
    assert json.loads(lines[-1])["kind"] == "limit"  # rows after the torn one stay whole
    assert "" not in lines and sum(not ln.endswith("}") for ln in lines) == 1  # only the torn line is broken
    # --remeasure: the row is measured again and the report shows the new one only
    assert train_step.main(argv + ["--no-asm", "--remeasure", "--write-doc", str(doc)]) == 0
    again = _rows(res, "train_step")
    assert len(again) == 2 and again[0] == first[0]
    text = doc.read_text()
    row = next(ln for ln in text.splitlines() if ln.startswith("| cpu | iql | factored |"))
    assert text.count("| cpu | iql | factored |") == 1 and row.split("|")[4].strip() == f"{again[1]['ms_median']:.1f}"
    capsys.readouterr()
    with pytest.raises(SystemExit):  # nothing to measure again without a results file
        train_step.main(["--quick", "--remeasure", "--shapes", "cheetah"])
    assert "--remeasure: needs --results FILE" in capsys.readouterr().err
    threads = torch.get_num_threads()
    try:  # rendering rows of another thread count: an error naming --threads, not a crash
        with pytest.raises(SystemExit):
            train_step.main(["--quick", "--threads", "2", "--results", str(res), "--render-only", "--write-doc", str(doc)])
        err = capsys.readouterr().err
        assert "no rows measured with 2 torch thread(s)" in err and "pass the --threads" in err
    finally:
        torch.set_num_threads(threads)  # main() set 2 for this process


def test_interleaved_timing_alternates_blocks():
    calls = []
    out = train_step.time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 25, 2, block=10)
    assert [len(v) for v in out.values()] == [25, 25]
    timed = calls[4:]  # after 2 warm-up calls each
    assert timed[:10] == ["a"] * 10 and timed[10:20] == ["b"] * 10 and timed[20:30] == ["a"] * 10
    assert timed[-5:] == ["b"] * 5


def _one_measured_row(tmp_path: Path):
    """One quick IQL factored cheetah row measured here: (results file, doc path, its argv, the row)."""
    res, doc = tmp_path / "speed.jsonl", tmp_path / "SPEED.md"
    argv = ["--quick", "--shapes", "cheetah", "--presets", "cpu", "--algos", "iql", "--actors", "factored",
            "--no-bf16", "--no-reference", "--no-asm", "--threads", "1", "--results", str(res)]
    assert train_step.main(argv) == 0
    return res, doc, argv, _rows(res, "train_step")[0]


def test_rows_from_two_hosts_are_labelled(tmp_path):
    """A results file spans sessions; a row measured on another machine is named, not passed off as this one's."""
    res, doc, argv, row = _one_measured_row(tmp_path)
    assert row["host"]
    # the same row as an older session on another machine wrote it: no host field, a setup line above it
    older = {k: v for k, v in row.items() if k != "host"}
    with open(res, "a") as f:
        f.write(json.dumps({**_rows(res, "setup")[0], "cpu": "Other CPU 9000"}) + "\n")
        f.write(json.dumps({**older, "actor": "saint"}) + "\n")
    assert train_step.main(argv + ["--render-only", "--write-doc", str(doc)]) == 0
    text = doc.read_text()
    isa = row["cpu_isa"]
    assert f"**A** = {row['host']}, {isa} (1 row), **B** = Other CPU 9000, {isa} (1 row)" in text
    assert "| cpu | iql | factored |" in text and text.count(" A |") == 1 and text.count(" B |") == 1


def test_same_cpu_name_with_another_isa_is_another_host(tmp_path):
    """Sessions land on an AVX2 and an AVX512 machine that both say "AMD EPYC": their rows are two hosts, and a
    goal remeasured on one keeps the other's number beside it instead of replacing it."""
    res, doc, argv, row = _one_measured_row(tmp_path)
    spin = {**row, "actor": "spin", "preset": "paper", "gflop_per_s": 0.9 * row["limit_gflop_per_s"]}
    other_isa = "AVX2" if row["cpu_isa"] != "AVX2" else "AVX512"
    with open(res, "a") as f:
        f.write(json.dumps({**spin, "cpu_isa": other_isa, "gflop_per_s": 0.5 * row["limit_gflop_per_s"]}) + "\n")
        f.write(json.dumps(spin) + "\n")  # the same row measured again on this host, later
    assert train_step.main(argv + ["--render-only", "--write-doc", str(doc)]) == 0
    text = doc.read_text()
    assert f"**A** = {row['host']}, {row['cpu_isa']} (2 rows), **B** = {row['host']}, {other_isa} (0 rows in the tables" in text
    goals = [ln for ln in text.splitlines() if ln.startswith("| SPIN-IQL paper, cheetah")]
    assert goals == ["| SPIN-IQL paper, cheetah (A): >= 75% of limit | 90.0% | yes |",
                     "| SPIN-IQL paper, cheetah (B): >= 75% of limit | 50.0% | no |"]
    assert text.count("| paper | iql | spin |") == 1  # the tables show the newest row only


def test_spin_cached_goal_refuses_rows_from_two_hosts(tmp_path):
    """The 10x goal divides two rows' times, which means nothing when they ran on different machines."""
    res, doc, argv, row = _one_measured_row(tmp_path)
    with open(res, "a") as f:  # spin here; spin-cached 20x faster, but measured on another host
        f.write(json.dumps({**row, "actor": "spin", "ms_median": 20 * row["ms_median"]}) + "\n")
        f.write(json.dumps({**_rows(res, "setup")[0], "cpu": "Other CPU 9000"}) + "\n")
        f.write(json.dumps({**{k: v for k, v in row.items() if k != "host"}, "actor": "spin-cached"}) + "\n")
    assert train_step.main(argv + ["--render-only", "--write-doc", str(doc)]) == 0
    goal = next(line for line in doc.read_text().splitlines() if line.startswith("| spin-cached vs spin, IQL cheetah cpu"))
    assert "| 20.0x | no" in goal and "different hosts: not comparable" in goal


def test_step_breakdown_splits_a_step_and_renders(tmp_path, capsys):
    import step_breakdown

    res, doc = tmp_path / "bd.jsonl", tmp_path / "BD.md"
    threads = torch.get_num_threads()
    try:
        argv = ["--rows", "cheetah:cpu:iql:factored,maze:cpu:asm:asm", "--steps", "4", "--asm-steps", "4",
                "--warmup", "1", "--transitions", "2000", "--threads", "1", "--results", str(res)]
        assert step_breakdown.main(argv + ["--write-doc", str(doc)]) == 0
    finally:
        torch.set_num_threads(threads)
    rows = _rows(res, "breakdown")
    assert [(r["shape"], r["algo"]) for r in rows] == [("cheetah", "iql"), ("maze", "asm")]
    for r in rows:
        # the split is of a real step: matmul kernels took time, and the step is more than its matmuls
        assert 0 < r["matmul_ms"] < r["ms_median"] and r["rest_ms"] == pytest.approx(r["ms_median"] - r["matmul_ms"], abs=1e-2)
        assert r["gflop_per_step"] > 0 and r["fraction_of_limit"] < r["matmul_fraction_of_limit"]
        assert r["top_rest_ops"] and all(not k.endswith("mm") for k, _ in r["top_rest_ops"])
    text = doc.read_text()
    assert "| cheetah cpu IQL factored |" in text and "| maze cpu ASM pretraining |" in text
    err = capsys.readouterr().err  # a progress line per row, before its measurement
    assert "[1/2] cheetah:cpu:iql:factored" in err and "[2/2] maze:cpu:asm:asm" in err
    for bad, msg in ((["--rows", "cheetah:paper:iql"], "is not shape:preset:algo:actor"),
                     (["--rows", "cat:paper:iql:spin"], "shape 'cat' is not one of"),
                     (["--rows", "cheetah:paper:iql:lstm"], "is not an algorithm"),
                     (["--steps", "0"], "--steps: must be at least 1")):
        with pytest.raises(SystemExit):
            step_breakdown.main(bad)
        out = capsys.readouterr()
        assert msg in out.err + out.out


def test_breakdown_page_is_the_render_of_its_results(tmp_path):
    """docs/SPEED_BREAKDOWN.md is what --render-only makes of the committed results file (no hand edits)."""
    import step_breakdown

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "SPEED_BREAKDOWN.md"
    results = root / "benchmarks" / "results" / "step_breakdown_cpu.jsonl"
    assert step_breakdown.main(["--results", str(results), "--write-doc", str(out), "--render-only"]) == 0
    page = (root / "docs" / "SPEED_BREAKDOWN.md").read_text()
    ours = out.read_text()
    # the regenerate line names the paths as given; everything from the table on must match
    assert ours[ours.index("| row |"):] == page[page.index("| row |"):]
