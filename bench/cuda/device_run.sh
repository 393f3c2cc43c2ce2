#!/bin/bash
# One call on a GPU machine: the gpu-labelled tests, `fastattn check --device
# cuda`, compute-sanitizer on a subset, and the prefill and decode benchmarks
# with their peers. Expects a CUDA build (built elsewhere) in $BUILD; logs go to $OUT.
#   BUILD=build-cuda OUT=/tmp/out COMMIT=<sha> bash bench/cuda/device_run.sh
set -o pipefail
BUILD=${BUILD:-build-cuda}
OUT=${OUT:-/tmp/fa_out}
mkdir -p "$OUT"
# ctest files hold the absolute build path of the machine that configured them.
src_root=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$BUILD/CMakeCache.txt")
if [ -n "$src_root" ] && [ ! -e "$src_root" ]; then
  mkdir -p "$(dirname "$src_root")" && ln -s "$PWD" "$src_root"
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw,temperature.gpu \
  --format=csv | tee "$OUT/gpu.txt"

step() { echo "== $*" | tee -a "$OUT/steps.log"; }

step "ctest -L gpu"
timeout 240 ctest --test-dir "$BUILD" -L gpu -j 8 --output-on-failure > "$OUT/ctest_gpu.log" 2>&1
echo "ctest rc=$?" | tee -a "$OUT/steps.log"; tail -4 "$OUT/ctest_gpu.log"

step "fastattn check --device cuda"
timeout 200 "$BUILD/tools/fastattn" check --device cuda > "$OUT/check_cuda.log" 2>&1
echo "check rc=$?" | tee -a "$OUT/steps.log"; tail -3 "$OUT/check_cuda.log"

# Memcheck and racecheck on small cases: every shape class, masks, varlen,
# strides, softcap, GQA, the graph/refusal tests, and every decode and merge test.
SUBSET='*Decode*:*Merge*:Full/CudaMatrix.MatchesReference/*shape*:Full/CudaMatrix.MatchesReference/*varlen*:Full/CudaMatrix.MatchesReference/*strides*:Full/CudaMatrix.MatchesReference/*softcap*:Full/CudaMatrix.MatchesReference/*window*:Full/CudaMatrix.MatchesReference/*head_dim*:CudaCall.*'
for tool in memcheck racecheck; do
  step "compute-sanitizer --tool $tool"
  timeout 200 compute-sanitizer --tool $tool --error-exitcode 9 \
    "$BUILD/tests/gpu_tests" --gtest_filter="$SUBSET" --gtest_brief=1 > "$OUT/sanitizer_one.log" 2>&1
  echo "$tool rc=$?" | tee -a "$OUT/steps.log"; tail -3 "$OUT/sanitizer_one.log"
  { echo "== $tool"; cat "$OUT/sanitizer_one.log"; } >> "$OUT/sanitizer.log"; rm "$OUT/sanitizer_one.log"
done

step "prefill benchmark"
PYTHONUNBUFFERED=1 timeout 300 python3 bench/cuda/prefill_bench.py --lib "$BUILD/libfastattn.so" \
  --json "$OUT/prefill.jsonl" --commit "${COMMIT:-unknown}" > "$OUT/prefill.log" 2>&1
echo "bench rc=$?" | tee -a "$OUT/steps.log"

step "decode benchmark"
PYTHONUNBUFFERED=1 timeout 330 python3 bench/cuda/decode_bench.py --lib "$BUILD/libfastattn.so" \
  --json "$OUT/decode.jsonl" --commit "${COMMIT:-unknown}" > "$OUT/decode.log" 2>&1
echo "decode bench rc=$?" | tee -a "$OUT/steps.log"
