"""Decode throughput of fastattn's CUDA backend over a KV cache beside PyTorch SDPA.

Times, in one process, one decoding step (Lq = 1 new query per sequence, no
append, no rotary, no mask) of fa_plan_decode / fa_run_decode called through
the C ABI (ctypes, the tensors' data pointers) over two cache layouts,
contiguous [B, Lk, Hkv, D] (page_table NULL) and paged with page size 16
(k_cache [B*Lk/16, 16, Hkv, D], a random permutation of the pages in an int32
device page table [B, Lk/16]), and the peers PyTorch SDPA flash
(FlashAttention-2) and cuDNN over the contiguous cache, on the grid
B in {1, 16, 64}, Hq = 32, Hkv in {8, 32}, D = 128,
Lk in {1024, 4096, 32768, 131072}, fp16 and bf16 (48 rows; rows whose K+V
cache exceeds --max-cache-gib are skipped).

Bytes = the K+V actually read = 2*B*Lk*Hkv*D*2, the same figure for both our
layouts and for the peers (also where a peer needed K/V expanded to Hq heads).
The reference bandwidth is a device-to-device torch copy of 1 GiB measured at
the start of the same run, counted as read + write (2*bytes/t); "% copy" is
our bytes/s over that figure.

Beside them each row times a copy that moves the row's K+V byte count (half
read, half written: dst.copy_(src) of bytes/2, rotated over as many buffers as
the inputs), under the same protocol. Its "% copy" says what a copy itself
reaches at this size, with the per-call costs every implementation pays (the
event pair, the kernel's start and its last wave); where it is below 85%, so
is any kernel that reads those bytes. Rows with a cache over 2 GiB skip it.

Each call is timed with CUDA events after a warm-up; the median of the repeats
is one round's time. Every implementation is timed in --rounds rounds, in turn
with the others, and reports its best round. Inputs (cache, q, out) exist in enough copies that the set
rotated through exceeds 256 MiB (at most 64 copies), and in two where one
copy is up to 4 GiB; consecutive calls use different copies, so no call finds
the previous call's data in the 50 MB L2. Before the timed calls the stream is held by a GPU sleep long enough
for the host to queue them all, so each event pair brackets the kernels and
not the host's call overhead (ctypes, Python, SDPA dispatch).

Before timing, each row poisons our output with NaN, runs once and compares
with SDPA (flash, else cuDNN, else math) within a loose sanity bound; runs the
paged kernel with an identity page table, which must match our contiguous
output within the rounding of the same kernel; and runs the paged kernel with
the random page table against our contiguous kernel over the gathered cache
(when memory allows the gathered copy). Any mismatch, or any error from our
calls, makes the exit status 1.

Prints a line per row while running, then a table with ratios and a summary;
--json writes one JSON line per (row, implementation).

    PYTHONUNBUFFERED=1 python3 bench/cuda/decode_bench.py \
        --lib build-cuda/libfastattn.so --json decode.jsonl --commit SHA [--quick]

The ctypes mirror of include/fastattn/fastattn.h is importable without torch
(torch is imported in main()); --selftest-layout prints its sizes and offsets
without torch or a GPU, to compare with the C compiler's.
"""
import argparse
import ctypes
import json
import math
import os
import sys
import time

from bench_env import REPO_ROOT, median_ms, run_environment  # beside this script
from fastattn_abi import (  # the ctypes mirror of fastattn.h, beside this script
    FA_BACKEND_CUDA, FA_DTYPE_BFLOAT16, FA_DTYPE_FLOAT16, FA_MASK_NONE, FA_ROTARY_NONE,
    FA_STATUS_OK, FaDecodeArgs, FaDecodePlan, FaRunOptions, FastattnError, fa_tensor_of,
    int32_ptr, layout_lines, load_cuda_library,
)

# ---------------------------------------------------------------------------
# Benchmark (needs torch and a GPU)
# ---------------------------------------------------------------------------

HQ, D, PAGE = 32, 128, 16
SAME_BYTES_COPY = "copy_same_bytes"
IMPLS = ("ours_contiguous", "ours_paged16", "flash", "cudnn", SAME_BYTES_COPY)
PEERS = ("flash", "cudnn")
TOL = {"fp16": 0.02, "bf16": 0.05}     # loose sanity bound vs SDPA; the tests do the strict check
TIGHT = {"fp16": 1e-3, "bf16": 1e-2}   # our kernel vs itself over the same keys in another layout
GIB = 1 << 30
ROTATE_BYTES = 256 << 20               # the rotated input set must exceed this (L2 is 50 MB)
MAX_COPIES = 64
TWO_COPIES_UP_TO = 4 << 30
COPY_BYTES = 1 << 30                   # the copy-bandwidth buffer
COPY_REPEATS = 20
SAME_BYTES_COPY_UP_TO = 2 << 30        # rows whose cache is larger need no floor (they read at copy speed)
SETTLE_AFTER_FREEING = 8 * GIB         # after freeing this much, the next row waits SETTLE_SECONDS
SETTLE_SECONDS = 2.0
BIG_KEYS = 8 << 20                     # summary: rows with B*Hkv*Lk >= 8M keys
BYTES_FORMULA = "2*B*Lk*Hkv*D*2"


def grid(quick, only=None, axes=None):
    """The rows to run; `axes` maps "dtype", "B", "Hkv", "Lk" to values that replace the
    grid's, `only` to the values to keep."""
    values = {"dtype": ["fp16", "bf16"], "B": [1, 16, 64], "Hkv": [8, 32],
              "Lk": [1024, 4096, 32768, 131072]}
    if quick:
        values = {"dtype": ["fp16"], "B": [1, 16], "Hkv": [8], "Lk": [4096, 32768]}
    values.update(axes or {})
    rows = [(dtype, B, Hkv, Lk) for dtype in values["dtype"] for B in values["B"]
            for Hkv in values["Hkv"] for Lk in values["Lk"]]
    if only:
        keys = ("dtype", "B", "Hkv", "Lk")
        rows = [r for r in rows if all(k not in only or v in only[k] for k, v in zip(keys, r))]
    return rows


def parse_only(text, flag="--only"):
    """--only "B=16,64 Lk=1024": the grid's rows restricted to these values (also --axes)."""
    only = {}
    for item in text.split():
        key, _, values = item.partition("=")
        if key not in ("dtype", "B", "Hkv", "Lk") or not values:
            raise ValueError(f"{flag}: '{item}' is not KEY=V[,V...] with KEY one of dtype, B, Hkv, Lk")
        try:
            only[key] = [v if key == "dtype" else int(v) for v in values.split(",")]
        except ValueError:
            raise ValueError(f"{flag}: '{item}' has a value that is not an integer") from None
        if key == "dtype" and any(v not in ("fp16", "bf16") for v in only[key]):
            raise ValueError(f"{flag}: '{item}': dtype takes fp16, bf16")
        if key == "Lk" and any(v < PAGE or v % PAGE for v in only[key]):
            raise ValueError(f"{flag}: '{item}': Lk takes positive multiples of the page size {PAGE}")
        if key == "Hkv" and any(v < 1 or HQ % v for v in only[key]):
            raise ValueError(f"{flag}: '{item}': Hkv takes divisors of Hq = {HQ}")
        if key == "B" and any(v < 1 for v in only[key]):
            raise ValueError(f"{flag}: '{item}': B takes positive integers")
    return only


def cache_bytes_of(B, Hkv, Lk):
    return 2 * B * Lk * Hkv * D * 2


def copies_for(per_copy_bytes, limit=MAX_COPIES):
    """Copies whose total exceeds ROTATE_BYTES (at most `limit`), and two of a cache up to
    TWO_COPIES_UP_TO: with one, each call would find the end of the previous call's reads in L2,
    a share that depends on the order in which a kernel reads (measured: up to 15% of the time
    at 256 MiB). Past that one copy, of which L2 holds at most about 1%."""
    if per_copy_bytes > ROTATE_BYTES:
        return 2 if per_copy_bytes <= TWO_COPIES_UP_TO else 1
    return max(2, min(limit, ROTATE_BYTES // per_copy_bytes + 1))


def first_line(exc):
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:160]


def free_device_bytes(torch):
    """Bytes a new allocation can get: free on the device plus what torch caches unused."""
    free, _ = torch.cuda.mem_get_info()
    return free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated()


def fits(torch, nbytes, margin=2 * GIB):
    return nbytes + margin <= free_device_bytes(torch)


class GpuSleep:
    """Holds the stream with torch.cuda._sleep while the host queues the timed calls.

    Decode kernels of a few microseconds are shorter than the host's cost of a
    call (ctypes, Python, SDPA's dispatch), so without it the GPU would idle
    between an event and the kernel and the event pair would time the host.
    """

    def __init__(self, torch):
        self.torch = torch
        self.cycles_per_ms = None
        if not hasattr(torch.cuda, "_sleep"):
            return
        torch.cuda._sleep(1000)
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        torch.cuda._sleep(10 ** 7)
        e.record()
        torch.cuda.synchronize()
        ms = s.elapsed_time(e)
        self.cycles_per_ms = 10 ** 7 / ms if ms > 0 else None

    def __call__(self, ms):
        if self.cycles_per_ms:
            self.torch.cuda._sleep(int(min(ms, 200.0) * self.cycles_per_ms))


def rotating(calls):
    """One callable that runs calls[0], calls[1], ... in turn: consecutive calls use different copies."""
    state = [0]

    def run():
        i = state[0]
        state[0] = (i + 1) % len(calls)
        return calls[i]()
    return run


class OursDecode:
    """fa_run_decode over copies of the inputs: one fa_plan_decode, the structs built once per copy.

    copies: dicts with q [B, 1, Hq, D], k, v [B, Lk, Hkv, D] and out like q.
    page_table: None for the contiguous cache; else an int32 device tensor
    [B, Lk/PAGE] over the same storage viewed as [B*Lk/PAGE, PAGE, Hkv, D].
    plan: reuse a plan (valid for other pointers and pages, same problem).
    """

    def __init__(self, lib, torch, copies, fa_dtype, cache_seqlens, Lk, scale, page_table=None,
                 plan=None, workspace=None, num_splits=0):
        self.lib, self.fa_dtype, self.Lk, self.scale = lib, fa_dtype, Lk, scale
        # The structs hold raw pointers into these.
        self.copies, self.cache_seqlens, self.page_table = copies, cache_seqlens, page_table
        self.options = FaRunOptions()
        self.options.backend = FA_BACKEND_CUDA
        # Same stream as the events and the peers, so the timing brackets our kernels.
        self.options.cuda_stream = torch.cuda.current_stream().cuda_stream or None
        self.args = []
        for c in copies:
            a = FaDecodeArgs()
            a.q = fa_tensor_of(c["q"], fa_dtype)
            if page_table is None:
                a.k_cache = fa_tensor_of(c["k"], fa_dtype)
                a.v_cache = fa_tensor_of(c["v"], fa_dtype)
            else:
                B, _, Hkv, _ = c["k"].shape
                a.k_cache = fa_tensor_of(c["k"].view(B * Lk // PAGE, PAGE, Hkv, D), fa_dtype)
                a.v_cache = fa_tensor_of(c["v"].view(B * Lk // PAGE, PAGE, Hkv, D), fa_dtype)
                a.page_table = int32_ptr(page_table)
                a.page_table_stride = page_table.stride(0)
                a.max_pages_per_seq = page_table.shape[1]
            a.cache_seqlens = int32_ptr(cache_seqlens)
            # k_new, v_new, rotary, lse stay zeroed: no append, no rotary, no LSE.
            a.rotary_style = FA_ROTARY_NONE
            a.out = fa_tensor_of(c["out"], fa_dtype)
            a.mask.kind = FA_MASK_NONE
            a.softmax_scale = scale
            a.max_seqlen_k = Lk
            a.num_splits = num_splits  # 0: the planner chooses
            self.args.append(a)
        self.refs = [ctypes.byref(a) for a in self.args]
        if plan is None:
            plan = FaDecodePlan()
            status = lib.fa_plan_decode(self.refs[0], ctypes.byref(self.options), ctypes.byref(plan))
            self._raise_on(status, "fa_plan_decode")
        self.plan = plan
        if workspace is None:
            workspace = torch.empty(max(1, int(plan.workspace_bytes)), dtype=torch.uint8, device="cuda")
        self.workspace = workspace
        self.ws_ptr = ctypes.c_void_p(workspace.data_ptr())
        self.ws_bytes = ctypes.c_uint64(workspace.numel())
        self.plan_ref, self.opt_ref = ctypes.byref(self.plan), ctypes.byref(self.options)
        self.calls = [self._call(r) for r in self.refs]

    def _raise_on(self, status, what):
        if status != FA_STATUS_OK:
            raise FastattnError(f"{what} status {status}: "
                                f"{self.lib.fa_last_error().decode(errors='replace')}")

    def _call(self, ref):
        run_decode, lib = self.lib.fa_run_decode, self.lib
        plan_ref, ws_ptr, ws_bytes, opt_ref = self.plan_ref, self.ws_ptr, self.ws_bytes, self.opt_ref

        def run():
            status = run_decode(ref, plan_ref, ws_ptr, ws_bytes, opt_ref)
            if status != FA_STATUS_OK:
                raise FastattnError(f"fa_run_decode status {status}: "
                                    f"{lib.fa_last_error().decode(errors='replace')}")
        return run


def sdpa_call(torch, backend, qt, kt, vt, scale, gqa):
    F = torch.nn.functional
    from torch.nn.attention import sdpa_kernel
    # enable_gqa only where needed, so MHA rows also run on a torch without it.
    kwargs = {"enable_gqa": True} if gqa else {}

    def run():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(qt, kt, vt, scale=scale, **kwargs)
    return run


class Peer:
    def __init__(self, fn=None, expanded=False, status="ok", out0=None, keep=None):
        self.fn, self.expanded, self.status, self.out0, self.keep = fn, expanded, status, out0, keep


def setup_peer(torch, backend, copies, Hkv, scale, cache_bytes):
    """A rotating SDPA call over the contiguous cache, K/V as (B, Hkv, Lk, D) views.

    If the backend refuses GQA views, falls back to K/V expanded to Hq heads
    with repeat_interleave, but only if those copies fit in memory; else n/a.
    out0 is the trial output on copy 0 (B, Hq, 1, D), a reference for the check.
    """
    gqa = HQ != Hkv
    calls = [sdpa_call(torch, backend, c["qt"], c["kt"], c["vt"], scale, gqa) for c in copies]
    err = None
    try:
        out0 = calls[0]()
        torch.cuda.synchronize()
        return Peer(rotating(calls), out0=out0)
    except Exception as exc:  # no SDPA kernel of this backend for these inputs
        err = first_line(exc)
    # Outside the except block, so the traceback no longer pins any tensors.
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    if not gqa:
        return Peer(status="n/a: " + err)
    exp_per_copy = cache_bytes * (HQ // Hkv)
    n = min(len(copies), copies_for(exp_per_copy + 2 * copies[0]["q"].numel() * 2))
    need = n * exp_per_copy
    if not fits(torch, need):
        return Peer(status=f"n/a: {err} (expanded K/V would need {need / GIB:.1f} GiB)")
    err2, oom = None, False
    try:
        rep = HQ // Hkv
        exp = [(c["qt"], c["kt"].repeat_interleave(rep, dim=1), c["vt"].repeat_interleave(rep, dim=1))
               for c in copies[:n]]
        calls = [sdpa_call(torch, backend, qt, kt, vt, scale, False) for qt, kt, vt in exp]
        out0 = calls[0]()
        torch.cuda.synchronize()
        return Peer(rotating(calls), expanded=True, out0=out0, keep=exp)
    except torch.cuda.OutOfMemoryError:
        oom = True
    except Exception as exc:
        err2 = first_line(exc)
    exp = calls = None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return Peer(status=f"n/a: {err}; expanded: {'OOM' if oom else err2}")


def time_call(torch, fn, warmup, repeats, sleep):
    """(ms, status): status 'ok', 'OOM' or 'n/a: reason' ('error: ...' for ours)."""
    oom = False
    try:
        return median_ms(torch, fn, warmup, repeats, sleep), "ok"
    except FastattnError as exc:
        status = "error: " + str(exc)
    except torch.cuda.OutOfMemoryError:
        oom = True
    except Exception as exc:
        status = "n/a: " + first_line(exc)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return None, "OOM" if oom else status


def max_diff(torch, a, b):
    return (a.float() - b.float()).abs().max().item()


def math_reference(torch, c, scale, Hkv):
    """SDPA math on copy 0, when flash and cuDNN gave nothing; None if it cannot run.

    Math expands GQA K/V to Hq heads (and may upcast), so where the whole batch
    does not fit it runs one sequence at a time.
    """
    from torch.nn.attention import SDPBackend
    B, Lk = c["k"].shape[0], c["k"].shape[1]
    per_seq = cache_bytes_of(1, HQ, Lk) * 2  # K+V expanded to Hq heads, float32
    if fits(torch, B * per_seq):
        chunks = [slice(0, B)]
    elif fits(torch, per_seq):
        chunks = [slice(b, b + 1) for b in range(B)]
    else:
        return None
    try:
        outs = [sdpa_call(torch, SDPBackend.MATH, c["qt"][s], c["kt"][s], c["vt"][s], scale, HQ != Hkv)()
                for s in chunks]
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)
        torch.cuda.synchronize()
        return out
    except Exception:
        pass
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return None


def check_row(torch, res, ours_c, ours_p, ours_id, copies, peers, scale, Hkv, Lk, dtype_name):
    """Poisons and runs ours; returns (status, maxdiffs). Status 'ok' or 'MISMATCH (...)'.

    ours_c, ours_p: contiguous and random-paged; ours_id: paged over the
    identity page table, copy 0 only.
    """
    c0, problems, diffs = copies[0], [], {}
    out = c0["out"]

    def run_poisoned(call, name):
        out.fill_(float("nan"))  # every element must be written by ours
        call()
        torch.cuda.synchronize()
        if torch.isnan(out).any().item():
            problems.append(f"NaN left in output ({name})")
            return None
        return out.clone()

    # 1. Contiguous vs SDPA (flash, else cuDNN, else math), loose.
    contig = run_poisoned(ours_c.calls[0], "contiguous")
    ref, ref_name = None, None
    for pname in PEERS:
        if peers[pname].out0 is not None:
            ref, ref_name = peers[pname].out0, pname
            break
    if ref is None:
        ref, ref_name = math_reference(torch, c0, scale, Hkv), "math"
    res["check_ref"] = ref_name if ref is not None else None
    if ref is None:
        problems.append("no SDPA reference ran")
    elif contig is not None:
        d = diffs["vs_sdpa"] = max_diff(torch, contig, ref.transpose(1, 2))
        if not d <= TOL[dtype_name]:
            problems.append(f"contiguous vs {ref_name} max diff {d:.3g} > {TOL[dtype_name]}")

    # 2. Paged with the identity page table: the contiguous layout again, tight.
    paged_id = run_poisoned(ours_id.calls[0], "paged identity")
    if paged_id is not None and contig is not None:
        d = diffs["paged_identity"] = max_diff(torch, paged_id, contig)
        if not d <= TIGHT[dtype_name]:
            problems.append(f"paged identity vs contiguous max diff {d:.3g} > {TIGHT[dtype_name]}")

    # 3. Paged with the random page table vs our contiguous kernel over the
    #    gathered cache (the identity check cannot see a page table ignored).
    paged_rand = run_poisoned(ours_p.calls[0], "paged random")
    B = c0["k"].shape[0]
    if paged_rand is not None and fits(torch, cache_bytes_of(B, Hkv, Lk)):
        pt = ours_p.page_table.long()
        shape = (B, Lk, Hkv, D)
        g = {"q": c0["q"], "out": torch.empty_like(c0["out"]),
             "k": c0["k"].view(-1, PAGE, Hkv, D)[pt].view(shape),
             "v": c0["v"].view(-1, PAGE, Hkv, D)[pt].view(shape)}
        # Other pointers, same problem: the contiguous plan stays valid.
        gathered = OursDecode(ours_c.lib, torch, [g], ours_c.fa_dtype, ours_c.cache_seqlens, Lk, scale,
                              plan=ours_c.plan, workspace=ours_c.workspace)
        g["out"].fill_(float("nan"))
        gathered.calls[0]()
        torch.cuda.synchronize()
        d = diffs["paged_random"] = max_diff(torch, paged_rand, g["out"])
        if not d <= TIGHT[dtype_name]:  # NaN fails here too
            problems.append(f"paged random vs contiguous over gathered cache max diff {d:.3g} "
                            f"> {TIGHT[dtype_name]}")
        del gathered, g, pt
        torch.cuda.empty_cache()
    elif paged_rand is not None:
        diffs["paged_random"] = None  # no room for the gathered copy: not checked
    return ("ok" if not problems else "MISMATCH (" + "; ".join(problems) + ")"), diffs


def skipped_result(row, status):
    dtype_name, B, Hkv, Lk = row
    return {"row": row, "skipped": status, "cache_bytes": cache_bytes_of(B, Hkv, Lk), "copies": 0,
            "splits": {}, "workspace": {}, "ms": {n: None for n in IMPLS},
            "status": {n: status for n in IMPLS}, "expanded": {}, "check": "skipped", "maxdiff": {},
            "tbps": {n: None for n in IMPLS}, "frac_copy": {n: None for n in IMPLS}}


def run_row(torch, lib, row, opts, sleep, copy_rw_tbps):
    from torch.nn.attention import SDPBackend

    dtype_name, B, Hkv, Lk = row
    cache_bytes = cache_bytes_of(B, Hkv, Lk)
    if cache_bytes > opts.max_cache_gib * GIB:
        return skipped_result(row, f"skipped (cache {cache_bytes / GIB:g} GiB > limit "
                                   f"{opts.max_cache_gib:g} GiB)")
    dtype = torch.float16 if dtype_name == "fp16" else torch.bfloat16
    fa_dtype = FA_DTYPE_FLOAT16 if dtype_name == "fp16" else FA_DTYPE_BFLOAT16
    scale = 1.0 / math.sqrt(D)
    n_copies = copies_for(cache_bytes + 2 * B * HQ * D * 2)
    result = {"row": row, "skipped": None, "cache_bytes": cache_bytes, "copies": n_copies,
              "splits": {}, "workspace": {}, "ms": {}, "status": {}, "expanded": {},
              "check": "skipped", "maxdiff": {}}

    try:
        copies = []
        for _ in range(n_copies):
            c = {"q": torch.randn(B, 1, HQ, D, device="cuda", dtype=dtype),
                 "k": torch.randn(B, Lk, Hkv, D, device="cuda", dtype=dtype),
                 "v": torch.randn(B, Lk, Hkv, D, device="cuda", dtype=dtype)}
            c["out"] = torch.empty_like(c["q"])
            # (B, H, L, D) views of the same storage: SDPA's layout.
            c["qt"], c["kt"], c["vt"] = (c[n].transpose(1, 2) for n in ("q", "k", "v"))
            copies.append(c)
    except torch.cuda.OutOfMemoryError:
        copies = None
    if copies is None:
        torch.cuda.empty_cache()
        return skipped_result(row, f"skipped (OOM allocating {n_copies} x {cache_bytes / GIB:.2f} GiB)")

    pages = Lk // PAGE
    cache_seqlens = torch.full((B,), Lk, dtype=torch.int32, device="cuda")  # every key is in the cache
    page_table = torch.randperm(B * pages, device="cuda").to(torch.int32).view(B, pages)
    identity = torch.arange(B * pages, device="cuda", dtype=torch.int32).view(B, pages)

    # One fa_plan_decode per layout; the paged plan stays valid for other
    # pages, so the identity table reuses it.
    ours, ours_id = {}, None
    for name, table in (("ours_contiguous", None), ("ours_paged16", page_table)):
        try:
            ours[name] = OursDecode(lib, torch, copies, fa_dtype, cache_seqlens, Lk, scale, page_table=table,
                                    num_splits=opts.splits)
        except FastattnError as exc:
            result["ms"][name], result["status"][name] = None, "error: " + str(exc)
    if "ours_paged16" in ours:
        p = ours["ours_paged16"]
        ours_id = OursDecode(lib, torch, copies[:1], fa_dtype, cache_seqlens, Lk, scale,
                             page_table=identity, plan=p.plan, workspace=p.workspace)
    for name, o in ours.items():
        result["splits"][name] = int(o.plan.num_splits)
        result["workspace"][name] = int(o.plan.workspace_bytes)

    peers = {"flash": setup_peer(torch, SDPBackend.FLASH_ATTENTION, copies, Hkv, scale, cache_bytes),
             "cudnn": setup_peer(torch, SDPBackend.CUDNN_ATTENTION, copies, Hkv, scale, cache_bytes)}

    if opts.check:
        if len(ours) == 2 and ours_id is not None:
            try:
                result["check"], result["maxdiff"] = check_row(
                    torch, result, ours["ours_contiguous"], ours["ours_paged16"], ours_id, copies, peers,
                    scale, Hkv, Lk, dtype_name)
            except FastattnError as exc:
                result["check"] = "MISMATCH (our call failed: " + str(exc) + ")"
        else:
            result["check"] = "MISMATCH (our call failed)"
    for p in peers.values():
        p.out0 = None  # the references are no longer needed
    same_bytes_copy, result["status"][SAME_BYTES_COPY] = same_bytes_copy_call(torch, cache_bytes, n_copies)

    # Every implementation is timed once per round, in turn; each reports its best round, so
    # none is judged by the GPU state another one's timing or the checks left behind.
    fns = {name: rotating(o.calls) for name, o in ours.items()}
    for name, p in peers.items():
        result["expanded"][name] = p.expanded
        if p.fn is None:
            result["ms"][name], result["status"][name] = None, p.status
        else:
            fns[name] = p.fn
    if same_bytes_copy is not None:
        fns[SAME_BYTES_COPY] = same_bytes_copy
    else:
        result["ms"][SAME_BYTES_COPY] = None
    result["rounds_ms"] = {name: [] for name in fns}
    for _ in range(opts.rounds):
        for name, fn in fns.items():
            if result["status"].get(name, "ok") != "ok":
                continue  # failed in an earlier round
            ms, result["status"][name] = time_call(torch, fn, opts.warmup, opts.repeats, sleep)
            result["rounds_ms"][name].append(ms)
    for name in fns:
        done = [ms for ms in result["rounds_ms"][name] if ms is not None]
        result["ms"][name] = min(done) if done and result["status"][name] == "ok" else None
        if name in peers and peers[name].expanded and result["status"][name] == "ok":
            result["status"][name] = "ok (expanded)"

    p = o = None  # the loop variables also hold tensors
    del ours, ours_id, peers, copies, cache_seqlens, page_table, identity, same_bytes_copy, fns
    torch.cuda.empty_cache()
    if n_copies * cache_bytes >= SETTLE_AFTER_FREEING:
        # On an H100 and an H200 the first calls after freeing a 32 GiB cache ran 13-18% slower
        # for about half a second (whichever implementation came first; the same addresses were
        # at full speed later), so the next row waits that out instead of timing it.
        time.sleep(SETTLE_SECONDS)
    result["tbps"] = {n: (cache_bytes / (ms * 1e-3) / 1e12 if ms else None) for n, ms in result["ms"].items()}
    result["frac_copy"] = {n: (tb / copy_rw_tbps if tb is not None else None) for n, tb in result["tbps"].items()}
    return result


def same_bytes_copy_call(torch, cache_bytes, n_copies):
    """(callable, status): dst.copy_(src) moving cache_bytes (half read, half written), over
    n_copies buffer pairs in turn so that, like the inputs, no call finds its data in L2."""
    if cache_bytes > SAME_BYTES_COPY_UP_TO:
        return None, f"n/a: cache over {SAME_BYTES_COPY_UP_TO / GIB:g} GiB"
    half = cache_bytes // 2
    if not fits(torch, 2 * half * n_copies):
        return None, "n/a: no room"
    pairs = []
    for _ in range(n_copies):
        src = torch.randint(0, 256, (half,), dtype=torch.uint8, device="cuda")
        pairs.append((src, torch.empty_like(src)))
    return rotating([lambda src=src, dst=dst: dst.copy_(src) for src, dst in pairs]), "ok"


def measure_copy(torch, opts, sleep):
    """dst.copy_(src) of 1 GiB, median of COPY_REPEATS: (ms, rw TB/s = 2*bytes/t, TB/s = bytes/t)."""
    src = torch.randint(0, 256, (COPY_BYTES,), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = median_ms(torch, lambda: dst.copy_(src), max(opts.warmup, 2), COPY_REPEATS, sleep)
    del src, dst
    torch.cuda.empty_cache()
    return ms, 2 * COPY_BYTES / (ms * 1e-3) / 1e12, COPY_BYTES / (ms * 1e-3) / 1e12


def ratio(a, b):
    return a / b if a is not None and b is not None else None


def best_peer(res):
    """(ms, name) of the faster peer that ran, or (None, None)."""
    ran = [(res["ms"][n], n) for n in PEERS if res["ms"].get(n) is not None]
    return min(ran) if ran else (None, None)


def splits_cell(res):
    c, p = res["splits"].get("ours_contiguous"), res["splits"].get("ours_paged16")
    if c is None and p is None:
        return "-"
    return str(c) if c == p else f"{c}/{p}"


def print_row_line(res):
    dtype_name, B, Hkv, Lk = res["row"]
    head = f"{dtype_name} B={B} Hq={HQ} Hkv={Hkv} D={D} Lk={Lk}"
    if res["skipped"]:
        print(f"{head} | {res['skipped']}", flush=True)
        return
    parts = [f"{head} cache {res['cache_bytes'] / GIB:.3g} GiB x{res['copies']} copies splits {splits_cell(res)}"]
    for name in IMPLS:
        ms, tb, st = res["ms"][name], res["tbps"][name], res["status"][name]
        if ms is None:
            parts.append(f"{name} {st}")
            continue
        cell = f"{name} {ms * 1e3:.1f} us {tb:.2f} TB/s"
        if name.startswith("ours") or name == SAME_BYTES_COPY:
            cell += f" {100 * res['frac_copy'][name]:.0f}% copy"
        elif res["expanded"].get(name):
            cell += " (expanded)"
        parts.append(cell)
    diffs = ", ".join(f"{k} {v:.3g}" if v is not None else f"{k} not checked (no room)"
                      for k, v in res["maxdiff"].items())
    parts.append(f"check {res['check']}" + (f" [{diffs}]" if diffs else ""))
    print(" | ".join(parts), flush=True)


def write_json(fh, res, env):
    dtype_name, B, Hkv, Lk = res["row"]
    for name in IMPLS:
        rec = {**env, "impl": name, "dtype": dtype_name, "B": B, "Hq": HQ, "Hkv": Hkv, "D": D, "Lq": 1,
               "Lk": Lk, "layout": "paged" if name == "ours_paged16" else "contiguous",
               "page_size": PAGE if name == "ours_paged16" else None,
               "bytes": res["cache_bytes"], "bytes_formula": BYTES_FORMULA, "copies": res["copies"],
               "ms": res["ms"][name], "us": res["ms"][name] * 1e3 if res["ms"][name] is not None else None,
               "tbps": res["tbps"][name], "frac_copy_bw": res["frac_copy"][name], "status": res["status"][name],
               "rounds_ms": res.get("rounds_ms", {}).get(name)}
        if name.startswith("ours"):
            rec["num_splits"] = res["splits"].get(name)
            rec["workspace_bytes"] = res["workspace"].get(name)
            rec["check"], rec["maxdiff"], rec["check_ref"] = res["check"], res["maxdiff"], res.get("check_ref")
        elif name in PEERS:
            rec["expanded"] = res["expanded"].get(name, False)
        fh.write(json.dumps(rec) + "\n")
    fh.flush()


def fmt_num(x, spec, status=None):
    if x is not None:
        return format(x, spec)
    if status is None:
        return "-"
    return "OOM" if status == "OOM" else ("err" if status.startswith("error") else "n/a")


def print_table(results, copy_rw_tbps):
    head = (f"{'dtype':5} {'B':>3} {'Hkv':>3} {'Lk':>6} {'splits':>7} | "
            f"{'contig us':>9} {'TB/s':>5} {'%cp':>4} | {'paged us':>9} {'TB/s':>5} {'%cp':>4} {'p/c':>5} | "
            f"{'FA2 us':>9} {'TB/s':>6} | {'cuDNN us':>9} {'TB/s':>6} | {'ours/best':>9} | "
            f"{'copy us':>8} {'%cp':>4}")
    print(f"\nTB/s of K+V read ({BYTES_FORMULA} bytes, Hq={HQ}, D={D}, Lq=1); %cp = of the copy's "
          f"read+write bandwidth {copy_rw_tbps:.2f} TB/s; p/c = paged16 time / contiguous time; "
          "ours/best = faster peer's time / our contiguous time (> 1: ours faster); "
          "* = peer ran on K/V expanded to Hq heads; copy = a copy moving the same bytes "
          "(half read, half written), timed the same way", flush=True)
    print(head)
    print("-" * len(head))
    for res in results:
        dtype_name, B, Hkv, Lk = res["row"]
        lead = f"{dtype_name:5} {B:3d} {Hkv:3d} {Lk:6d}"
        if res["skipped"]:
            print(f"{lead} {'-':>7} | {res['skipped']}", flush=True)
            continue
        ms, tb, fc, st = res["ms"], res["tbps"], res["frac_copy"], res["status"]
        cells = [f"{lead} {splits_cell(res):>7} |"]
        for name in ("ours_contiguous", "ours_paged16"):
            us = ms[name] * 1e3 if ms[name] is not None else None
            cells.append(f"{fmt_num(us, '9.1f', st[name]):>9} {fmt_num(tb[name], '5.2f'):>5} "
                         f"{fmt_num(fc[name] * 100 if fc[name] is not None else None, '4.0f'):>4}")
        cells[-1] += f" {fmt_num(ratio(ms['ours_paged16'], ms['ours_contiguous']), '5.2f'):>5} |"
        cells[-2] += " |"
        for name in PEERS:
            us = ms[name] * 1e3 if ms[name] is not None else None
            mark = "*" if res["expanded"].get(name) and us is not None else ""
            cells.append(f"{fmt_num(us, '8.1f', st[name]) + mark:>9} {fmt_num(tb[name], '6.2f'):>6} |")
        best_ms, best_name = best_peer(res)
        r = ratio(best_ms, ms["ours_contiguous"])
        mark = "*" if best_name and res["expanded"].get(best_name) and r is not None else ""
        cells.append(f"{fmt_num(r, '8.2f') + ('x' if r is not None else '') + mark:>9} |")
        us = ms[SAME_BYTES_COPY] * 1e3 if ms[SAME_BYTES_COPY] is not None else None
        fcc = fc[SAME_BYTES_COPY]
        cells.append(f"{fmt_num(us, '8.1f', st[SAME_BYTES_COPY]):>8} "
                     f"{fmt_num(fcc * 100 if fcc is not None else None, '4.0f'):>4}")
        line = " ".join(cells)
        if res["check"].startswith("MISMATCH"):
            line += " MISMATCH"
        print(line, flush=True)


def print_summary(results, copy_rw_tbps):
    ran = [r for r in results if not r["skipped"]]
    print(f"\nsummary ({len(ran)} of {len(results)} rows ran; copy bandwidth {copy_rw_tbps:.2f} TB/s "
          "read+write):", flush=True)

    def label(r):
        dtype_name, B, Hkv, Lk = r["row"]
        return f"{dtype_name}/B{B}/Hkv{Hkv}/Lk{Lk}"

    def pct(f):
        return f"{100 * f:.0f}%" if f is not None else "-"

    def at_85(rows, what):
        fracs = [(r, r["frac_copy"].get("ours_contiguous")) for r in rows]
        hit = sum(f is not None and f >= 0.85 for _, f in fracs)
        miss = [r for r, f in fracs if f is None or f < 0.85]
        cells = [f"{label(r)} {pct(r['frac_copy'].get('ours_contiguous'))} "
                 f"(copy {pct(r['frac_copy'].get(SAME_BYTES_COPY))})" for r in miss]
        print(f"  ours contiguous >= 85% of copy BW, {what}: {hit} of {len(rows)}"
              + (f" (below, beside the same bytes copied: {', '.join(cells)})" if cells else ""))
        copy_short = [r for r in miss if (r["frac_copy"].get(SAME_BYTES_COPY) or 1.0) < 0.85]
        if miss:
            print(f"    of those {len(miss)}, a copy of the same bytes is itself below 85% in {len(copy_short)}")

    at_85([r for r in ran if r["row"][1] * r["row"][2] * r["row"][3] >= BIG_KEYS],
          "rows with B*Hkv*Lk >= 8M keys")
    at_85([r for r in ran if r["row"][1] == 1], "batch-1 rows")

    ratios = []
    for r in ran:
        best_ms, best_name = best_peer(r)
        x = ratio(best_ms, r["ms"].get("ours_contiguous"))
        if x is not None:
            ratios.append((x, label(r), best_name, r["expanded"].get(best_name)))
    if ratios:
        lo, hi = min(ratios), max(ratios)
        fmt = lambda t: f"{t[0]:.2f}x ({t[1]}, vs {t[2]}{' expanded' if t[3] else ''})"
        print(f"  ours vs the faster peer (peer time / our time) over {len(ratios)} rows: "
              f"min {fmt(lo)}, max {fmt(hi)}; >= 1.0x in {sum(t[0] >= 1.0 for t in ratios)}")
    else:
        print("  ours vs the faster peer: no row where both ran")

    pc = [ratio(r["ms"].get("ours_paged16"), r["ms"].get("ours_contiguous")) for r in ran]
    known = [x for x in pc if x is not None]
    print(f"  paged16 within 5% of contiguous (time <= 1.05x): {sum(x <= 1.05 for x in known)} of {len(ran)}"
          + (f"; paged/contiguous min {min(known):.2f} max {max(known):.2f}" if known else ""), flush=True)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default=os.path.join(REPO_ROOT, "build-cuda", "libfastattn.so"),
                    help="the fastattn shared library (default: build-cuda/libfastattn.so in the repository)")
    ap.add_argument("--json", help="write one JSON line per (row, implementation) here")
    ap.add_argument("--commit", help="commit of the measured tree (default: git rev-parse HEAD, else 'unknown')")
    ap.add_argument("--repeats", type=int, default=50, help="timed calls per implementation (median reported)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed calls before timing")
    ap.add_argument("--rounds", type=int, default=2,
                    help="times each implementation is timed, in turn with the others (best reported)")
    ap.add_argument("--quick", action="store_true", help="only fp16, Hkv=8, B in {1, 16}, Lk in {4096, 32768}")
    ap.add_argument("--only", default="",
                    help='restrict the grid, e.g. "B=16,64 Hkv=32 Lk=1024 dtype=fp16"')
    ap.add_argument("--axes", default="",
                    help='replace the grid\'s values, e.g. "B=1 Hkv=8 Lk=512,2048,8192" (same syntax as --only)')
    ap.add_argument("--splits", type=int, default=0,
                    help="key splits for our kernels (0: the planner chooses; else 1 to 256)")
    ap.add_argument("--max-cache-gib", type=float, default=40.0,
                    help="skip rows whose K+V cache (2*B*Lk*Hkv*D*2 bytes) exceeds this many GiB (default 40)")
    ap.add_argument("--check", dest="check", action="store_true", default=True,
                    help="per row, check ours against SDPA and paged against contiguous before timing (default)")
    ap.add_argument("--no-check", dest="check", action="store_false", help="skip the checks")
    ap.add_argument("--selftest-layout", action="store_true",
                    help="print sizeof/offsetof of the ctypes mirror of fastattn.h and exit (no torch, no GPU)")
    opts = ap.parse_args(argv)
    if opts.rounds < 1:
        ap.error("--rounds must be >= 1")
    if opts.repeats < 1 or opts.warmup < 0:
        ap.error("--repeats must be >= 1 and --warmup >= 0")
    if not 0 <= opts.splits <= 256:
        ap.error("--splits takes 0 (the planner chooses) or 1 to 256")
    if opts.max_cache_gib <= 0:
        ap.error("--max-cache-gib must be > 0")
    try:
        opts.only = parse_only(opts.only)
        opts.axes = parse_only(opts.axes, "--axes")
    except ValueError as exc:
        ap.error(str(exc))
    if not grid(opts.quick, opts.only, opts.axes):
        ap.error("--only leaves no row of the " + ("--quick " if opts.quick else "") + "grid")
    return opts


def main(argv=None):
    opts = parse_args(argv)
    if opts.selftest_layout:
        print("\n".join(layout_lines()))
        return 0
    import torch

    lib = load_cuda_library(torch, opts.lib)

    sleep = GpuSleep(torch)
    copy_ms, copy_rw, copy_oneway = measure_copy(torch, opts, sleep)
    env = {**run_environment(torch, opts.commit),
           "fastattn": lib.fa_version_string().decode(), "copy_bytes": COPY_BYTES, "copy_ms": copy_ms,
           "copy_bw_rw_tbps": copy_rw, "copy_bw_oneway_tbps": copy_oneway}
    print(f"device {env['device']} | driver {env['driver']} | torch {env['torch']} | CUDA {env['cuda']} | "
          f"cuDNN {env['cudnn']} | commit {env['commit']} | fastattn {env['fastattn']}", flush=True)
    print(f"copy bandwidth (dst.copy_(src), 1 GiB, median of {COPY_REPEATS}): {copy_ms:.3f} ms = "
          f"{copy_rw:.2f} TB/s read+write (2*bytes/t, the reference for % copy), "
          f"{copy_oneway:.2f} TB/s bytes/t", flush=True)
    print(f"bytes = K+V read = {BYTES_FORMULA}; Hq={HQ}, D={D}, Lq=1, page size {PAGE}; median of "
          f"{opts.repeats} event-timed calls after {opts.warmup} warm-ups, best of {opts.rounds} rounds, inputs rotated over > "
          f"{ROTATE_BYTES >> 20} MiB (<= {MAX_COPIES} copies), queue primed with a GPU sleep "
          f"{'on' if sleep.cycles_per_ms else 'unavailable'}; check {'on' if opts.check else 'off'}; "
          f"max cache {opts.max_cache_gib:g} GiB", flush=True)

    fh = open(opts.json, "w") if opts.json else None
    results = []
    for row in grid(opts.quick, opts.only, opts.axes):
        res = run_row(torch, lib, row, opts, sleep, copy_rw)
        results.append(res)
        print_row_line(res)
        if fh:
            write_json(fh, res, env)
    if fh:
        fh.close()

    print_table(results, copy_rw)
    print_summary(results, copy_rw)
    failed = [r for r in results if not r["skipped"] and
              (r["check"].startswith("MISMATCH")
               or any(r["status"].get(n) != "ok" for n in ("ours_contiguous", "ours_paged16")))]
    if failed:
        print(f"\nFAILED: {len(failed)} row(s) with MISMATCH or an error from our calls", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
