#!/bin/bash
# One device call: ptxas report (built beforehand into .cuda-build), tests,
# our timings, PyTorch FA2 timings beside them. Logs under $OUT.
set -o pipefail
OUT=${OUT:-/tmp/fa_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
.cuda-build/flash_sm80_driver --test 2>&1 | tee "$OUT/test.log"
.cuda-build/flash_sm80_driver --bench --json "$OUT/ours.jsonl" 2>&1 | tee "$OUT/bench.log"
PYTHONUNBUFFERED=1 python3 bench/cuda/fa2_torch_bench.py --ours "$OUT/ours.jsonl" --json "$OUT/fa2.jsonl" 2>&1 | tee "$OUT/compare.log"
