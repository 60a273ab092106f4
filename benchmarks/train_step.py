"""The project's speed report: gradient steps, ASM pretraining and a reference IQL step against a matmul limit.

Times the library's own ``gradient_step`` (and the trainer's spin-cached feature lookup) for every
algorithm x actor x preset on synthetic data of the cheetah-like (17, 6 x 3) and dog-like (223, 38 x 3 and
38 x 30) shapes, the ASM pretraining step, and a plain reference IQL step (benchmarks/reference_iql.py).
For each: median ms per step, steps/s, model FLOPs per step (torch's FlopCounterMode over one step) and
the achieved FLOP/s as a fraction of a large fp32 matmul timed in the same run (the "limit" line), so a
loaded or different machine still gives comparable fractions. One JSON line per measurement on stdout;
``--write-doc`` renders docs/SPEED.md (never edit it by hand).

    python benchmarks/train_step.py --results benchmarks/results/speed_cpu.jsonl --write-doc docs/SPEED.md
                                     # full report (~3 h on 2 cores): rerun the same command after a stop
    python benchmarks/train_step.py --quick --threads 1                                    # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_iql  # noqa: E402  (beside this file)

from spinrl.algorithms.common import Batch  # noqa: E402
from spinrl.algorithms.mam import MAMConfig, asm_loss  # noqa: E402
from spinrl.data import from_arrays  # noqa: E402
from spinrl.models import ActionStructureModel, ModelConfig  # noqa: E402
from spinrl.training.config import PRESETS, TrainConfig  # noqa: E402
from spinrl.training.trainer import _feature_source, build, gradient_step  # noqa: E402
from spinrl.utils.hardware import cpu_isa, native_bf16  # noqa: E402
from spinrl.utils.checkpoint import write_text_atomic  # noqa: E402
from spinrl.utils.memory import keep_freed_memory  # noqa: E402
from spinrl.utils.optim import FusedAdam  # noqa: E402

SHAPES = {"cheetah": (17, [3] * 6), "dog": (223, [3] * 38), "dog30": (223, [30] * 38), "maze": (2, [2] * 12)}
ACTORS = "factored,autoregressive,saint,spin,spin-cached"
SHAPES_FULL = ("cheetah", "dog", "dog30")  # the shapes of the full report (the default --shapes)
REF_ACTORS = ("factored", "saint", "spin")  # actors the reference IQL step implements
BF16_ACTORS = ("saint", "spin")  # transformer steps, where bf16 autocast could pay


def synthetic(obs_dim: int, nvec: list[int], n: int = 20_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    act = (rng.random((n, len(nvec))) * np.asarray(nvec)).astype(np.int64)
    trunc = np.zeros(n, bool)
    trunc[999::1000] = True
    return from_arrays(obs, act, rng.normal(size=n), np.zeros(n, bool), trunc, nvec=nvec,
                       next_observations=np.roll(obs, -1, 0))


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_it(fn, steps: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def time_interleaved(fns: dict, steps: int, warmup: int, block: int = 10) -> dict[str, list[float]]:
    """``time_it`` for several steps at once, in alternating blocks of ``block`` steps, so that a ratio
    between them (library vs reference, fp32 vs bf16) is not biased by load that changes during the row."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    while any(len(v) < steps for v in out.values()):
        for k, fn in fns.items():
            for _ in range(min(block, steps - len(out[k]))):
                t = time.perf_counter()
                fn()
                out[k].append((time.perf_counter() - t) * 1000)
    return out


def count_flops(fn) -> int:
    """Model FLOPs of one call (matmuls, attention). oneDNN is off while counting so that LSTM kernels
    decompose into counted matmuls; the timed runs keep it on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.backends.mkldnn.flags(enabled=False), FlopCounterMode(display=False) as fc:
            fn()
    return int(fc.get_total_flops())


def limit_line(n: int, reps: int, device: str) -> dict:
    """What a large plain fp32 matmul reaches here: the denominator of every fraction."""
    dev = torch.device(device)
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)

    def mm():
        torch.mm(a, b)
        _sync(dev)

    ms = statistics.median(time_it(mm, reps, 1))
    return {"kind": "limit", "matmul_n": n, "ms_median": round(ms, 3), "gflop_per_s": round(2 * n**3 / ms / 1e6, 2),
            "threads": torch.get_num_threads(), "date": datetime.datetime.now().isoformat(timespec="seconds")}


def _rate(flops: int, ms: float) -> float:
    return round(flops / ms / 1e6, 3)  # GFLOP/s


def make_asm_dir(ds, preset: str, tmp: str) -> str:
    """A randomly initialized ASM directory with the right signature, so `spin` and `spin-cached` can be timed."""
    from spinrl.utils.checkpoint import CHECKPOINT_SCHEMA, save_atomic

    model = ModelConfig(**{**PRESETS[preset]["model"].__dict__})
    asm = ActionStructureModel(ds.observation_dim, ds.nvec, model)
    d = os.path.join(tmp, f"asm_{preset}")
    os.makedirs(d, exist_ok=True)
    save_atomic({"schema": CHECKPOINT_SCHEMA, "kind": "asm", "model": asm.state_dict()}, os.path.join(d, "asm.pt"))
    with open(os.path.join(d, "asm.json"), "w") as f:
        json.dump({"signature": ds.signature, "model": model.__dict__, "wall_seconds": 0.0, "chosen_epoch": 0,
                   "masking": "variable"}, f)
    return d


def train_setup(ds, data_path: str, algo: str, actor: str, preset: str, asm_dir: str | None, device: str):
    """The trainer's setup for one row, and its step as the trainer runs it: sample indices, gather the batch
    on the device, hand spin-cached its cached features (the trainer's own lookup into the fp16 memmap), then
    ``gradient_step``. Returns (setup, config, make_step); ``make_step(bf16)`` gives the step."""
    cfg = TrainConfig(dataset=data_path, out="<none>", algo=algo, actor=actor, preset=preset, asm=asm_dir,
                      eval_every=0, device=device, progress=False)
    s = build(cfg, dataset=ds)
    features = _feature_source(s)  # None unless spin-cached; builds the cache beside data_path once
    rng = np.random.default_rng(0)
    B = cfg.resolved()["batch_size"]
    dev = s.device

    def make_step(bf16: bool):
        sp = dataclasses.replace(s, cfg=dataclasses.replace(cfg, precision="bf16")) if bf16 else s  # --precision bf16

        def step():
            idx = ds.sample_indices(B, rng)
            batch = Batch(*ds.batch_at(idx, device=dev))
            if features is not None:
                features(batch, idx)
            gradient_step(sp, batch)
            _sync(dev)

        return step

    return s, cfg, make_step


def bench_train(ds, data_path: str, algo: str, actor: str, preset: str, asm_dir: str | None, args) -> dict:
    """Time the row's step (:func:`train_setup`), interleaved with its bf16 and reference steps where it has them."""
    s, cfg, make_step = train_setup(ds, data_path, algo, actor, preset, asm_dir, args.device)
    B = cfg.resolved()["batch_size"]
    dev = s.device
    rng = np.random.default_rng(0)
    step = make_step(False)
    fns = {"lib": step}
    if args.bf16 and algo == "iql" and actor in BF16_ACTORS:
        fns["bf16"] = make_step(True)
    if args.reference and algo == "iql" and actor in REF_ACTORS:
        ref = reference_iql.reference_from_setup(s)

        def ref_step():
            reference_iql.iql_step(ref, *ds.sample(B, rng, device=dev))
            _sync(dev)

        fns["ref"] = ref_step
    times = time_interleaved(fns, args.steps, args.warmup)  # ratios see the same load
    med = statistics.median(times["lib"])
    flops = count_flops(step)
    r = {"kind": "train_step", "algo": algo, "actor": actor, "preset": preset, "batch": B,
         "ms_median": round(med, 3), "grad_steps_per_s": round(1000 / med, 2), "n": args.steps,
         "gflop_per_step": round(flops / 1e9, 4), "gflop_per_s": _rate(flops, med), "interleaved": len(fns) > 1}
    if "bf16" in fns:
        bmed = statistics.median(times["bf16"])
        r.update(bf16_ms_median=round(bmed, 3), bf16_speedup=round(med / bmed, 3))
    if "ref" in fns:
        rmed = statistics.median(times["ref"])
        rflops = count_flops(ref_step)
        r.update(ref_ms_median=round(rmed, 3), ref_gflop_per_step=round(rflops / 1e9, 4),
                 ref_over_lib=round(rmed / med, 3))
    return r


def asm_step(ds, preset: str, device: str):
    """One pretraining step exactly as ``spinrl pretrain`` runs it (sample, masked loss, clip, Adam)."""
    p = PRESETS[preset]
    dev = torch.device(device)
    asm = ActionStructureModel(ds.observation_dim, ds.nvec, p["model"]).to(dev)
    opt = FusedAdam(asm.parameters(), lr=p["asm_lr"])  # as spinrl pretrain
    rng = np.random.default_rng(0)
    B = p["asm_batch_size"]
    mam = MAMConfig()

    def step():
        s, a, _, _, _ = ds.sample(B, rng, device=dev)
        loss, _ = asm_loss(asm, s, a, mam)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(asm.parameters(), 1.0)
        opt.step()
        _sync(dev)

    return step, B


def bench_asm(ds, preset: str, args) -> dict:
    step, B = asm_step(ds, preset, args.device)
    med = statistics.median(time_it(step, args.asm_steps, args.asm_warmup))
    flops = count_flops(step)
    return {"kind": "asm_step", "preset": preset, "batch": B, "ms_median": round(med, 3),
            "samples_per_s": round(B * 1000 / med, 1), "n": args.asm_steps,
            "gflop_per_step": round(flops / 1e9, 4), "gflop_per_s": _rate(flops, med)}


def code_version() -> str | None:
    """The commit the measured code is at ("+dirty" with uncommitted changes), so rows from different code
    in one results file can be told apart; None outside a git checkout."""
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty else "")


def device_info(device: str) -> dict:
    """The machine named in the report: CPU model, cores, threads, torch, load average."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    dev = torch.device(device)
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "device": str(dev),
            "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
            "cpu_isa": cpu_isa(), "native_bf16": native_bf16(dev),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", "--shape", default="cheetah,dog,dog30", help=f"comma list of {sorted(SHAPES)}")
    ap.add_argument("--presets", default="cpu,paper")
    ap.add_argument("--algos", default="iql,awac,bcq")
    ap.add_argument("--actors", default=ACTORS)
    ap.add_argument("--steps", type=int, default=200, help="timed steps per measurement (median reported)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--asm-steps", type=int, default=50)
    ap.add_argument("--asm-warmup", type=int, default=5)
    ap.add_argument("--rows", type=int, default=20_000, help="synthetic transitions per shape")
    ap.add_argument("--limit-n", type=int, default=2048, help="size of the square fp32 matmul of the limit line")
    ap.add_argument("--limit-reps", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="few steps and rows: checks the script end to end, not the numbers")
    ap.add_argument("--no-reference", dest="reference", action="store_false", help="skip the reference IQL step")
    ap.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                    help="bf16-autocast timings of IQL saint/spin: auto = only where the device has native bf16 "
                         "matmuls (emulated bf16 matmuls are 22-77x slower and would take hours per row)")
    ap.add_argument("--no-bf16", dest="bf16", action="store_const", const="off", help="same as --bf16 off")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-asm", dest="asm", action="store_false", help="skip the ASM pretraining rows")
    ap.add_argument("--results", default=None, metavar="JSONL",
                    help="append every measurement to this file and skip the rows it already holds (same shape, "
                         "preset, algo, actor, steps, threads, device): a long full run can be stopped and rerun; "
                         "--write-doc then renders every row of the file")
    ap.add_argument("--remeasure", action="store_true",
                    help="with --results: measure the selected rows even where the file holds them (after a code "
                         "change); the report renders the newest row of each (shape, preset, algo, actor)")
    ap.add_argument("--write-doc", default=None, metavar="PATH", help="render the markdown report (docs/SPEED.md)")
    ap.add_argument("--render-only", action="store_true",
                    help="with --results and --write-doc: render the file's rows, measure nothing, append nothing")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.asm_steps, args.asm_warmup = 5, 2, 3, 1
        args.rows, args.limit_reps = min(args.rows, 2048), 5
    if args.threads:
        torch.set_num_threads(args.threads)
    kept = keep_freed_memory() if not args.render_only else None  # as train/pretrain do: rows time their steps
    shapes = args.shapes.split(",")
    for sh in shapes:
        if sh not in SHAPES:
            ap.error(f"--shapes: {sh!r} is not one of {sorted(SHAPES)}")
    actors = args.actors.split(",")
    if args.bf16 == "auto":
        args.bf16 = "on" if native_bf16(args.device) else "off"
        if args.bf16 == "off" and not args.render_only:
            print(f"bf16 timings skipped: {args.device} ({cpu_isa()}) has no native bf16 matmul (--bf16 on to force)",
                  file=sys.stderr)
    args.bf16 = args.bf16 == "on"
    head = {"kind": "setup", "quick": args.quick, "steps": args.steps, "warmup": args.warmup,
            "argv": sys.argv[1:] if argv is None else argv, "code": code_version(), **device_info(args.device)}
    context = {"threads": head["torch_threads"], "device": head["device"], "quick": args.quick}
    earlier = _read_results(args.results, context) if args.results else []
    done = set() if args.remeasure else {_key(r) for r in earlier if r["kind"] in ("train_step", "asm_step")}
    if args.remeasure and (args.render_only or not args.results):
        ap.error("--remeasure: needs --results FILE (the rows to measure again) and no --render-only")
    if args.render_only:
        if not (args.results and args.write_doc):
            ap.error("--render-only needs --results FILE and --write-doc PATH")
        if not any(r["kind"] in ("train_step", "asm_step") for r in earlier):
            ap.error(f"--results {args.results}: no rows measured with {context['threads']} torch thread(s) on "
                     f"{context['device']}; pass the --threads (and --device) the rows were measured with")
        head["loadavg_start"] = head["loadavg_end"] = None  # nothing measured by this invocation
        write_doc(args.write_doc, head, earlier, _full_grid(), args.results)
        print(f"wrote {args.write_doc} from {args.results}", file=sys.stderr)
        return 0
    start = limit_line(args.limit_n, args.limit_reps, args.device)
    results = earlier + [head, start]
    _emit(head, args.results)
    _emit(start, args.results)

    def record(r: dict) -> None:
        r.update(limit_gflop_per_s=start["gflop_per_s"], loadavg=[round(x, 2) for x in os.getloadavg()],
                 code=head["code"], host=head["gpu"] or head["cpu"], keep_freed_memory=kept, cpu_isa=head["cpu_isa"],
                 native_bf16=head["native_bf16"], **context)
        _emit(r, args.results)
        results.append(r)

    with tempfile.TemporaryDirectory() as tmp:
        for shape in shapes:
            obs_dim, nvec = SHAPES[shape]
            ds = synthetic(obs_dim, nvec, args.rows)
            data_path = os.path.join(tmp, f"data_{shape}")  # spin-cached's feature cache goes beside it
            for preset in args.presets.split(","):
                asm_dir = None
                for algo in args.algos.split(","):
                    for actor in actors:
                        want = {"kind": "train_step", "shape": shape, "preset": preset, "algo": algo, "actor": actor,
                                "n": args.steps, **context}
                        if _key(want) in done:
                            continue
                        if actor.startswith("spin") and asm_dir is None:
                            asm_dir = make_asm_dir(ds, preset, os.path.join(tmp, shape))
                        record({"shape": shape, **bench_train(ds, data_path, algo, actor, preset,
                                                              asm_dir if actor.startswith("spin") else None, args)})
                want = {"kind": "asm_step", "shape": shape, "preset": preset, "n": args.asm_steps, **context}
                if args.asm and _key(want) not in done:
                    record({"shape": shape, **bench_asm(ds, preset, args)})
    end = limit_line(args.limit_n, args.limit_reps, args.device)
    end["when"] = "end"
    results.append(end)
    head["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    _emit(end, args.results)
    if args.write_doc:
        write_doc(args.write_doc, head, results, _full_grid(), args.results)
        print(f"wrote {args.write_doc}", file=sys.stderr)
    return 0


def _rows_note(train: list[dict]) -> str:
    """The dog30 factored IQL row's FLOPs against the reference's (its latest measurement)."""
    rows = [r for r in train if (r["shape"], r["preset"], r["algo"], r["actor"]) == ("dog30", "cpu", "iql", "factored")
            and "ref_gflop_per_step" in r]
    if not rows:
        return ""
    r = rows[-1]
    return (f" (dog30 cpu factored IQL: {r['gflop_per_step']:.2f} GFLOP per step against the reference's "
            f"{r['ref_gflop_per_step']:.2f}, which forms every output)")


def _isa_line(rows: list[dict]) -> str:
    """Which CPU instruction set the rows ran on: sessions may land on different hosts of the same name."""
    counts: dict[str, int] = {}
    for r in rows:
        isa = r.get("cpu_isa") or "not recorded"
        key = f"{isa} ({'native' if r['native_bf16'] else 'no native'} bf16)" if "native_bf16" in r else isa
        counts[key] = counts.get(key, 0) + 1
    return ("- CPU vector ISA (rows): " + ", ".join(f"`{k}`: {v}" for k, v in counts.items())
            + ". Rows from different sessions can come from different hosts with the same CPU name (the limit-line "
            "fraction makes their speed comparable; bf16 ratios are not" + _bf16_range(rows) + ").")


def _bf16_range(rows: list[dict]) -> str:
    """The spread of the bf16 column, from the rows: far below 1 means emulated bf16 (matmuls 22-77x slower)."""
    sp = sorted(r["bf16_speedup"] for r in rows if r.get("bf16_speedup") is not None)
    if not sp:
        return ""
    slow = [x for x in sp if x < 0.5]
    return (f": the rows' bf16 speedups span {sp[0]:.2f}-{sp[-1]:.2f}x"
            + (f", and the {len(slow)} below 0.5x can only come from emulated bf16" if slow else ""))


def _code_line(rows: list[dict]) -> str:
    """Which code the rows measured: a results file spans sessions and commits."""
    counts: dict[str, int] = {}
    for r in rows:
        c = r.get("code") or "not recorded"
        counts[c] = counts.get(c, 0) + 1
    kept = sum(1 for r in rows if r.get("keep_freed_memory"))
    return ("- Code measured (commit: rows): " + ", ".join(f"`{c}`: {n}" for c, n in counts.items()) + ". "
            f"{kept} of {len(rows)} rows ran with freed memory kept in the process as the trainer does "
            "(`spinrl.utils.memory.keep_freed_memory`: no page faults on each step's large temporaries; A/B: "
            "`python benchmarks/allocator.py`); the others predate it and include those page faults.")


def _full_grid() -> list[tuple]:
    """(shape, preset, algo, actor) of every row of the full report; ASM rows as algo = actor = "asm"."""
    full = [(sh, pr, al, ac) for sh in SHAPES_FULL for pr in ("cpu", "paper")
            for al in ("iql", "awac", "bcq") for ac in ACTORS.split(",")]
    return full + [(sh, pr, "asm", "asm") for sh in SHAPES_FULL for pr in ("cpu", "paper")]


def _key(r: dict) -> tuple:
    """What makes two measurements the same row (so a rerun with --results skips it)."""
    return tuple(r.get(k) for k in ("kind", "shape", "preset", "algo", "actor", "n", "threads", "device", "quick"))


def _newest(results: list[dict], kind: str) -> list[dict]:
    """The rows of ``kind``, a row measured again (``--remeasure``) replacing the earlier one in place."""
    rows: dict[tuple, dict] = {}
    for r in results:
        if r["kind"] == kind:
            rows[_key(r)] = r  # a dict keeps the first row's position: the tables keep their order
    return list(rows.values())


def _emit(r: dict, path: str | None) -> None:
    """Print a JSON line and, with --results, append it to the file at once (a killed run keeps its rows)."""
    line = json.dumps(r)
    print(line, flush=True)
    if path:
        with open(path, "a+b") as f:
            torn = False
            if f.seek(0, os.SEEK_END) > 0:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"  # a killed run's half-written last line: start a new one
            f.write((("\n" if torn else "") + line + "\n").encode())
            f.flush()
            os.fsync(f.fileno())


def _read_results(path: str, context: dict) -> list[dict]:
    """Earlier rows of --results measured in the same context (threads, device, quick); a torn last line is dropped."""
    if not os.path.exists(path):
        return []
    rows = []
    host = isa = device = None  # rows written before rows recorded their host belong to the setup line above them
    for r in json_lines(path):
        if r.get("kind") == "setup":
            host, isa, device = r.get("gpu") or r.get("cpu"), r.get("cpu_isa"), r.get("device")
        elif r.get("kind") in ("train_step", "asm_step") and all(r.get(k) == v for k, v in context.items()):
            r.setdefault("host", host)
            rows.append(r)
        elif r.get("kind") == "limit" and r.get("threads", context["threads"]) == context["threads"]:
            r.setdefault("host", host)  # the limit line of the invocation whose setup line is above it
            r.setdefault("cpu_isa", isa)
            r.setdefault("device", device)  # so a GPU run's limit line is named like its rows
            rows.append(r)
    return rows


def json_lines(path: str):
    """The JSON objects of a results file, one per line; a torn line (a run killed mid-write) is skipped."""
    with open(path) as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


# ---- the markdown report -------------------------------------------------------------------------------


GPU_RESULTS = "benchmarks/results/speed_cuda.jsonl"
BREAKDOWN_DOC = "docs/SPEED_BREAKDOWN.md"  # benchmarks/step_breakdown.py's page, linked from the goals
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository


def _gpu_note() -> str:
    """Where the CUDA rows are, or that there are none yet (the CPU report says so rather than staying silent)."""
    if os.path.exists(os.path.join(_ROOT, GPU_RESULTS)):
        return (f"- GPU: rows measured on a GPU machine are in `{GPU_RESULTS}`, rendered to "
                "[SPEED_cuda.md](SPEED_cuda.md) by `benchmarks/gpu_check.sh`'s render command.")
    return ("- GPU: no rows yet (no GPU machine was lent to the sessions that measured this report). `benchmarks/gpu_check.sh` is the prepared "
            f"check (the GPU path end to end, then this report with `--device cuda`); its rows go to `{GPU_RESULTS}` "
            "and docs/SPEED_cuda.md.")


def _rel(path: str) -> str:
    """A path as the regenerate command should show it: relative to the repository where it lies inside it."""
    full = os.path.abspath(path)
    return os.path.relpath(full, _ROOT) if full.startswith(_ROOT + os.sep) else path


def _host_name(r: dict, dev: str) -> str:
    """The machine a row ran on: the CPU's (or GPU's) name, and for CPU rows its vector ISA, because sessions
    land on different hosts that report the same CPU name (an AVX2 and an AVX512 "AMD EPYC" are not one host)."""
    name = r.get("host") or dev
    if r.get("device", "cpu") != "cpu":
        return name
    return f"{name}, {r.get('cpu_isa') or 'ISA not recorded'}"


def _newest_per_host(rows: list[dict], host_of) -> list[dict]:
    """The newest measurement of each row on each host (a goal reads each host's own numbers)."""
    out: dict[tuple, dict] = {}
    for r in rows:
        out[(_key(r), host_of(r))] = r
    return list(out.values())


def _f(x, nd=1, suffix=""):
    return "" if x is None else f"{x:.{nd}f}{suffix}"


def write_doc(path: str, head: dict, results: list[dict], expected: list[tuple] | None = None,
              results_path: str | None = None) -> None:
    """Render the markdown report; ``expected`` = the (shape, preset, algo, actor) rows of the full grid
    (ASM rows as algo = actor = "asm"), so a partial results file says what it lacks."""
    limits = [r for r in results if r["kind"] == "limit"]
    limit = max(r["gflop_per_s"] for r in limits)  # the best line seen: fractions are not flattered by load

    def pct(r):  # against the line measured at the start of the invocation that measured the row (or the best)
        return 100 * r["gflop_per_s"] / max(r.get("limit_gflop_per_s") or limit, 1e-9)

    train, asm = _newest(results, "train_step"), _newest(results, "asm_step")
    dev = head["gpu"] or head["cpu"]

    def host_of(r):  # a results file spans sessions, which can land on different machines
        return _host_name(r, dev)

    # Each goal is read per host (the newest row of each host): a row remeasured on another machine does not
    # hide the earlier host's number, and the spin-cached ratio pairs two rows of one host.
    train_h = _newest_per_host([r for r in results if r["kind"] == "train_step"], host_of)
    asm_h = _newest_per_host([r for r in results if r["kind"] == "asm_step"], host_of)
    hosts: dict[str, int] = {}
    for r in train_h + asm_h:
        hosts.setdefault(host_of(r), 0)
    for r in train + asm:
        hosts[host_of(r)] += 1
    label = {h: chr(ord("A") + i) for i, h in enumerate(hosts)} if len(hosts) > 1 else {}

    def host_cell(r):
        return f" {label[host_of(r)]} |" if label else ""

    run_line = (f"{head['cpu_count']} logical CPUs, torch threads {head['torch_threads']}, torch {head['torch']}, "
                f"Python {head['python']}, {head['date']}")
    L = [
        "# Speed report",
        "",
        "Generated by `benchmarks/train_step.py`; do not edit by hand. Regenerate (on a quiet machine) with",
        "",
        "    python benchmarks/train_step.py"
        + ("" if head["device"] == "cpu" else f" --device {head['device']}")
        + f" --results {_rel(results_path or 'benchmarks/results/speed_cpu.jsonl')} --write-doc {_rel(path)}",
        "",
        "(the full run takes hours on 2 cores; rerunning the command measures only the rows the results file lacks).",
        "",
        (f"- Device: **{dev}** ({head['device']}), {run_line}." if not label else
         "- Hosts: the rows come from " + str(len(hosts)) + " machines, "
         + ", ".join(f"**{label[h]}** = {h} ({n} row{'s' if n != 1 else ''}" + ("" if n else
                     " in the tables: all measured again elsewhere; its own numbers stay in the goals") + ")"
                     for h, n in hosts.items())
         + "; the `host` column names each row's, and its % of limit uses the limit line measured on that host in "
           "the same invocation (times from different hosts are not comparable, fractions roughly are). "
         + f"Rendered on {dev} ({head['device']}), {run_line}."),
        (f"- Load average at start / end: {head['loadavg_start']} / {head.get('loadavg_end')}"
         + (" — **the machine was shared with other jobs; absolute times are inflated.**"
            if head["loadavg_start"][0] > 0.5 * (head["cpu_count"] or 1) else ".")
         if head.get("loadavg_start") else
         f"- Rendered from the results file without measuring (`--render-only`); each row records the load average "
         f"while it was measured (`loadavg` in the JSON lines; {sum(1 for r in train + asm if r.get('loadavg') and r['loadavg'][0] > 0.5 * (head['cpu_count'] or 1))} "
         f"of {len(train) + len(asm)} rows on a shared machine, times inflated)."),
        f"- {'**Quick mode** (' + str(head['steps']) + ' timed steps per row, small synthetic dataset): a check that the script runs, not numbers to quote.' if head['quick'] else 'Median of ' + str(head['steps']) + ' timed steps after ' + str(head['warmup']) + ' warm-up steps per row.'}",
        _code_line(train + asm),
        f"- Limit line: a {limits[0]['matmul_n']}x{limits[0]['matmul_n']} fp32 matmul reaches "
        + " / ".join(f"{r['gflop_per_s']:.1f}" for r in limits)
        + " GFLOP/s (measured at the start and end of each invocation"
        + (f"; the rows come from {sum(1 for r in limits if r.get('when') != 'end')} invocations appending to one "
           "`--results` file" if sum(1 for r in limits if r.get('when') != 'end') > 1 else "")
        + "); each row's fraction uses the line measured at the start of its invocation.",
        "- A step is what the trainer runs: sample a batch, move it to the device, (spin-cached: look its states up "
        "in the fp16 feature cache), `gradient_step`. FLOPs are model FLOPs of one such step counted by "
        "`torch.utils.flop_counter` (matmuls and attention; elementwise work is not counted).",
        "- `ref` = the plain reference IQL step (`benchmarks/reference_iql.py`: loops over sub-actions, two "
        "separate critic networks, one module per head, `nn.MultiheadAttention`, per-parameter Adam); "
        "`ref/lib` > 1 means the library is faster. Equality with the library step is tested in "
        "`tests/test_reference_equality.py`. The reference and bf16 timings alternate with the library's in "
        f"blocks of 10 steps, so their ratios see the same load ({sum(1 for r in train if r.get('interleaved'))} rows; "
        f"{sum(1 for r in train if 'ref_ms_median' in r and not r.get('interleaved'))} older rows with a `ref` "
        "timed it after the library's 200 steps).",
        "- `bf16` = the same IQL step with `spinrl train --precision bf16` (losses under bfloat16 autocast, fp32 "
        "weights); off by default. Its effect on returns: [BF16.md](BF16.md) (`benchmarks/bf16.toml`). It pays only "
        "where matmuls run in bf16 in hardware (CPUs with AVX512-BF16 or AMX, GPUs): on an AVX2 CPU torch emulates "
        "them, 22-77x slower than fp32 (`python benchmarks/bf16_matmul.py`, results in "
        "`benchmarks/results/bf16_matmul_cpu.jsonl`), so the script times bf16 only where the device has it "
        "natively (`--bf16 auto`) and `spinrl train --precision bf16` warns elsewhere.",
        _isa_line(train + asm),
        "",
    ]
    # the page leads with the answer (the goals, then the tables); how and where it was measured goes last
    prov, L = L[2:], L[:2]
    if expected:  # the full grid spans sessions: say what the rows below do not cover yet
        have = {(r["shape"], r["preset"], r["algo"], r["actor"]) for r in train}
        have |= {(r["shape"], r["preset"], "asm", "asm") for r in asm}
        missing: dict[str, int] = {}
        for key in expected:
            if key not in have:
                missing[key[0]] = missing.get(key[0], 0) + 1
        if missing:
            L += ["**Incomplete:** rows not measured yet (the full run spans sessions; rerun the command above to add "
                  "them): " + ", ".join(f"{shape} {n} of {sum(1 for k in expected if k[0] == shape)}"
                                         for shape, n in missing.items()) + ". Goals below cover only the rows present.", ""]
    # goals (issue 6), each host's own numbers
    spread = {}
    for r in limits:
        if r.get("host") and host_of(r) in label:
            spread.setdefault(label[host_of(r)], []).append(r["gflop_per_s"])
    L += ["## Goals (issue 6), per host", "",
          "Each host's newest row of each goal. "
          + ("The limit line itself moves between invocations on one host, quiet or beside other jobs ("
             + ", ".join(f"{h}: {min(v):.1f}-{max(v):.1f} GFLOP/s" for h, v in sorted(spread.items()))
             + "), so a fraction near 75% can land on either side of the goal on another run."
             if spread else ""), "",
          "| goal | measured | met |", "|---|---|---|"]

    def on(r):
        return f" ({label[host_of(r)]})" if label else ""

    def order(r):  # goal rows grouped by shape, then preset, then host
        return (list(SHAPES).index(r["shape"]) if r["shape"] in SHAPES else 99, r["preset"], label.get(host_of(r), ""))

    def find(**kw):
        return sorted((r for r in train_h if all(r.get(k) == v for k, v in kw.items())), key=order)

    for r in find(algo="iql", actor="factored"):
        if r["shape"].startswith("dog") and r.get("ref_over_lib"):
            L.append(f"| IQL factored, {r['shape']} {r['preset']}{on(r)}: >= 2x reference steps/s | {r['ref_over_lib']:.2f}x | "
                     f"{'yes' if r['ref_over_lib'] >= 2 else 'no'} |")
    for r in find(algo="iql", actor="spin", preset="paper"):
        L.append(f"| SPIN-IQL paper, {r['shape']}{on(r)}: >= 75% of limit | {pct(r):.1f}% | {'yes' if pct(r) >= 75 else 'no'} |")
        if r.get("bf16_ms_median"):  # the opt-in bf16 step, for comparison: its matmuls are not the limit line's
            bf = pct(r) * r["ms_median"] / r["bf16_ms_median"]
            L.append(f"| (for comparison) SPIN-IQL paper with `--precision bf16`, {r['shape']}{on(r)}: model FLOP/s "
                     f"against the fp32 limit | {bf:.1f}% | not the goal: bf16 matmuls, opt-in (returns: BF16.md) |")
    for r in find(actor="spin-cached"):
        if r["algo"] != "iql":
            continue
        same = find(shape=r["shape"], preset=r["preset"], algo=r["algo"], actor="spin")
        base = [b for b in same if host_of(b) == host_of(r)] or same
        if not base:
            continue
        x = base[0]["ms_median"] / r["ms_median"]
        other = " (the two rows ran on different hosts: not comparable)" if host_of(base[0]) != host_of(r) else ""
        # spin-cached still trains both critics and V: the factored IQL step (the same critics with an MLP
        # actor) bounds how far below spin's step it can go
        flat = [f for f in find(shape=r["shape"], preset=r["preset"], algo="iql", actor="factored")
                if host_of(f) == host_of(base[0])]
        bound = base[0]["ms_median"] / flat[0]["ms_median"] if flat else None
        why = (f" (unreachable here: spin's step is {bound:.1f}x the factored IQL step, whose critic and value "
               "updates spin-cached also runs)" if x < 10 and bound is not None and bound < 10 else "")
        L.append(f"| spin-cached vs spin, IQL {r['shape']} {r['preset']}{on(r)}: >= 10x steps/s | {x:.1f}x | "
                 f"{'yes' if x >= 10 and not other else 'no'}{why}{other} |")
    for r in sorted(asm_h, key=order):
        if r["preset"] == "paper":
            L.append(f"| ASM pretraining paper, {r['shape']}{on(r)}: >= 75% of limit | {pct(r):.1f}% | {'yes' if pct(r) >= 75 else 'no'} |")
    L.append("")
    if os.path.exists(os.path.join(_ROOT, BREAKDOWN_DOC)):
        L += [f"Where a 75% goal is missed, [{os.path.basename(BREAKDOWN_DOC)}]({os.path.basename(BREAKDOWN_DOC)}) "
              "splits the goal rows' steps into matmul kernels and the rest (`benchmarks/step_breakdown.py`): "
              "how near the limit the matmuls alone run, and how little time the rest may take for the step to "
              "reach 75%.", ""]
    for shape in dict.fromkeys(r["shape"] for r in train + asm):
        obs_dim, nvec = SHAPES[shape]
        L += [f"## {shape} shape (state {obs_dim}, {len(nvec)} sub-actions x {nvec[0]})", "",
              "| preset | algo | actor | ms/step | steps/s | GFLOP/step | GFLOP/s | % of limit | ref ms | ref/lib | bf16 ms | bf16 speedup |"
              + (" host |" if label else ""),
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---|" if label else "")]
        for r in train:
            if r["shape"] != shape:
                continue
            L.append(f"| {r['preset']} | {r['algo']} | {r['actor']} | {r['ms_median']:.1f} | {r['grad_steps_per_s']:.1f} | "
                     f"{r['gflop_per_step']:.3f} | {r['gflop_per_s']:.1f} | {pct(r):.0f}% | {_f(r.get('ref_ms_median'))} | "
                     f"{_f(r.get('ref_over_lib'), 2, 'x')} | {_f(r.get('bf16_ms_median'))} | {_f(r.get('bf16_speedup'), 2, 'x')} |"
                     + host_cell(r))
        L += ["", "ASM pretraining step:", "", "| preset | batch | ms/step | samples/s | GFLOP/step | GFLOP/s | % of limit |"
              + (" host |" if label else ""), "|---|---:|---:|---:|---:|---:|---:|" + ("---|" if label else "")]
        for r in asm:
            if r["shape"] == shape:
                L.append(f"| {r['preset']} | {r['batch']} | {r['ms_median']:.1f} | {r['samples_per_s']:.0f} | "
                         f"{r['gflop_per_step']:.2f} | {r['gflop_per_s']:.1f} | {pct(r):.0f}% |" + host_cell(r))
        L.append("")
    L += [
        "## Notes",
        "",
        *([] if head["device"] != "cpu" else [_gpu_note()]),
        "- Host syncs: `gradient_step` reads no tensor value back to the host (no `.item()`, `float()`, `bool()`, "
        "`.tolist()`, `.numpy()`, `nonzero` from spinrl code) for every algorithm x actor; checked by "
        "`tests/test_reference_equality.py::test_gradient_step_has_no_host_reads`. Outside the step, the "
        "trainer's batch transfer and spin-cached's memmap lookup run on the host by design.",
        "- bf16 autocast changes numerics beyond float tolerance, so it is opt-in (`--precision bf16`); "
        "[BF16.md](BF16.md) compares returns with fp32 on the same seeds and ASMs.",
        "- CPU dropout draws 16 random bits per element (`spinrl.models.fast.dropout`) instead of `bernoulli_`'s "
        "32; Adam is the fused implementation, and from `759e369` on its step calls the fused kernel without "
        "torch.optim's per-step regrouping (`spinrl.utils.optim.FusedAdam`, bit-identical: `tests/test_optim.py`) "
        "and the MLPs' ReLUs run in place (IQL factored dog paper: 13.06 ms per step at `04e8620`, 12.93 ms at "
        "`759e369`, both on a quiet machine, rows in the results file); IQL reads the "
        "target critic once per step and V(s), V(s') after its update in one forward. With equal cardinalities "
        "the concatenated per-sub-action outputs are used as the padded [N, max_m] layout directly (a view, no "
        "gather/scatter); with fewer than 8 choices per sub-action, log-likelihoods take log_softmax over the "
        "transposed [B, max_m, N] view, because CPU log_softmax over a last dim of 3 does not vectorize (2x slower "
        "forward + backward for [256, 38, 3]). Both are in rows measured at code from `3414d8f` on.",
        "- The critic's Q(s, a) for given actions (every critic and target-critic pass of IQL, the critic losses "
        "of AWAC and BCQ) never forms the [B, sum m_i] output: it sums the chosen sub-actions' output rows "
        "(`embedding_bag` over an out-major output layer) and dots them with the last hidden layer, so its cost "
        "does not grow with the cardinalities" + _rows_note(train) + ". In rows measured at code from `65ed400` on. "
        "With at most 10 choices per sub-action on average the same row sum is one matmul of the actions' one-hot "
        "with the output layer, because `embedding_bag`'s sort-based backward costs more there than the FLOPs it "
        "saves (`benchmarks/critic_rows.py`; dog 38 x 3: 1.4 ms against 3.6 ms per critic pass); in rows measured "
        "at code from `cac4b90` on.",
        "- CPU training attention (dropout on the attention weights) has its own autograd function "
        "(`spinrl.models.fast.DropoutAttention`): the same values and masks as autograd through softmax, the "
        "mask and the two products, but dq, dk and dv are written by `bmm(out=)` into one buffer and permuted back "
        "to the qkv layout in one copy, where autograd's backward assembled them by a stack plus a permuted copy. "
        "`python benchmarks/attention.py --threads 1` times both per shape (benchmarks/results/attention_cpu.jsonl); "
        "in rows measured at code from `cbd75b4` on.",
        "- spin-cached rows use the trainer's own lookup into a cache built once per shape and preset (the build "
        "time is not in the step); above `--feature-cache-gb` the trainer recomputes features per batch instead, "
        "which is slower than these rows.",
        "- The ASMs are randomly initialized: speed does not depend on the weights.",
        "",
        "## Provenance",
        "",
        *prov,
    ]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_text_atomic(path, "\n".join(L))


if __name__ == "__main__":
    sys.exit(main())
