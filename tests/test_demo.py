"""The demo end to end on a tiny Maze: SAINT beside SPIN, a stated target, the ASM's stop said, text from numbers."""

import json

from spinrl.experiments.demo import DemoConfig, demo


def test_demo_tiny_run_writes_honest_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPINRL_DATA", str(tmp_path / "data"))
    cfg = DemoConfig(out=str(tmp_path / "d"), actuators=3, transitions=600, steps=8, eval_every=4, eval_episodes=2,
                     seeds=(0,), asm_max_steps=4, methods=("factored", "saint", "spin"), threads=1, progress=False,
                     target_normalized=-1000.0, doc=str(tmp_path / "DEMO.md"))
    res = demo(cfg)
    said = capsys.readouterr().out
    assert "budget of max_steps" in said and "leave-one-out" in said and "ONE SEED" in said
    assert list(res["methods"]) == ["factored-IQL", "SAINT-IQL", "SPIN-IQL"]
    # a target every run reaches at its first evaluation: steps to target = eval_every, times include the ASM for SPIN
    for name, m in res["methods"].items():
        assert m["median_steps_to_target"] == 4
    assert res["methods"]["SPIN-IQL"]["median_time_to_target"] > res["asm"]["wall_seconds"]
    page = (tmp_path / "DEMO.md").read_text()
    assert "The ASM's part (SPIN vs SAINT" in page and json.loads((tmp_path / "d" / "results.json").read_text())["asm"]["steps_run"] == 4
