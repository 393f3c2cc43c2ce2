#!/bin/bash
# One call on a GPU machine: the gpu-labelled tests, `fastattn check --device
# cuda` (automatic and each forced path), compute-sanitizer on a subset, the
# prefill and decode benchmarks with their peers, the Turing proxy run, the
# ncu profile of every path, and the sm90 kernel's SASS and ablation.
# Expects a CUDA build (built elsewhere) in $BUILD; logs go to $OUT. PARTS
# picks what runs (default: all of them):
#   BUILD=build-cuda OUT=/tmp/out COMMIT=<sha> PARTS="tests bench" bash bench/cuda/device_run.sh
# parts: tests (ctest, check), sanitize (memcheck, racecheck), bench (prefill),
# decode, proxy, profile, sm90 (SASS instruction census, ablation; the
# ablation needs a build with -DFASTATTN_CUDA_BUILD_DRIVER=ON)
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
PARTS=${PARTS:-tests sanitize bench decode mask proxy profile sm90}
want() { [[ " $PARTS " == *" $1 "* ]]; }

if want tests; then
step "ctest -L gpu"
timeout 420 ctest --test-dir "$BUILD" -L gpu -j 8 --output-on-failure > "$OUT/ctest_gpu.log" 2>&1
echo "ctest rc=$?" | tee -a "$OUT/steps.log"; tail -4 "$OUT/ctest_gpu.log"

for path in 0 90 80 75 70; do
  step "fastattn check --device cuda --cuda-path $path"
  timeout 200 "$BUILD/tools/fastattn" check --device cuda --cuda-path $path > "$OUT/check_cuda_$path.log" 2>&1
  echo "check path $path rc=$?" | tee -a "$OUT/steps.log"; tail -2 "$OUT/check_cuda_$path.log"
done

fi

if want sanitize; then
# Memcheck and racecheck on small cases: every shape class, masks, varlen,
# strides, softcap, GQA, the graph/refusal tests, and every decode and merge
# test; the shapes, head dims, windows and softcap with the sm90, sm75 and
# sm70 paths forced. (On an H100 the automatic choice is the sm90 path.)
SUBSET='*Decode*:*Merge*:CudaCall.*:DeviceBlockMask*'
for kind in shape varlen strides softcap window head_dim prefix_lm chunk docs block_mask; do
  SUBSET="$SUBSET:Full/CudaMatrix.MatchesReference/*${kind}*"
done
for suite in Sm90/CudaForcedPath Sm75/CudaForcedPath Sm70/CudaForcedPath; do
  for kind in shape softcap window head_dim docs; do
    SUBSET="$SUBSET:$suite.MatchesReference/*${kind}*"
  done
done
for tool in memcheck racecheck; do
  step "compute-sanitizer --tool $tool"
  timeout 280 compute-sanitizer --tool $tool --error-exitcode 9 \
    "$BUILD/tests/gpu_tests" --gtest_filter="$SUBSET" --gtest_brief=1 > "$OUT/sanitizer_one.log" 2>&1
  echo "$tool rc=$?" | tee -a "$OUT/steps.log"; tail -3 "$OUT/sanitizer_one.log"
  { echo "== $tool"; cat "$OUT/sanitizer_one.log"; } >> "$OUT/sanitizer.log"; rm "$OUT/sanitizer_one.log"
done
fi

if want bench; then
step "prefill benchmark"
PYTHONUNBUFFERED=1 timeout 300 python3 bench/cuda/prefill_bench.py --lib "$BUILD/libfastattn.so" \
  --json "$OUT/prefill.jsonl" --commit "${COMMIT:-unknown}" > "$OUT/prefill.log" 2>&1
echo "bench rc=$?" | tee -a "$OUT/steps.log"
fi

if want decode; then
step "decode benchmark"
PYTHONUNBUFFERED=1 timeout 330 python3 bench/cuda/decode_bench.py --lib "$BUILD/libfastattn.so" \
  --json "$OUT/decode.jsonl" --commit "${COMMIT:-unknown}" > "$OUT/decode.log" 2>&1
echo "decode bench rc=$?" | tee -a "$OUT/steps.log"
fi

# Tiling masks beside FlexAttention and SDPA with a dense mask.
if want mask; then
step "mask benchmark"
PYTHONUNBUFFERED=1 timeout 420 python3 bench/cuda/mask_bench.py --lib "$BUILD/libfastattn.so" \
  --json "$OUT/mask.jsonl" --commit "${COMMIT:-unknown}" > "$OUT/mask.log" 2>&1
echo "mask bench rc=$?" | tee -a "$OUT/steps.log"; tail -40 "$OUT/mask.log"
fi

# The sm75 path forced on this GPU beside the memory-efficient backend: a
# proxy for a T4, where no FlashAttention-2 runs.
if want proxy; then
step "Turing proxy benchmark (sm75 path forced, fp16)"
PYTHONUNBUFFERED=1 timeout 300 python3 bench/cuda/prefill_bench.py --lib "$BUILD/libfastattn.so" \
  --cuda-path 75 --dtypes fp16 --target mem_eff \
  --json "$OUT/proxy_sm75.jsonl" --commit "${COMMIT:-unknown}" > "$OUT/proxy_sm75.log" 2>&1
echo "proxy bench rc=$?" | tee -a "$OUT/steps.log"
fi

if want profile; then
step "ncu profile of each path"
(cd bench/cuda && timeout 300 python3 path_profile.py --lib "$OLDPWD/$BUILD/libfastattn.so" \
  --out "$OUT/profile") > "$OUT/path_profile.log" 2>&1
echo "profile rc=$?" | tee -a "$OUT/steps.log"
fi

# The sm90 kernel's instruction census (HGMMA in the mainloop, TMA, register
# reallocation) and the ablation of its overlaps, ring depth and tile order.
if want sm90; then
step "sm90 SASS census"
cuobjdump -sass "$BUILD/libfastattn.so" 2>/dev/null | awk '
  /Function :/ { sm90 = ($0 ~ /flash_fwd_sm90_kernel/) }
  sm90 { for (i = 1; i <= NF; ++i) if ($i ~ /^(HGMMA|UTMALDG|UTMASTG|USETMAXREG|SYNCS|WARPGROUP)/) {
    op = $i; sub(/;$/, "", op); n[op]++ } }
  END { for (op in n) print n[op], op }' | sort -k2 > "$OUT/sm90_sass.txt"
echo "sass census rc=$?" | tee -a "$OUT/steps.log"; head -30 "$OUT/sm90_sass.txt"
if [ -x "$BUILD/sm90_ablation" ]; then
  step "sm90 ablation"
  timeout 200 "$BUILD/sm90_ablation" --json "$OUT/sm90_ablation.jsonl" > "$OUT/sm90_ablation.log" 2>&1
  echo "ablation rc=$?" | tee -a "$OUT/steps.log"; cat "$OUT/sm90_ablation.log"
fi
fi
