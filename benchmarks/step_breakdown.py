"""Where a step's time goes: matmul kernels against everything else, for the rows of the 75% goals.

docs/SPEED.md's goals put a whole step's model FLOP/s against a large plain fp32 matmul (the limit line).
A step also runs work that does no counted FLOPs: dropout masks, GELU, layer norms, residual adds, layout
copies, the optimizer. This script splits the step's time, with torch.profiler's self time per op, into
the matmul kernels (mm, addmm, bmm, baddbmm, ...) and the rest, and prints per row:

- the step's own ms (median, unprofiled) and its fraction of the limit, as train_step.py measures it;
- the matmul kernels' ms (profiled) and their own FLOP/s as % of the limit (how near the limit the
  matmuls of the step's shapes run);
- the rest's ms (step minus matmul kernels) and its biggest ops;
- the ceiling: the fraction the step would reach if the rest took no time at all, and the rest's
  budget, the ms it may take for the step to reach 75% with its matmuls as they are (negative: 75% is
  out of reach even with the rest at zero).

    python benchmarks/step_breakdown.py --threads 1 --results benchmarks/results/step_breakdown_cpu.jsonl \\
        --write-doc docs/SPEED_BREAKDOWN.md

Rows (``--rows``, comma list of shape:preset:algo:actor, ``asm`` as algo for the pretraining step) default
to the goals' rows: SPIN-IQL and the ASM step at the paper preset on the cheetah and dog shapes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step as ts  # noqa: E402  (beside this file: the same setup, step, limit line and FLOP count)

from spinrl.utils.checkpoint import write_text_atomic  # noqa: E402
from spinrl.utils.memory import keep_freed_memory  # noqa: E402

DEFAULT_ROWS = "cheetah:paper:iql:spin,dog:paper:iql:spin,cheetah:paper:asm:asm,dog:paper:asm:asm"
MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::matmul_out",
              "aten::_scaled_dot_product_flash_attention_for_cpu",
              "aten::_scaled_dot_product_flash_attention_for_cpu_backward", "aten::mkldnn_rnn_layer",
              "aten::mkldnn_rnn_layer_backward", "aten::mkldnn_linear", "aten::mkldnn_matmul"}
GOAL = 0.75


def parse_rows(spec: str) -> list[tuple[str, str, str, str]]:
    rows = []
    for item in spec.split(","):
        parts = item.strip().split(":")
        if len(parts) != 4:
            raise ValueError(f"--rows: {item!r} is not shape:preset:algo:actor (e.g. dog:paper:iql:spin, "
                             "cheetah:paper:asm:asm)")
        shape, preset, algo, actor = parts
        if shape not in ts.SHAPES:
            raise ValueError(f"--rows: shape {shape!r} is not one of {sorted(ts.SHAPES)}")
        if preset not in ts.PRESETS:
            raise ValueError(f"--rows: preset {preset!r} is not one of {sorted(ts.PRESETS)}")
        if algo != "asm" and (algo not in ("iql", "awac", "bcq") or actor not in ts.ACTORS.split(",")):
            raise ValueError(f"--rows: {algo}:{actor} is not an algorithm (iql, awac, bcq, asm) and actor "
                             f"({ts.ACTORS}, or asm)")
        rows.append((shape, preset, algo, actor))
    return rows


def profile_split(step, n: int) -> tuple[float, float, list[tuple[str, float]]]:
    """(matmul kernels' ms per step, all ops' ms per step, the biggest other ops) over n profiled steps."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    ev = prof.key_averages()
    mm = sum(e.self_cpu_time_total for e in ev if e.key in MATMUL_OPS) / 1000 / n
    total = sum(e.self_cpu_time_total for e in ev) / 1000 / n
    other = sorted(((e.key, e.self_cpu_time_total / 1000 / n) for e in ev if e.key not in MATMUL_OPS),
                   key=lambda kv: -kv[1])
    return mm, total, other


def measure(shape: str, preset: str, algo: str, actor: str, args, tmp: str, limit: float) -> dict:
    obs_dim, nvec = ts.SHAPES[shape]
    ds = ts.synthetic(obs_dim, nvec, args.transitions)
    if algo == "asm":
        step, _ = ts.asm_step(ds, preset, args.device)
    else:
        asm_dir = ts.make_asm_dir(ds, preset, os.path.join(tmp, shape)) if actor.startswith("spin") else None
        _, _, make_step = ts.train_setup(ds, os.path.join(tmp, f"data_{shape}"), algo, actor, preset, asm_dir,
                                         args.device)
        step = make_step(False)
    n = args.steps if algo != "asm" else args.asm_steps
    med = statistics.median(ts.time_it(step, n, args.warmup))
    mm_ms, prof_ms, other = profile_split(step, max(3, n // 4))
    flops = ts.count_flops(step)
    gflop = flops / 1e9
    rest = med - mm_ms
    budget = gflop / (GOAL * limit) * 1000 - mm_ms  # ms the rest may take for the step to reach the goal
    return {"kind": "breakdown", "shape": shape, "preset": preset, "algo": algo, "actor": actor, "n": n,
            "ms_median": round(med, 3), "gflop_per_step": round(gflop, 4),
            "fraction_of_limit": round(gflop / med * 1000 / limit, 4),
            "matmul_ms": round(mm_ms, 3), "matmul_fraction_of_limit": round(gflop / mm_ms * 1000 / limit, 4),
            "rest_ms": round(rest, 3), "rest_share": round(rest / med, 4),
            "rest_budget_ms_for_goal": round(budget, 3), "profiled_ms": round(prof_ms, 3),
            "top_rest_ops": [[k, round(v, 3)] for k, v in other[:6]]}


def write_doc(path: str, rows: list[dict], results_path: str | None) -> None:
    regen = "python benchmarks/step_breakdown.py --threads 1" + (
        f" --results {ts._rel(results_path)}" if results_path else "") + f" --write-doc {ts._rel(path)}"
    hosts = sorted({r["host"] for r in rows})
    lines = [
        "# Where a step's time goes (matmul kernels against the rest)",
        "",
        f"Generated by `benchmarks/step_breakdown.py`; do not edit by hand. Regenerate with `{regen}`.",
        "",
        "The 75% goals of [SPEED.md](SPEED.md) put a step's model FLOP/s against a large plain fp32 matmul "
        "(the limit line). Here each step's time is split, with torch.profiler's self time per op, into the "
        "matmul kernels (mm, addmm, bmm, baddbmm) and the rest (dropout masks, GELU, layer norms, residual adds, "
        "layout copies, the optimizer: work without counted FLOPs, bound by memory bandwidth).",
        "",
        "- `step ms`: median of the unprofiled step; `% of limit`: the step's model FLOP/s against the limit line "
        "measured in the same invocation (as in SPEED.md).",
        "- `matmul ms`: the matmul kernels' self time (profiled); `matmuls' % of limit`: their own FLOP/s, i.e. "
        "the step's fraction if the rest took no time at all (the ceiling).",
        "- `biggest rest ops`: self time per step of the largest non-matmul ops in the profiled steps, which run "
        "slower than unprofiled ones (per-op overhead; `profiled_ms` in the JSON lines), so they rank the rest "
        "rather than add up to it.",
        f"- `rest budget for {GOAL:.0%}`: the ms the rest may take for the step to reach the goal with its matmuls "
        "as they are; negative means the goal is out of reach even with the rest at zero.",
        f"- Hosts: {', '.join(hosts)}; torch threads {', '.join(sorted({str(r['threads']) for r in rows}))}, "
        f"torch {', '.join(sorted({r.get('torch', '?') for r in rows}))}. `load`: the 1-minute load average when the "
        "row was measured (2 cores: above ~1 another job shared the machine and the times grew).",
        "",
        "| row | host | load | step ms | % of limit | matmul ms | matmuls' % of limit | rest ms (share) | "
        f"rest budget for {GOAL:.0%} (ms) | biggest rest ops (ms per step) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        name = (f"{r['shape']} {r['preset']} ASM pretraining" if r["algo"] == "asm"
                else f"{r['shape']} {r['preset']} {r['algo'].upper()} {r['actor']}")
        ops = ", ".join(f"{k.removeprefix('aten::')} {v:.1f}" for k, v in r["top_rest_ops"][:4])
        lines.append(f"| {name} | {r['host']} | {r['loadavg'][0]:.1f} | {r['ms_median']:.1f} | {r['fraction_of_limit']:.0%} | "
                     f"{r['matmul_ms']:.1f} | {r['matmul_fraction_of_limit']:.0%} | {r['rest_ms']:.1f} "
                     f"({r['rest_share']:.0%}) | {r['rest_budget_ms_for_goal']:.1f} | {ops} |")
    for h in hosts:
        hr = [r for r in rows if r["host"] == h]
        mmf = [r["matmul_fraction_of_limit"] for r in hr]
        share = [r["rest_share"] for r in hr]
        over = [r["rest_ms"] / r["rest_budget_ms_for_goal"] for r in hr if r["rest_budget_ms_for_goal"] > 0]
        lines += ["", f"Reading ({h}): the matmul kernels alone run at {min(mmf):.0%}-{max(mmf):.0%} of the limit; the "
                  f"rest takes {min(share):.0%}-{max(share):.0%} of each step"
                  + (f", {min(over):.1f}-{max(over):.1f}x the time it may take for {GOAL:.0%}" if over else "")
                  + (f"; {len(hr) - len(over)} row(s) cannot reach {GOAL:.0%} even with the rest at zero"
                     if len(over) < len(hr) else "") + "."]
    limits: dict[str, list[float]] = {}
    for r in rows:
        limits.setdefault(r["host"], []).append(r["limit_gflop_per_s"])
    lines += ["", "Limit line (a 2048 x 2048 fp32 matmul, GFLOP/s, measured at the start of each invocation): " + "; ".join(
        f"{h}: {min(v):.1f}" + (f"-{max(v):.1f}" if max(v) > min(v) else "") for h, v in limits.items()) + ".", ""]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_text_atomic(path, "\n".join(lines))


def read_rows(path: str) -> list[dict]:
    """The newest row of each (row, host, threads) in a results file (a torn last line is skipped)."""
    newest: dict[tuple, dict] = {}
    for r in ts.json_lines(path):
        if r.get("kind") == "breakdown":
            newest[(r["shape"], r["preset"], r["algo"], r["actor"], r["host"], r["threads"])] = r
    return list(newest.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=DEFAULT_ROWS, help="comma list of shape:preset:algo:actor (asm:asm for the "
                                                         "pretraining step)")
    ap.add_argument("--steps", type=int, default=60, help="timed steps per training row (median); a quarter of it "
                                                          "is profiled")
    ap.add_argument("--asm-steps", type=int, default=12, help="timed steps per ASM row")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--transitions", type=int, default=20_000, help="synthetic transitions per shape")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", choices=["cpu"], help="the profiler split is CPU self time")
    ap.add_argument("--results", default=None, metavar="JSONL", help="append each row; --write-doc renders the "
                                                                     "newest row per (row, host) of the file")
    ap.add_argument("--write-doc", default=None, metavar="PATH")
    ap.add_argument("--render-only", action="store_true", help="with --results and --write-doc: render the file's "
                                                                "rows, measure nothing")
    args = ap.parse_args(argv)
    if args.render_only:
        if not (args.results and args.write_doc and os.path.exists(args.results)):
            ap.error("--render-only needs --results FILE (an existing results file) and --write-doc PATH")
        write_doc(args.write_doc, read_rows(args.results), args.results)
        print(f"wrote {args.write_doc} from {args.results}", file=sys.stderr)
        return 0
    for flag in ("steps", "asm_steps", "transitions"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')}: must be at least 1, got {getattr(args, flag)}")
    if args.threads is not None:
        if args.threads < 1:
            ap.error(f"--threads: must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    try:
        rows = parse_rows(args.rows)
    except ValueError as e:
        ap.error(str(e))
    keep_freed_memory()  # as train and pretrain run
    head = {**ts.device_info(args.device), "code": ts.code_version()}
    limit = ts.limit_line(2048, 20, args.device)["gflop_per_s"]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, row in enumerate(rows, 1):  # a row takes seconds (cheetah) to minutes (dog ASM): say which runs
            print(f"[{i}/{len(rows)}] {':'.join(row)}: {args.steps if row[2] != 'asm' else args.asm_steps} timed steps, "
                  "then profiled ones", file=sys.stderr, flush=True)
            r = measure(*row, args, tmp, limit)
            r.update(host=f"{head['cpu']}, {head['cpu_isa']}", limit_gflop_per_s=limit, threads=head["torch_threads"],
                     torch=head["torch"],
                     code=head["code"], loadavg=[round(x, 2) for x in os.getloadavg()])
            ts._emit(r, args.results)
            out.append(r)
    if args.write_doc:
        write_doc(args.write_doc, read_rows(args.results) if args.results else out, args.results)
        print(f"wrote {args.write_doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
