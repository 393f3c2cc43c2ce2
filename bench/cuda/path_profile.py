"""Nsight Compute evidence for each CUDA forward path, forced on one GPU.

For each kernel family (sm80, sm75, sm70) and head dim, profiles one
fa_attention_forward call (fp16, B=4, L=2048, H=16, non-causal) under ncu and
reports, from the hardware counters:
  - shared-memory bank conflicts of the operand loads (ld.shared for sm70,
    ldmatrix for sm75/sm80) and of the shared stores, beside the load count;
  - registers per thread, shared memory per block and block size;
and from those, the blocks and warps per SM that the limits of a V100
(sm70: 64K registers, 96 KiB shared memory, 2048 threads) and a T4 (sm75:
64K registers, 64 KiB, 1024 threads) allow, so that the occupancy a path
would get on its own GPU is known without one.

    python3 bench/cuda/path_profile.py --lib build-cuda/libfastattn.so --out DIR

runs ncu once per (path, head dim) and prints a table (DIR gets the raw CSV
and a JSON line per kernel). `--run PATH D` is the profiled child process.
"""
import argparse
import csv
import ctypes
import io
import json
import math
import os
import subprocess
import sys

from fastattn_abi import (
    FA_BACKEND_CUDA, FA_DTYPE_FLOAT16, FA_MASK_NONE, FA_STATUS_OK, FaAttentionArgs,
    FaRunOptions, fa_tensor_of, load_library,
)

PATHS = (80, 75, 70)
HEAD_DIMS = (64, 128)
METRICS = (
    "launch__registers_per_thread",
    "launch__shared_mem_per_block_dynamic",
    "launch__block_size",
    "launch__grid_size",
    "gpu__time_duration.sum",
    "smsp__inst_executed_op_shared_ld.sum",
    "smsp__inst_executed_op_ldsm.sum",
    "smsp__inst_executed_op_shared_st.sum",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ldsm.sum",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum",
    "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum",
    "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ldsm.sum",
    "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_st.sum",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
)
# Per-SM limits of the GPUs each path is for (CUDA occupancy tables).
LIMITS = {
    "V100 (sm70)": {"regs": 65536, "smem": 96 * 1024, "threads": 2048, "blocks": 32},
    "T4 (sm75)": {"regs": 65536, "smem": 64 * 1024, "threads": 1024, "blocks": 16},
}


def run_child(lib_path, path, d):
    import torch

    lib = load_library(lib_path)
    B, L, H = 4, 2048, 16
    q, k, v = (torch.randn(B, L, H, d, device="cuda", dtype=torch.float16) for _ in range(3))
    out = torch.empty_like(q)
    args = FaAttentionArgs()
    for name, t in (("q", q), ("k", k), ("v", v), ("out", out)):
        setattr(args, name, fa_tensor_of(t, FA_DTYPE_FLOAT16))
    args.mask.kind = FA_MASK_NONE
    args.softmax_scale = 1.0 / math.sqrt(d)
    opts = FaRunOptions()
    opts.backend = FA_BACKEND_CUDA
    opts.cuda_path = path
    status = lib.fa_attention_forward(ctypes.byref(args), ctypes.byref(opts))
    torch.cuda.synchronize()
    if status != FA_STATUS_OK:
        raise SystemExit(f"path {path} d {d}: {lib.fa_last_error().decode()}")


def available_metrics(ncu):
    text = subprocess.run([ncu, "--query-metrics"], capture_output=True, text=True).stdout
    names = {line.split()[0] for line in text.splitlines() if line.strip() and "__" in line.split()[0]}
    # launch__ attributes are not hardware counters and are not listed.
    return [m for m in METRICS if m.startswith("launch__") or m.split(".")[0] in names]


def excessive_by_instruction(ncu, lib, path, d, out_dir):
    """Per SASS instruction: shared-memory wavefronts beyond the ideal
    (ncu's source view), summed by opcode; best effort."""
    cmd = [ncu, "--section", "SourceCounters", "--page", "source", "--print-source", "sass", "--csv",
           "--kernel-name", "regex:flash_fwd", sys.executable, os.path.abspath(__file__), "--lib", lib,
           "--run", str(path), str(d)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    with open(os.path.join(out_dir, f"ncu_source_sm{path}_d{d}.csv"), "w") as fh:
        fh.write(res.stdout)
    rows = [r for r in csv.reader(io.StringIO(res.stdout)) if r]
    start = next((i for i, r in enumerate(rows) if "Source" in r and any("Shared Excessive" in c for c in r)), None)
    if start is None:
        return None
    header = rows[start]
    src = header.index("Source")
    exc = next(i for i, c in enumerate(header) if "Shared Excessive" in c)
    ideal = next((i for i, c in enumerate(header) if "Shared Ideal" in c), None)
    by_op = {}
    for r in rows[start + 1:]:
        if len(r) <= max(src, exc):
            continue
        try:
            e = float(r[exc].replace(",", "") or 0)
            i = float(r[ideal].replace(",", "") or 0) if ideal is not None else 0.0
        except ValueError:
            continue
        if e == 0 and i == 0:
            continue
        op = r[src].split()[0] if r[src].split() else "?"
        if op.startswith("@"):
            op = r[src].split()[1]
        tot = by_op.setdefault(op, [0.0, 0.0])
        tot[0] += i
        tot[1] += e
    return by_op


def profile(ncu, lib, path, d, metrics, out_dir):
    cmd = [ncu, "--csv", "--page", "raw", "--kernel-name", "regex:flash_fwd", "--metrics",
           ",".join(metrics), sys.executable, os.path.abspath(__file__), "--lib", lib,
           "--run", str(path), str(d)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    with open(os.path.join(out_dir, f"ncu_sm{path}_d{d}.csv"), "w") as fh:
        fh.write(res.stdout + "\n# stderr\n" + res.stderr)
    rows = [r for r in csv.reader(io.StringIO(res.stdout)) if r]
    start = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
    if res.returncode != 0 or start is None or len(rows) < start + 3:
        raise SystemExit(f"ncu failed for sm{path} d{d} (rc {res.returncode}):\n{res.stderr[-2000:]}")
    header, data = rows[start], rows[start + 2]  # a units row follows the header
    rec = dict(zip(header, data))
    return {m: float(rec[m].replace(",", "")) for m in metrics if m in rec and rec[m]} | {
        "kernel": rec.get("Kernel Name", "")}


def blocks_per_sm(regs, smem, threads, lim):
    if any(math.isnan(x) for x in (regs, smem, threads)):
        return 0, 0
    warps = math.ceil(threads / 32)
    regs_per_warp = math.ceil(regs * 32 / 256) * 256  # allocation unit: 256 registers a warp
    by_regs = lim["regs"] // (regs_per_warp * warps)
    by_smem = lim["smem"] // smem if smem else lim["blocks"]
    by_threads = lim["threads"] // threads
    blocks = min(by_regs, by_smem, by_threads, lim["blocks"])
    return blocks, blocks * warps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", required=True)
    ap.add_argument("--out", default=".")
    ap.add_argument("--ncu", default="ncu")
    ap.add_argument("--run", nargs=2, type=int, metavar=("PATH", "D"), help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.run:
        run_child(opts.lib, *opts.run)
        return 0
    os.makedirs(opts.out, exist_ok=True)
    metrics = available_metrics(opts.ncu)
    missing = [m for m in METRICS if m not in metrics]
    if missing:
        print("metrics this ncu lacks: " + ", ".join(missing), flush=True)
    results = []
    with open(os.path.join(opts.out, "path_profile.jsonl"), "w") as fh:
        for path in PATHS:
            for d in HEAD_DIMS:
                r = profile(opts.ncu, opts.lib, path, d, metrics, opts.out)
                r.update(path=path, d=d)
                r["shared_by_opcode"] = excessive_by_instruction(opts.ncu, opts.lib, path, d, opts.out)
                results.append(r)
                fh.write(json.dumps(r) + "\n")
    g = lambda r, m: r.get(m, float("nan"))
    print("\nper kernel (fp16, B=4, L=2048, H=16, non-causal; counters over the whole launch)")
    head = (f"{'path':>5} {'d':>4} {'regs':>5} {'smem KiB':>8} {'thr':>4} {'lds':>10} {'ldsm':>10} "
            f"{'conf ld':>8} {'conf ldsm':>9} {'sts':>9} {'conf st':>8} {'wf ld':>10} {'wf ldsm':>10} "
            f"{'ms':>7}")
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{'sm%d' % r['path']:>5} {r['d']:>4} {g(r, METRICS[0]):>5.0f} "
              f"{g(r, METRICS[1]) / 1024:>8.1f} {g(r, METRICS[2]):>4.0f} "
              f"{g(r, 'smsp__inst_executed_op_shared_ld.sum'):>10.0f} "
              f"{g(r, 'smsp__inst_executed_op_ldsm.sum'):>10.0f} "
              f"{g(r, 'l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum'):>8.0f} "
              f"{g(r, 'l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ldsm.sum'):>9.0f} "
              f"{g(r, 'smsp__inst_executed_op_shared_st.sum'):>9.0f} "
              f"{g(r, 'l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum'):>8.0f} "
              f"{g(r, 'l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum'):>10.0f} "
              f"{g(r, 'l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ldsm.sum'):>10.0f} "
              f"{g(r, 'gpu__time_duration.sum') / 1e6:>7.3f}")
    print("\nshared-memory wavefronts per SASS opcode (ideal / excessive), from ncu's source view")
    for r in results:
        ops = r.get("shared_by_opcode")
        text = "n/a" if ops is None else ", ".join(
            f"{op} {v[0]:.0f}/{v[1]:.0f}" for op, v in sorted(ops.items()))
        print(f"{'sm%d' % r['path']:>5} {r['d']:>4}  {text}")
    print("\noccupancy these registers, shared memory and block sizes give under each GPU's limits")
    print(f"{'path':>5} {'d':>4} " + " ".join(f"{name:>22}" for name in LIMITS))
    for r in results:
        cells = []
        for lim in LIMITS.values():
            blocks, warps = blocks_per_sm(g(r, METRICS[0]), g(r, METRICS[1]), g(r, METRICS[2]), lim)
            cells.append(f"{blocks} blocks, {warps} warps")
        print(f"{'sm%d' % r['path']:>5} {r['d']:>4} " + " ".join(f"{c:>22}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
