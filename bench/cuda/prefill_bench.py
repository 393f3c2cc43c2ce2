"""Prefill forward throughput of fastattn's CUDA backend beside PyTorch SDPA.

Times, in one process and on the same tensors, our attention forward called
through the C ABI (ctypes, the tensors' data pointers) and the peers PyTorch
SDPA flash (FlashAttention-2), cuDNN and memory-efficient backends plus a naive
matmul-softmax-matmul, on the FlashAttention benchmark grid: hidden 2048
(H = 2048 / D), B * L = 16384 tokens, D in {64, 128},
L in {512, ..., 16384}, causal and not, fp16 and bf16 (48 rows).

FLOPs = 4 * B * L * L * H * D, halved when causal. Each implementation is
timed with CUDA events after a warm-up; the median of the repeats is one
round's time. Every implementation is timed in --rounds rounds, in turn, and
reports its best round, so none is judged by the GPU state that the row's
checks or another implementation left behind.
Before timing, each row checks our output (poisoned with NaN first) against
SDPA flash within a loose sanity bound; any mismatch makes the exit status 1.

Prints a line per row while running, then a table with ratios and a summary;
--json writes one JSON line per (row, implementation).

    PYTHONUNBUFFERED=1 python3 bench/cuda/prefill_bench.py \
        --lib build-cuda/libfastattn.so --json prefill.jsonl --commit SHA [--quick]

--cuda-path forces one of our kernel families (70, 75, 80); --dtypes fp16 and
--target mem_eff give the Turing proxy run: the sm75 path on a newer GPU beside
the memory-efficient backend, the kernels that run on T4 and V100 today.

The ctypes mirror of include/fastattn/fastattn.h is importable without torch
(torch is imported in main()), so the layout can be checked on any machine.
"""
import argparse
import ctypes
import json
import math
import os
import sys

from bench_env import REPO_ROOT, median_ms, run_environment, settle_clocks  # beside this script
from fastattn_abi import (  # the ctypes mirror of fastattn.h, beside this script
    FA_BACKEND_CUDA, FA_DTYPE_BFLOAT16, FA_DTYPE_FLOAT16, FA_MASK_CAUSAL, FA_MASK_NONE,
    FA_STATUS_OK, FaAttentionArgs, FaRunOptions, FastattnError, fa_tensor_of, load_cuda_library,
)

# ---------------------------------------------------------------------------
# Benchmark (needs torch and a GPU)
# ---------------------------------------------------------------------------

IMPLS = ("ours", "flash", "cudnn", "mem_eff", "naive")
TOL = {"fp16": 0.02, "bf16": 0.05}  # loose sanity bound; the tests do the strict check


def flop_formula(causal):
    return "4*B*L*L*H*D/2" if causal else "4*B*L*L*H*D"


def flops(B, L, H, D, causal):
    return 4.0 * B * L * L * H * D / (2 if causal else 1)


GRID_LENS = (512, 1024, 2048, 4096, 8192, 16384)


def grid(quick, dtypes=("fp16", "bf16"), head_dims=(64, 128), lens=GRID_LENS):
    if quick:
        return [("fp16", 128, L, causal) for causal in (False, True) for L in (1024, 8192)]
    return [(dtype, D, L, causal)
            for dtype in dtypes for D in head_dims for causal in (False, True)
            for L in lens]


class Ours:
    """One fa_attention_forward call over fixed tensors; the structs are built once per row."""

    def __init__(self, lib, torch, q, k, v, out, causal, scale, cuda_path=0):
        fa_dtype = FA_DTYPE_FLOAT16 if q.dtype == torch.float16 else FA_DTYPE_BFLOAT16
        self.lib = lib
        self.keep = (q, k, v, out)  # the structs hold raw pointers into these
        self.args = FaAttentionArgs()
        self.args.q = fa_tensor_of(q, fa_dtype)
        self.args.k = fa_tensor_of(k, fa_dtype)
        self.args.v = fa_tensor_of(v, fa_dtype)
        self.args.out = fa_tensor_of(out, fa_dtype)
        # lse stays zeroed: data NULL skips it, as SDPA's forward computes none here.
        self.args.mask.kind = FA_MASK_CAUSAL if causal else FA_MASK_NONE
        self.args.softmax_scale = scale
        self.options = FaRunOptions()
        self.options.backend = FA_BACKEND_CUDA
        self.options.cuda_path = cuda_path
        # Same stream as the events and the peers, so the timing brackets our kernel.
        self.options.cuda_stream = torch.cuda.current_stream().cuda_stream or None

    def __call__(self):
        status = self.lib.fa_attention_forward(ctypes.byref(self.args), ctypes.byref(self.options))
        if status != FA_STATUS_OK:
            raise FastattnError(f"fa_attention_forward status {status}: "
                                f"{self.lib.fa_last_error().decode(errors='replace')}")


def sdpa_peer(torch, backend, qt, kt, vt, causal, scale):
    F = torch.nn.functional
    from torch.nn.attention import sdpa_kernel

    def run():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, scale=scale)
    return run


def naive_peer(torch, qt, kt, vt, causal, scale, L):
    # Built once per row so the timed region holds only the attention itself.
    mask = torch.ones(L, L, dtype=torch.bool, device="cuda").triu_(1) if causal else None

    def run():
        s = torch.matmul(qt, kt.transpose(-2, -1)) * scale
        if mask is not None:
            s = s.masked_fill(mask, float("-inf"))
        p = torch.softmax(s, dim=-1)
        del s
        return torch.matmul(p, vt)
    return run


def first_line(exc):
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:160]


def check_row(torch, ours, out, peers, dtype_name):
    """Runs ours once over a NaN-poisoned output and compares it with flash (or cuDNN)."""
    out.fill_(float("nan"))  # every element must be written by ours
    ours()
    torch.cuda.synchronize()
    if torch.isnan(out).any().item():
        return None, None, "MISMATCH (NaN left in output)"
    for name in ("flash", "cudnn"):
        try:
            ref = peers[name]().transpose(1, 2)  # back to (B, L, H, D)
            torch.cuda.synchronize()
        except Exception:  # backend not available for this shape: try the next one
            continue
        diff = (out.float() - ref.float()).abs().max().item()
        ok = diff <= TOL[dtype_name]
        return diff, name, "ok" if ok else f"MISMATCH (max diff {diff:.3g} > {TOL[dtype_name]})"
    return None, None, "MISMATCH (no flash or cuDNN reference ran)"


def time_peer(torch, fn, warmup, repeats):
    """(ms, status): status 'ok', 'OOM' or 'n/a: reason'."""
    oom = False
    try:
        return median_ms(torch, fn, warmup, repeats), "ok"
    except torch.cuda.OutOfMemoryError:
        oom = True
    except Exception as exc:  # e.g. no SDPA kernel for this shape
        status = "n/a: " + first_line(exc)
    # Outside the except block, so the traceback no longer pins the tensors.
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return None, "OOM" if oom else status


def run_row(torch, lib, row, opts):
    from torch.nn.attention import SDPBackend

    dtype_name, D, L, causal = row
    dtype = torch.float16 if dtype_name == "fp16" else torch.bfloat16
    H, B = 2048 // D, 16384 // L
    scale = 1.0 / math.sqrt(D)
    # Each input is B*L*H*D*2 bytes = 64 MiB, over the H100's 50 MB L2, so a
    # call streams from HBM as in a real prefill and no input rotation is needed.
    q, k, v = (torch.randn(B, L, H, D, device="cuda", dtype=dtype) for _ in range(3))
    out = torch.empty_like(q)
    # (B, H, L, D) views of the same storage: FlashAttention's own layout.
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))

    ours = Ours(lib, torch, q, k, v, out, causal, scale, opts.cuda_path)
    peers = {
        "flash": sdpa_peer(torch, SDPBackend.FLASH_ATTENTION, qt, kt, vt, causal, scale),
        "cudnn": sdpa_peer(torch, SDPBackend.CUDNN_ATTENTION, qt, kt, vt, causal, scale),
        "mem_eff": sdpa_peer(torch, SDPBackend.EFFICIENT_ATTENTION, qt, kt, vt, causal, scale),
    }
    result = {"row": row, "B": B, "H": H, "ms": {}, "status": {}, "maxdiff": None, "check": "skipped"}

    result["rounds_ms"] = {name: [] for name in ("ours", *peers)}
    try:
        if opts.check:
            result["maxdiff"], result["check_ref"], result["check"] = check_row(torch, ours, out, peers, dtype_name)
        result["status"]["ours"] = "ok"
    except FastattnError as exc:
        result["status"]["ours"] = "error: " + str(exc)
        result["check"] = "MISMATCH (our call failed)"

    for _ in range(opts.rounds):
        if result["status"]["ours"] == "ok":
            try:
                result["rounds_ms"]["ours"].append(median_ms(torch, ours, opts.warmup, opts.repeats))
            except FastattnError as exc:
                result["status"]["ours"] = "error: " + str(exc)
                result["check"] = "MISMATCH (our call failed)" if opts.check else result["check"]
        for name, fn in peers.items():
            if result["status"].get(name, "ok") != "ok":
                continue  # failed in an earlier round
            ms, result["status"][name] = time_peer(torch, fn, opts.warmup, opts.repeats)
            result["rounds_ms"][name].append(ms)
    for name, times in result["rounds_ms"].items():
        done = [ms for ms in times if ms is not None]
        result["ms"][name] = min(done) if done and result["status"][name] == "ok" else None

    # The naive peer's L x L scores make it the slow one (~65 ms a call at
    # L=16384 causal): fewer calls keep the full grid within a few minutes.
    naive = naive_peer(torch, qt, kt, vt, causal, scale, L)
    result["ms"]["naive"], result["status"]["naive"] = time_peer(
        torch, naive, min(opts.warmup, 2), min(opts.repeats, 5))

    del ours, peers, naive, q, k, v, out, qt, kt, vt
    torch.cuda.empty_cache()  # room for the next row's naive scores
    result["tflops"] = {name: (flops(B, L, H, D, causal) / (ms * 1e-3) / 1e12 if ms else None)
                        for name, ms in result["ms"].items()}
    return result


def fmt_tf(x, status):
    if x is not None:
        return f"{x:.1f}"
    return "OOM" if status == "OOM" else ("err" if status.startswith("error") else "n/a")


def ratio(a, b):
    return a / b if a is not None and b is not None else None


def fmt_ratio(r):
    return f"{r:.2f}x" if r is not None else "-"


def print_row_line(res):
    dtype_name, D, L, causal = res["row"]
    parts = [f"{dtype_name} D={D} L={L} causal={int(causal)} B={res['B']} H={res['H']}"]
    for name in IMPLS:
        ms, tf, st = res["ms"][name], res["tflops"][name], res["status"][name]
        parts.append(f"{name} {ms:.3f} ms {tf:.1f} TF/s" if ms is not None else f"{name} {st}")
    diff = f" maxdiff {res['maxdiff']:.3g}" if res["maxdiff"] is not None else ""
    parts.append(f"check {res['check']}{diff}")
    print(" | ".join(parts), flush=True)


def write_json(fh, res, env):
    dtype_name, D, L, causal = res["row"]
    for name in IMPLS:
        rec = {**env, "impl": name, "dtype": dtype_name, "d": D, "L": L, "B": res["B"], "H": res["H"],
               "causal": causal, "ms": res["ms"][name], "tflops": res["tflops"][name],
               "flop_formula": flop_formula(causal), "status": res["status"][name]}
        if name in res["rounds_ms"]:
            rec["rounds_ms"] = res["rounds_ms"][name]
        if name == "ours":
            rec["maxdiff"], rec["check"] = res["maxdiff"], res["check"]
        fh.write(json.dumps(rec) + "\n")
    fh.flush()


def print_table(results):
    head = (f"{'dtype':5} {'D':>4} {'L':>6} {'causal':>6} {'ours':>7} {'flash':>7} {'cudnn':>7} "
            f"{'mem-eff':>7} {'naive':>7} {'/flash':>7} {'/cudnn':>7} {'/memeff':>7} {'/naive':>7} "
            f"{'maxdiff':>9}")
    print("\nTF/s (" + "4*B*L*L*H*D, halved when causal" + "); ratios are ours / peer", flush=True)
    print(head)
    print("-" * len(head))
    for res in results:
        dtype_name, D, L, causal = res["row"]
        tf, st = res["tflops"], res["status"]
        cells = [fmt_tf(tf[n], st[n]) for n in IMPLS]
        ratios = [fmt_ratio(ratio(tf["ours"], tf[n])) for n in ("flash", "cudnn", "mem_eff", "naive")]
        diff = f"{res['maxdiff']:.2e}" if res["maxdiff"] is not None else "-"
        if res["check"].startswith("MISMATCH"):
            diff += " MISMATCH"
        print(f"{dtype_name:5} {D:4d} {L:6d} {int(causal):6d} " + " ".join(f"{c:>7}" for c in cells)
              + " " + " ".join(f"{r:>7}" for r in ratios) + f" {diff:>9}", flush=True)


def print_summary(results, target):
    vs_target = [ratio(r["tflops"]["ours"], r["tflops"][target]) for r in results]
    vs_naive = [ratio(r["tflops"]["ours"], r["tflops"]["naive"]) for r in results]
    known_target = [x for x in vs_target if x is not None]
    known_naive = [x for x in vs_naive if x is not None]
    print("\nsummary:", flush=True)
    print(f"  min ours/{target} over {len(known_target)} of {len(results)} rows: "
          + (f"{min(known_target):.2f}x" if known_target else "-"))
    print(f"  min ours/naive over {len(known_naive)} rows where naive ran: "
          + (f"{min(known_naive):.2f}x" if known_naive else "-"))
    # A row where either side did not run counts as not shown, hence not >= 1.0x.
    all_ge = len(known_target) == len(results) and all(x >= 1.0 for x in known_target)
    print(f"  every row >= 1.0x {target}: {'yes' if all_ge else 'no'}", flush=True)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default=os.path.join(REPO_ROOT, "build-cuda", "libfastattn.so"),
                    help="the fastattn shared library (default: build-cuda/libfastattn.so in the repository)")
    ap.add_argument("--json", help="write one JSON line per (row, implementation) here")
    ap.add_argument("--commit", help="commit of the measured tree (default: git rev-parse HEAD, else 'unknown')")
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per implementation (median reported)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed calls before timing")
    ap.add_argument("--rounds", type=int, default=2,
                    help="times each implementation is timed, in turn (best round reported)")
    ap.add_argument("--quick", action="store_true", help="only fp16, D=128, L in {1024, 8192}, causal and not")
    ap.add_argument("--cuda-path", type=int, default=0, choices=(0, 70, 75, 80, 90),
                    help="force our kernel family (fa_cuda_path); 0 = chosen by the device")
    ap.add_argument("--dtypes", default="fp16,bf16", help="comma-separated subset of fp16,bf16")
    ap.add_argument("--head-dims", default="64,128",
                    help="comma-separated subset of 64,128,256 (the grid: 64,128; --quick runs D=128 only)")
    ap.add_argument("--lens", default=",".join(str(L) for L in GRID_LENS),
                    help="comma-separated subset of the grid's sequence lengths")
    ap.add_argument("--target", default="flash", choices=("flash", "cudnn", "mem_eff"),
                    help="the peer the summary's >= 1.0x line compares with")
    ap.add_argument("--check", dest="check", action="store_true", default=True,
                    help="compare ours with SDPA flash per row before timing (default)")
    ap.add_argument("--no-check", dest="check", action="store_false", help="skip the comparison")
    opts = ap.parse_args(argv)
    if opts.repeats < 1 or opts.warmup < 0 or opts.rounds < 1:
        ap.error("--repeats and --rounds must be >= 1 and --warmup >= 0")
    opts.dtypes = tuple(opts.dtypes.split(","))
    if not opts.dtypes or any(d not in ("fp16", "bf16") for d in opts.dtypes):
        ap.error("--dtypes takes fp16, bf16 or both, comma-separated")
    try:
        opts.head_dims = tuple(int(d) for d in opts.head_dims.split(","))
    except ValueError:
        opts.head_dims = ()
    if not opts.head_dims or any(d not in (64, 128, 256) for d in opts.head_dims):
        ap.error("--head-dims takes a comma-separated subset of 64, 128 and 256")
    try:
        opts.lens = tuple(int(L) for L in opts.lens.split(","))
    except ValueError:
        opts.lens = ()
    if not opts.lens or any(L not in GRID_LENS for L in opts.lens):
        ap.error("--lens takes a comma-separated subset of " + ",".join(str(L) for L in GRID_LENS))
    return opts


def main(argv=None):
    opts = parse_args(argv)
    import torch

    lib = load_cuda_library(torch, opts.lib)

    env = {**run_environment(torch, opts.commit),
           "cuda_path": opts.cuda_path}
    print(f"device {env['device']} | driver {env['driver']} | torch {env['torch']} | CUDA {env['cuda']} | "
          f"cuDNN {env['cudnn']} | commit {env['commit']} | fastattn {lib.fa_version_string().decode()} | "
          f"our path {'auto' if not opts.cuda_path else 'sm%d (forced)' % opts.cuda_path}",
          flush=True)
    print(f"FLOPs = 4*B*L*L*H*D, halved when causal; hidden 2048 (H = 2048/D), B*L = 16384; "
          f"median of {opts.repeats} event-timed calls after {opts.warmup} warm-ups, best of {opts.rounds} rounds "
          f"(naive: {min(opts.repeats, 5)} after {min(opts.warmup, 2)}); check {'on' if opts.check else 'off'}",
          flush=True)

    fh = open(opts.json, "w") if opts.json else None
    results = []
    settle_clocks(torch)
    for row in grid(opts.quick, opts.dtypes, opts.head_dims, opts.lens):
        res = run_row(torch, lib, row, opts)
        results.append(res)
        print_row_line(res)
        if fh:
            write_json(fh, res, env)
    if fh:
        fh.close()

    print_table(results)
    print_summary(results, opts.target)
    failed = [r for r in results if r["check"].startswith("MISMATCH") or r["status"]["ours"] != "ok"]
    if failed:
        print(f"\nFAILED: {len(failed)} row(s) with MISMATCH or an error from our call", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
