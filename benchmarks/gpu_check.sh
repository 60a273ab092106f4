#!/bin/bash
# The device check for issue 6, prepared so that a session lent a GPU spends its ~15 minutes measuring, not
# writing commands. It runs the GPU path end to end (maze data -> ASM pretraining -> SPIN-IQL on CUDA with
# evaluation), then the speed report on CUDA, and leaves everything under $OUT:
#   gpu.txt (nvidia-smi, torch), e2e.log, speed_cuda.jsonl, SPEED_cuda.md, train_step.log
#
# Before the call, here (the device image has torch but not gymnasium; see the device README's wheel notes):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       -d .whl gymnasium==1.4.0 farama-notifications==0.0.4
# The call (device tool): command "bash benchmarks/gpu_check.sh", carry [".whl"], timeout_s 540.
# Afterwards: append $OUT/speed_cuda.jsonl to benchmarks/results/speed_cuda.jsonl and render it with
#   python benchmarks/train_step.py --device cuda --results benchmarks/results/speed_cuda.jsonl \
#       --render-only --write-doc docs/SPEED_cuda.md
#
# Locally, as a check of the script itself (tiny sizes, CPU): DEVICE=cpu QUICK=1 OUT=/tmp/gpucheck bash benchmarks/gpu_check.sh
set -uo pipefail
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
OUT=${OUT:?set OUT to the folder for the results}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
SPINRL="$PY -m spinrl.cli.main"
{ nvidia-smi 2>&1 || true; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"; } > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

if [ "$QUICK" = 1 ]; then N=5000; PRE="--max-epochs 1 --min-epochs 1 --steps-per-epoch 20"; STEPS=50; EVAL=25; TS="--quick"; BUDGET=400
else N=50000; PRE="--max-epochs 4 --min-epochs 1 --steps-per-epoch 500"; STEPS=5000; EVAL=2500; TS=""; BUDGET=420; fi
W=$(mktemp -d)
start=$(date +%s)
# 1. The GPU path end to end: every stage on $DEVICE, evaluation included (maze: no physics engine needed).
timeout 240 bash -c "
  set -e
  $SPINRL data make maze --actuators 12 --level medium-expert --transitions $N --seed 0 --out $W/m.d
  $SPINRL pretrain $W/m.d --out $W/asm --device $DEVICE --no-progress $PRE
  $SPINRL train $W/m.d --algo iql --actor spin --asm $W/asm --steps $STEPS --eval-every $EVAL --device $DEVICE \
      --no-progress --out $W/spin
  tail -n 3 $W/spin/metrics.csv
" > "$OUT/e2e.log" 2>&1
echo "e2e rc $? in $(( $(date +%s) - start )) s" | tee -a "$OUT/e2e.log"
tail -n 5 "$OUT/e2e.log"
# 2. The speed report on $DEVICE: the goal rows first (paper IQL, ASM), then the rest while time is left.
left=$(( BUDGET - ($(date +%s) - start) ))
timeout $(( left > 30 ? left : 30 )) $PY benchmarks/train_step.py --device $DEVICE $TS --threads 1 \
    --results "$OUT/speed_cuda.jsonl" --shapes cheetah,dog,dog30 --presets paper,cpu --algos iql,awac,bcq \
    --write-doc "$OUT/SPEED_cuda.md" > "$OUT/train_step.log" 2>&1
echo "train_step rc $? in $(( $(date +%s) - start )) s total" | tee -a "$OUT/train_step.log"
# A stop at the time limit leaves the rows measured so far: render them.
$PY benchmarks/train_step.py --device $DEVICE $TS --threads 1 --results "$OUT/speed_cuda.jsonl" --render-only \
    --write-doc "$OUT/SPEED_cuda.md" >> "$OUT/train_step.log" 2>&1 || true
grep -c train_step "$OUT/speed_cuda.jsonl" 2>/dev/null | sed 's/^/rows measured: /'
