"""ASM structure diagnostics and the early-learning statistics: closed-form checks on tiny inputs."""

import csv
import json

import numpy as np
import pytest
import torch

from spinrl.evaluation.structure import leave_one_out_correct, marginal_modes, structure_diagnostics
from spinrl.experiments import early
from spinrl.models import ActionStructureModel, ModelConfig

TINY = ModelConfig(d_model=16, n_heads=2, n_blocks=1, head_hidden=16, mlp_hidden=16, dropout=0.0)


def test_leave_one_out_matches_masking_each_slot_by_hand():
    torch.manual_seed(0)
    nvec = (3, 2, 4)
    asm = ActionStructureModel(5, nvec, TINY).eval()
    obs, act = torch.randn(7, 5), torch.stack([torch.randint(0, m, (7,)) for m in nvec], 1)
    got = leave_one_out_correct(asm, obs, act, chunk_rows=6)  # chunks of 2 rows: the chunking must not matter
    for i in range(3):
        tokens = act.clone()
        tokens[:, i] = nvec[i]
        want = asm(obs, tokens)[:, i].argmax(-1) == act[:, i]
        assert torch.equal(got[:, i], want)


def test_independence_baseline_and_ratios():
    acts = np.array([[0, 1], [0, 1], [1, 1], [0, 0]])
    assert marginal_modes(acts, [2, 2]).tolist() == [0, 1]
    asm = ActionStructureModel(3, (2, 2), TINY).eval()
    batch = [(torch.zeros(4, 3), torch.as_tensor(acts))]
    d = structure_diagnostics(asm, asm, batch, marginal_modes(acts, [2, 2]))
    assert d["independent"]["slot_acc"] == [0.75, 0.75] and d["independent"]["exact"] == 0.5
    assert d["asm"] == d["random"] and d["rows"] == 4


def test_iqm_bootstrap_and_paired_differences():
    assert early.iqm([1, 2, 3, 4, 100, -50, 5, 6]) == pytest.approx(np.mean([2, 3, 4, 5]))
    assert early.iqm([1.0, 2.0, 9.0]) == pytest.approx(4.0)  # 25% of 3 rounds down: the mean
    lo, hi = early.stratified_bootstrap([[1.0, 2.0, 3.0], [10.0, 20.0]])
    assert 1.0 <= lo <= hi <= 20.0
    assert early.stratified_bootstrap([[5.0, 5.0]]) == (5.0, 5.0)
    p = early.paired({0: 3.0, 1: 5.0, 2: 1.0}, {0: 1.0, 1: 1.0, 3: 9.0})
    assert p["n"] == 2 and p["mean"] == pytest.approx(3.0) and p["wins"] == 2 and p["diffs"] == [2.0, 4.0]


def _run(root, name, actor, seed, returns, steps=(1000, 2000), wall=(10.0, 20.0), asm=None, step_budget=None,
         transitions=None):
    d = root / name
    d.mkdir(parents=True)
    cj = {"config": {"algo": "iql", "actor": actor, "seed": seed, "steps": steps[-1], "preset": "cpu", "asm": asm},
          "dataset": {"env_id": "maze", "env_kwargs": {"actuators": 5}, "level": "medium-expert"},
          "asm_wall_seconds": 30.0 if asm else 0.0}
    (d / "config.json").write_text(json.dumps(cj))
    with open(d / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "wall_seconds", "grad_steps_per_s", "q", "v", "weight", "eval_return_mean", "normalized_score"])
        prev_s, prev_t = 0, 0.0
        for s, t, r in zip(steps, wall, returns):  # no evaluation time: steps/s is the whole interval
            w.writerow([s, t, (s - prev_s) / (t - prev_t), 1.0, 0.5, 0.9, r, r])
            prev_s, prev_t = s, t
    (d / "record.json").write_text(json.dumps({"num_transitions": transitions} if transitions else {}))


def test_early_page_from_records(tmp_path):
    runs, ref = tmp_path / "runs", tmp_path / "ref"
    a = runs / "asm" / "task" / "asm_b0"
    a.mkdir(parents=True)
    (a / "asm.json").write_text(json.dumps({"signature": {"env_id": "maze", "env_kwargs": {"actuators": 5}},
                                            "dataset": {"level": "medium-expert"}, "max_steps": 5000, "steps_run": 4000,
                                            "stop_reason": "plateau", "masking": "bert", "wall_seconds": 30.0}))
    for seed in range(3):
        _run(runs, f"f{seed}", "factored", seed, [10, 20 + seed])
        _run(runs, f"s{seed}", "spin", seed, [60, 50 + seed], asm="/elsewhere/asm/task/asm_b0")
        _run(ref, f"r{seed}", "factored", seed, [50, 55, 60, 60, 60, 60], steps=tuple(range(1000, 7000, 1000)),
             wall=tuple(float(x) for x in range(10, 70, 10)))
    _run(runs, "f3", "factored", 3, [10, 21])  # a factored seed without a long reference run
    rep = early.build(runs, step=2000, reference=ref)
    t = rep["tasks"]["maze[actuators=5] medium-expert"]
    names = list(t["variants"])
    assert names == ["F-IQL", "SPIN-IQL [ASM budget 5,000 steps, bert]"]
    assert t["reference"]["value"] == pytest.approx(59.0)  # last five of 50,55,60,60,60,60
    spin = t["variants"][names[1]]
    assert spin["return"]["iqm"] == pytest.approx(51.0) and spin["asm"]["stop_reason"] == "plateau"
    # 95% of 59 = 56.05: SPIN reaches it at its first evaluation (10 s) + 30 s of ASM; factored's own short runs
    # never do, so its time is read off the reference run of the same seed (step 3,000: 30 s of gradient steps)
    f = t["variants"]["F-IQL"]
    assert spin["time_to_target_iqm_s"] == pytest.approx(40.0) and f["time_to_target_iqm_s"] == pytest.approx(30.0)
    assert f["time_to_target_source"] == ["reference"] * 3 + ["run"] and f["time_to_target_partial"]
    assert t["paired"][f"{names[1]} - F-IQL"]["mean"] == pytest.approx(30.0)
    md = early.format_markdown(rep, "spinrl report x --early-step 2000")
    assert md.startswith("# Early learning") and "86.4 [" in md  # SPIN at 51 of 59 = 86.4%
    # the answer leads: the Table-4 test (SPIN >= 70%, factored < 50% of the reference) and the speed ratio
    assert "Table-4 test" in md and "**undecided**" in md and "F-IQL 0.5 min (3/4 seeds, the long reference runs)" in md
    assert "(0.75x F-IQL's speed)" in md  # SPIN's 40 s (ASM included) against factored's 30 s
    assert f"Single seeds at step 2,000 (lowest-highest): F-IQL 20-22; {names[1]} 50-52." in md
    assert "In wall clock SPIN is slower" not in md  # SPIN reached the target: its time says it all
    spin["time_to_target_iqm_s"], spin["time_to_target_s"] = None, [None] * 3  # as if it had fallen short
    assert "In wall clock" not in "\n".join(early.answer(rep))  # its 30 s of ASM tie F-IQL's 30 s: not "more"
    spin["asm_seconds"] = 45.0
    assert f"- In wall clock SPIN is slower here: {names[1]}'s ASM pretraining alone took 0.8 min, more than " \
        "F-IQL's 0.5 min to the target." in "\n".join(early.answer(rep))
    # time runs at the run's median pace: a paused stretch (1 step/s for one row) does not count
    rows = [{"step": 1000, "grad_steps_per_s": 100.0}, {"step": 2000, "grad_steps_per_s": 1.0},
            {"step": 3000, "grad_steps_per_s": 100.0}]
    assert early._train_seconds({"rows": rows}, 3000) == pytest.approx(30.0)
    # runs evaluated greedily are their own rows, never pooled with or compared against sampled ones
    greedy = {"config": {"algo": "iql", "actor": "saint", "preset": "cpu", "greedy": True}}
    assert early._variant(greedy, None) == "SAINT-IQL" + early.GREEDY
    # a task with no converged reference says its Table-4 test waits for one (no percentage, no time)
    # fewer than 3 reference seeds: the verdict line says how many
    one = early.format_markdown(early.build(runs, step=2000, reference=ref / "r0"), "x")
    assert "(59.0, 1 reference seed so far)" in one and "reference seed so far" not in md
    lone = early.format_markdown(early.build(runs, step=2000, reference=tmp_path / "none"), "x")
    assert "**waits for a reference**" in lone and "Time to 95%" not in lone
    assert "waits for" not in early.format_markdown(early.build(runs, step=2000), "x")  # a page without references


def test_early_sections_split_by_dataset_size(tmp_path):
    """The data-size control: runs on a smaller set of the same task get their own section, measured against the
    task's converged reference (said on the page), and never borrow the long runs' times (other data)."""
    runs, ref = tmp_path / "runs", tmp_path / "ref"
    for seed in range(3):
        _run(runs, f"f{seed}", "factored", seed, [10, 20], transitions=1000)
        _run(runs, f"g{seed}", "factored", seed, [10, 30], transitions=100)
        _run(ref, f"r{seed}", "factored", seed, [50] * 6, steps=tuple(range(1000, 7000, 1000)),
             wall=tuple(float(x) for x in range(10, 70, 10)), transitions=1000)
    rep = early.build(runs, step=2000, reference=ref)
    full, small = "maze[actuators=5] medium-expert", "maze[actuators=5] medium-expert, 100 transitions"
    assert set(rep["tasks"]) == {full, small}
    f_full, f_small = rep["tasks"][full]["variants"]["F-IQL"], rep["tasks"][small]["variants"]["F-IQL"]
    assert f_full["return"]["iqm"] == pytest.approx(20.0) and f_small["return"]["iqm"] == pytest.approx(30.0)
    assert rep["tasks"][small]["reference"]["value"] == pytest.approx(50.0)
    assert f_full["time_to_target_source"] == ["reference"] * 3 and f_small["time_to_target_source"] == ["run"] * 3
    md = early.format_markdown(rep, "spinrl report x --early-step 2000")
    assert md.count("trained on 1,000 transitions, this section's runs on 100") == 1
    _run(runs, "u0", "factored", 0, [10, 25])  # no record of its size: its own section, never pooled
    assert "maze[actuators=5] medium-expert, dataset size unknown" in early.build(runs, step=2000)["tasks"]


def test_early_page_pools_several_roots(tmp_path):
    """--pool: the grid's records beside the controls' read as one tree (ASMs found in either), and the page's
    rebuild command names every root."""
    from spinrl.errors import ConfigError
    from spinrl.experiments.report import ReportOptions

    a = tmp_path / "both" / "a"
    for seed in range(3):
        _run(a, f"f{seed}", "factored", seed, [10, 20 + seed])
        _run(tmp_path / "both" / "b", f"s{seed}", "saint", seed, [30, 40 + seed])
    pooled = early.build([a, tmp_path / "both" / "b"], step=2000)
    assert pooled["tasks"] == early.build(tmp_path / "both", step=2000)["tasks"]
    assert list(pooled["tasks"]["maze[actuators=5] medium-expert"]["variants"]) == ["F-IQL", "SAINT-IQL"]
    doc = early.write([a, tmp_path / "both" / "b"], tmp_path / "E.md", step=2000)
    assert f"spinrl report {a} --pool {tmp_path / 'both' / 'b'} --early-step 2000" in doc.read_text()
    with pytest.raises(ConfigError, match="--pool"):
        ReportOptions(str(a), pool=[str(a)])


def test_paper_table4_lookup():
    """The page's Table-4 column: the paper's cell for the same task, level and actor; none for other rows."""
    cheetah = ("dmc:cheetah-run", {"bins": 3}, "medium-expert")
    assert early.paper_table4(*cheetah, "SPIN-IQL [ASM budget 20,000 steps, bert]") == 90.6
    assert early.paper_table4(*cheetah, "F-IQL") == 30.3 and early.paper_table4(*cheetah, "SAINT-IQL") == 46.1
    assert early.paper_table4(*cheetah, "SAINT-IQL" + early.GREEDY) is None
    assert early.paper_table4(*cheetah, "SPIN-cached-IQL") is None
    assert early.paper_table4(*cheetah, "SPIN-IQL [ASM random (0 steps), bert]", random_asm=True) is None
    assert early.paper_table4("dmc:cheetah-run", {"bins": 10}, "medium-expert", "F-IQL") is None
    assert early.paper_table4("maze", {"actuators": 5}, "medium-expert", "F-IQL") is None


def test_table4_verdict_waits_for_a_rising_reference(tmp_path):
    """Against a reference still rising, 'met' is undecided and the page names the bound that would settle it."""
    runs, ref = tmp_path / "runs", tmp_path / "ref"
    for seed in range(3):
        _run(runs, f"f{seed}", "factored", seed, [10, 20])
        _run(runs, f"s{seed}", "spin", seed, [60, 56], asm="/elsewhere/asm/task/asm_b0")
        _run(ref, f"r{seed}", "factored", seed, [10] * 5 + [60] * 5, steps=tuple(range(1000, 11000, 1000)),
             wall=tuple(float(x) for x in range(10, 110, 10)))
    md = early.format_markdown(early.build(runs, step=2000, reference=ref), "x")
    assert "**undecided**" in md and "ends between 40 and 80, the returns of which F-IQL's 20 is 50% and SPIN's best " \
        "56 is 70%" in md
    # factored at 40 needs a reference above 80, SPIN's 56 one at most 80: no higher reference meets it, settled
    late = tmp_path / "late"
    for seed in range(3):
        _run(late, f"f{seed}", "factored", seed, [10, 40])
        _run(late, f"s{seed}", "spin", seed, [60, 56], asm="/elsewhere/asm/task/asm_b0")
    md = early.format_markdown(early.build(late, step=2000, reference=ref), "x")
    assert "**not met**" in md and "no higher converged value can meet it" in md
    # against a flat reference the verdict names the half that failed: a factored actor that already learns
    flat = tmp_path / "flat"
    for seed in range(3):
        _run(flat, f"r{seed}", "factored", seed, [60] * 6, steps=tuple(range(1000, 7000, 1000)),
             wall=tuple(float(x) for x in range(10, 70, 10)))
    md = early.format_markdown(early.build(late, step=2000, reference=flat), "x")
    assert "**not met** (F-IQL alone is already at 67% by step 2,000). F-IQL 67%" in md
    short = tmp_path / "short"
    for seed in range(3):
        _run(short, f"f{seed}", "factored", seed, [10, 12])
        _run(short, f"s{seed}", "spin", seed, [60, 30], asm="/elsewhere/asm/task/asm_b0")
    md = early.format_markdown(early.build(short, step=2000, reference=flat), "x")
    assert "**not met** (no SPIN row reaches 70%, the best is at 50%). F-IQL 20%" in md


def test_greedy_twins_are_compared_on_their_fall_from_the_peak(tmp_path):
    runs = tmp_path / "runs"
    for seed in range(3):
        _run(runs, f"f{seed}", "factored", seed, [100, 50])
        _run(runs, f"g{seed}", "factored", seed, [100, 90])
        _run(runs, f"s{seed}", "spin", seed, [100, 100])
        cj = json.loads((runs / f"g{seed}" / "config.json").read_text())
        cj["config"]["greedy"] = True
        (runs / f"g{seed}" / "config.json").write_text(json.dumps(cj))
    md = early.format_markdown(early.build(runs, step=2000), "x")
    assert "F-IQL 50% sampled (3 seeds), 10% greedy (3 seeds)" in md
