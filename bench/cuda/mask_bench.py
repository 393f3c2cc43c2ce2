"""Masked prefill forward of fastattn's CUDA backend beside FlexAttention and PyTorch SDPA.

The issue's benchmark ("tiling masks"): B=1, H=16, D=128, bf16, L in {8192, 16384},
Lq = Lk = L, one row per mask:

  causal        j <= i                                   FA_MASK_CAUSAL
  window        i - 1024 <= j <= i                       FA_MASK_SLIDING_WINDOW (1024, 0);
                                                         FlexAttention's `q - kv <= 1024 and q >= kv`
  documents     1024-token documents, causal in each     FA_MASK_CAUSAL + segment ids (int32 inputs)
  prefix_lm     j <= i or j < P, P = L / 4               FA_MASK_PREFIX_LM
  block_sparse  random 128 x 128 blocks, each FULL with  FA_MASK_NONE + an fa_block_mask built on the
                probability 0.1 (seeded), and the        GPU from the blocks source
                diagonal blocks always FULL (so no row is empty)
  dense         an arbitrary mask: causal, and inside    FA_MASK_NONE + an fa_block_mask compressed on
                the band of the w = round(L/128 / 10)    the GPU from the dense bool [1, 1, L, L]
                block diagonals nearest the diagonal     (compression timed apart)
                each pair kept with probability 1/2
                (the diagonal pair always), so ~10% of
                the 128 x 128 blocks are PARTIAL

Implementations, in one process on the same tensors: ours through the C ABI
(ctypes, the tensors' data pointers); FlexAttention (flex_attention under
torch.compile, BlockMask from create_block_mask at BLOCK_SIZE 128; compile and
mask creation outside the timed region, warmed up first); PyTorch SDPA given
the dense bool mask [1, 1, L, L] with the cuDNN backend and with the
memory-efficient backend (a backend that refuses reports 'n/a' and why).

FLOPs = 4 * D * H * pairs, pairs = the (q, k) pairs the mask allows, counted
exactly (from the definitions above; for the two random masks from their bits),
the same count for every implementation ("effective TFLOP/s"). Timing as in
prefill_bench.py: CUDA events, warm-up, median of the repeats; each input is
B*L*H*D*2 bytes (32 MiB at L = 8192), Q+K+V over the H100's 50 MB L2.

Correctness, before timing, per row: ours (output poisoned with NaN first) and
FlexAttention against a float32 reference (matmul-softmax-matmul over the
dense bool mask on the inputs upcast from the dtype), with FlashAttention's rule
of ANCHORS.md: max|O - O_ref| <= 2 * max|O_lp - O_ref| + atol, O_lp the same
naive attention in the dtype, atol = 2 * max|O_ref + 0.3 - 0.3 - O_ref| (O_ref
in the dtype). The dense mask's pair count is checked against the count from
the definitions, and our block masks' EMPTY/FULL/PARTIAL counts against the
ones the definitions give. A row whose check fails prints no ratio (ours
failing: none; FlexAttention failing: none against it) and the exit status is 1.

Mask state printed per row: ours (0 for the built-in kinds; documents: 0, with
the segment ids' bytes beside it, they are inputs; block masks:
fa_block_mask_get_info().state_bytes), the dense bool mask (L*L bytes) and
FlexAttention's BlockMask tensors (plus the tensors its mask_mod reads).

    PYTHONUNBUFFERED=1 python3 bench/cuda/mask_bench.py \\
        --lib build-cuda/libfastattn.so --json masks.jsonl --commit SHA [--quick]
    python3 bench/cuda/mask_bench.py --selftest    # pure Python: pair counts, block classes

The mask definitions and pair counting below are pure Python (no torch), so
--selftest checks them on any machine against a brute-force count.
"""
import argparse
import ctypes
import json
import math
import os
import random
import statistics
import sys

from bench_env import REPO_ROOT, median_ms, run_environment  # beside this script
from fastattn_abi import (  # the ctypes mirror of fastattn.h, beside this script
    FA_BACKEND_CUDA, FA_DTYPE_BFLOAT16, FA_DTYPE_BOOL, FA_DTYPE_FLOAT16, FA_MASK_CAUSAL, FA_MASK_NONE,
    FA_MASK_PREFIX_LM, FA_MASK_SLIDING_WINDOW, FA_STATUS_OK, FaAttentionArgs, FaBlockMaskArgs,
    FaBlockMaskInfo, FaRunOptions, FastattnError, fa_tensor_of, int32_ptr, load_cuda_library,
)

MASKS = ("causal", "window", "documents", "prefix_lm", "block_sparse", "dense")
IMPLS = ("ours", "flex", "cudnn", "mem_eff")
B, H, D = 1, 16, 128
BLOCK = 128
WINDOW = 1024
DOC_LEN = 1024
DENSITY = 0.1          # block_sparse: probability of a FULL block
PAIR_KEEP = 0.5        # dense: probability of a pair inside the band
BAND_FRACTION = 0.1    # dense: the band holds ~this fraction of the blocks

# ---------------------------------------------------------------------------
# Mask definitions and exact pair counts (pure Python)
# ---------------------------------------------------------------------------


class MaskSpec:
    """One mask of an L x L plane (Lq = Lk, so the bottom-right alignment is d = i)."""

    def __init__(self, name, L, seed=0, block=BLOCK, window=WINDOW, doc_len=DOC_LEN, density=DENSITY,
                 band_fraction=BAND_FRACTION):
        if name not in MASKS:
            raise ValueError(f"unknown mask {name}; allowed: {', '.join(MASKS)}")
        self.name, self.L, self.block, self.seed = name, L, block, seed
        self.window, self.doc_len, self.density = window, doc_len, density
        self.prefix_len = L // 4
        self.nb = (L + block - 1) // block
        self.blocks = None
        self.band = 0
        if name == "block_sparse":
            # Python's generator, so the layout is the same with or without torch.
            rng = random.Random(seed)
            self.blocks = [[rng.random() < density or bi == bj for bj in range(self.nb)]
                           for bi in range(self.nb)]
        if name == "dense":
            self.band = max(1, round(self.nb * band_fraction))

    # fastattn's side of the mask: kind and numbers (fa_mask)
    def fa_kind(self):
        return {"causal": FA_MASK_CAUSAL, "window": FA_MASK_SLIDING_WINDOW, "documents": FA_MASK_CAUSAL,
                "prefix_lm": FA_MASK_PREFIX_LM, "block_sparse": FA_MASK_NONE, "dense": FA_MASK_NONE}[self.name]

    def in_band(self, i, j):
        return 0 <= i // self.block - j // self.block < self.band

    def allowed(self, i, j, bits=None):
        """The definition, pair by pair: the oracle of the counts. bits(i, j): the
        dense mask's random pair bits (only read inside the band)."""
        n = self.name
        if n == "causal":
            return j <= i
        if n == "window":
            return i - self.window <= j <= i
        if n == "documents":
            return j <= i and i // self.doc_len == j // self.doc_len
        if n == "prefix_lm":
            return j <= i or j < self.prefix_len
        if n == "block_sparse":
            return self.blocks[i // self.block][j // self.block]
        # dense
        if j > i:
            return False
        if not self.in_band(i, j):
            return True
        return i == j or bits(i, j)

    def row_interval(self, i):
        """Keys [begin, end) of row i for the masks that are one interval a row."""
        n = self.name
        if n == "causal":
            return 0, i + 1
        if n == "window":
            return max(0, i - self.window), i + 1
        if n == "documents":
            return (i // self.doc_len) * self.doc_len, i + 1
        if n == "prefix_lm":
            return 0, min(self.L, max(self.prefix_len, i + 1))
        raise ValueError(n)

    def count_pairs(self, band_pairs=None):
        """Exact allowed pairs. dense: band_pairs = the allowed pairs inside the band
        (they depend on the random bits), the rest is counted here."""
        L, blk = self.L, self.block
        if self.name == "block_sparse":
            return sum(min(blk, L - bi * blk) * min(blk, L - bj * blk)
                       for bi in range(self.nb) for bj in range(self.nb) if self.blocks[bi][bj])
        if self.name == "dense":
            if band_pairs is None:
                raise ValueError("dense: pass the pairs allowed inside the band")
            # Outside the band: causal pairs j < (block of i - band + 1) * block.
            outside = sum(max(0, min(i + 1, (i // blk - self.band + 1) * blk)) for i in range(L))
            return outside + band_pairs
        return sum(e - b for b, e in (self.row_interval(i) for i in range(L)))

    def band_pairs_brute(self, bits):
        return sum(1 for i in range(self.L) for j in range(i + 1) if self.in_band(i, j) and (i == j or bits(i, j)))

    def block_classes(self):
        """(empty, full, partial) of the block x block tiling, from the definitions
        (dense: every band block is PARTIAL, which holds for any bits at the
        sizes benchmarked; the self-test checks it at small L)."""
        L, blk, nb = self.L, self.block, self.nb
        empty = full = partial = 0
        for bi in range(nb):
            for bj in range(nb):
                if self.name == "block_sparse":
                    full += self.blocks[bi][bj]
                    empty += not self.blocks[bi][bj]
                elif self.name == "dense":
                    if bj > bi:
                        empty += 1
                    elif bi - bj < self.band:
                        partial += 1
                    else:
                        full += 1
                else:
                    rows = range(bi * blk, min(L, (bi + 1) * blk))
                    cols = range(bj * blk, min(L, (bj + 1) * blk))
                    n = sum(1 for i in rows for j in cols if self.allowed(i, j))
                    empty += n == 0
                    full += n == len(rows) * len(cols)
                    partial += 0 < n < len(rows) * len(cols)
        return empty, full, partial

    def describe(self):
        n = self.name
        if n == "window":
            return f"window({self.window},0)"
        if n == "documents":
            return f"documents({self.doc_len}, causal)"
        if n == "prefix_lm":
            return f"prefix_lm(P={self.prefix_len})"
        if n == "block_sparse":
            return f"block_sparse({self.density:g} of {self.block}x{self.block}, diagonal FULL)"
        if n == "dense":
            return f"dense(causal, {PAIR_KEEP:g} in {self.band} band diagonals)"
        return n


def flops(pairs):
    return 4.0 * D * H * B * pairs


def selftest(L=300, block=64):
    """Brute-force checks of the pure-Python parts at a small L (scaled windows and documents)."""
    failures = []
    bits_rng = random.Random(123)
    bit_table = {}

    def bits(i, j):
        if (i, j) not in bit_table:
            bit_table[(i, j)] = bits_rng.random() < PAIR_KEEP
        return bit_table[(i, j)]

    for name in MASKS:
        for Lx in (L, 256, 1, 129):
            spec = MaskSpec(name, Lx, seed=7, block=block, window=50, doc_len=64, density=0.3, band_fraction=0.3)
            brute = sum(1 for i in range(Lx) for j in range(Lx) if spec.allowed(i, j, bits))
            got = spec.count_pairs(spec.band_pairs_brute(bits) if name == "dense" else None)
            if got != brute:
                failures.append(f"{name} L={Lx}: count_pairs {got} != brute force {brute}")
            # Block classes against a brute-force tiling of the same bits.
            if Lx == L:
                exp = [0, 0, 0]
                for bi in range(spec.nb):
                    for bj in range(spec.nb):
                        rows = range(bi * block, min(Lx, (bi + 1) * block))
                        cols = range(bj * block, min(Lx, (bj + 1) * block))
                        n = sum(1 for i in rows for j in cols if spec.allowed(i, j, bits))
                        exp[0 if n == 0 else 1 if n == len(rows) * len(cols) else 2] += 1
                if tuple(exp) != spec.block_classes():
                    failures.append(f"{name} L={Lx}: block classes {spec.block_classes()} != brute {tuple(exp)}")
            print(f"  {name:12} L={Lx:4d} pairs {got:6d} (brute force {brute:6d})"
                  + (f" blocks e/f/p {spec.block_classes()}" if Lx == L else ""))
    # Same seed, same layout; another seed, another one.
    a, b, c = (MaskSpec("block_sparse", 4096, seed=s).blocks for s in (5, 5, 6))
    if a != b or a == c:
        failures.append("block_sparse layout is not a function of the seed")
    # The issue's sizes: the fractions the docstring states.
    for Lx in (8192, 16384):
        s = MaskSpec("dense", Lx)
        e, f, p = s.block_classes()
        frac = p / (s.nb * s.nb)
        print(f"  dense L={Lx}: band {s.band} diagonals, {p} PARTIAL blocks = {100 * frac:.1f}% of {s.nb}^2")
        if not 0.08 <= frac <= 0.12:
            failures.append(f"dense L={Lx}: PARTIAL fraction {frac:.3f} not ~10%")
        for name in ("causal", "window", "documents", "prefix_lm"):
            spec = MaskSpec(name, Lx)
            exact = {"causal": Lx * (Lx + 1) // 2,
                     "window": sum(min(i, WINDOW) + 1 for i in range(Lx)),
                     "documents": (Lx // DOC_LEN) * DOC_LEN * (DOC_LEN + 1) // 2,
                     "prefix_lm": Lx * (Lx + 1) // 2 + sum(max(0, Lx // 4 - i - 1) for i in range(Lx))}[name]
            if spec.count_pairs() != exact:
                failures.append(f"{name} L={Lx}: count {spec.count_pairs()} != closed form {exact}")
    for f in failures:
        print("FAIL " + f)
    print(f"selftest: {'ok' if not failures else str(len(failures)) + ' failure(s)'}")
    return 0 if not failures else 1


# ---------------------------------------------------------------------------
# Benchmark (needs torch and a GPU)
# ---------------------------------------------------------------------------


def first_line(exc):
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:160]


def time_peer(torch, fn, warmup, repeats):
    """(ms, status): status 'ok', 'OOM' or 'n/a: reason'."""
    oom = False
    try:
        return median_ms(torch, fn, warmup, repeats), "ok"
    except torch.cuda.OutOfMemoryError:
        oom = True
    except Exception as exc:  # e.g. a backend that refuses the mask or the shape
        status = "n/a: " + first_line(exc)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return None, "OOM" if oom else status


def fa_error(lib, what, status):
    return FastattnError(f"{what} status {status}: {lib.fa_last_error().decode(errors='replace')}")


class OurBlockMask:
    """An fa_block_mask from a device bool tensor (dense [1, 1, L, L] or blocks [1, 1, nb, nb])."""

    def __init__(self, lib, torch, source, dense, L, block, stream):
        self.lib, self.handle = lib, ctypes.c_void_p()
        args = FaBlockMaskArgs()
        if dense:
            args.dense = fa_tensor_of(source, FA_DTYPE_BOOL)
        else:
            args.blocks = fa_tensor_of(source, FA_DTYPE_BOOL)
            args.seqlen_q = args.seqlen_k = L
        args.block_q = args.block_k = block
        options = FaRunOptions()
        options.backend = FA_BACKEND_CUDA
        options.cuda_stream = stream
        status = lib.fa_block_mask_create(ctypes.byref(args), ctypes.byref(options), ctypes.byref(self.handle))
        if status != FA_STATUS_OK:
            self.handle = ctypes.c_void_p()
            raise fa_error(lib, "fa_block_mask_create", status)
        self.info = FaBlockMaskInfo()
        status = lib.fa_block_mask_get_info(self.handle, ctypes.byref(self.info))
        if status != FA_STATUS_OK:
            raise fa_error(lib, "fa_block_mask_get_info", status)

    def close(self):
        if self.handle:
            self.lib.fa_block_mask_destroy(self.handle)
            self.handle = ctypes.c_void_p()

    def __del__(self):
        self.close()


class Ours:
    """One fa_attention_forward call over fixed tensors; the structs are built once per row."""

    def __init__(self, lib, torch, q, k, v, out, spec, scale, seg_ids=None, block_mask=None):
        fa_dtype = FA_DTYPE_FLOAT16 if q.dtype == torch.float16 else FA_DTYPE_BFLOAT16
        self.lib = lib
        self.keep = (q, k, v, out, seg_ids, block_mask)  # the structs hold raw pointers into these
        a = self.args = FaAttentionArgs()
        a.q, a.k, a.v, a.out = (fa_tensor_of(t, fa_dtype) for t in (q, k, v, out))
        a.mask.kind = spec.fa_kind()
        if spec.name == "window":
            a.mask.window_left, a.mask.window_right = spec.window, 0
        if spec.name == "prefix_lm":
            a.mask.prefix_len = spec.prefix_len
        if seg_ids is not None:  # [B, L] int32, the same ids for queries and keys (Lq = Lk)
            a.mask.q_segment_ids = a.mask.k_segment_ids = int32_ptr(seg_ids)
        if block_mask is not None:
            a.mask.block_mask = block_mask.handle
        a.softmax_scale = scale
        self.options = FaRunOptions()
        self.options.backend = FA_BACKEND_CUDA
        self.options.cuda_stream = torch.cuda.current_stream().cuda_stream or None

    def __call__(self):
        status = self.lib.fa_attention_forward(ctypes.byref(self.args), ctypes.byref(self.options))
        if status != FA_STATUS_OK:
            raise fa_error(self.lib, "fa_attention_forward", status)


def build_masks(torch, spec, seed):
    """The row's masks on the GPU: the dense bool [L, L] (the reference's and SDPA's),
    FlexAttention's mask_mod and the tensors it reads, and our inputs."""
    L, dev = spec.L, "cuda"
    idx = torch.arange(L, device=dev)
    q_i, k_j = idx[:, None], idx[None, :]
    m = {"flex_tensors": [], "seg_ids": None, "blocks": None}
    if spec.name == "causal":
        m["dense"] = k_j <= q_i
        m["mask_mod"] = lambda b, h, q, kv: q >= kv
    elif spec.name == "window":
        m["dense"] = (k_j <= q_i) & (q_i - k_j <= spec.window)
        w = spec.window
        m["mask_mod"] = lambda b, h, q, kv: (q >= kv) & (q - kv <= w)
    elif spec.name == "documents":
        doc = (idx // spec.doc_len).to(torch.int32)
        m["dense"] = (k_j <= q_i) & (doc[:, None] == doc[None, :])
        m["mask_mod"] = lambda b, h, q, kv: (q >= kv) & (doc[q] == doc[kv])
        m["flex_tensors"] = [doc]
        m["seg_ids"] = doc.reshape(B, L).contiguous()
    elif spec.name == "prefix_lm":
        P = spec.prefix_len
        m["dense"] = (k_j <= q_i) | (k_j < P)
        m["mask_mod"] = lambda b, h, q, kv: (kv <= q) | (kv < P)
    elif spec.name == "block_sparse":
        blocks = torch.tensor(spec.blocks, dtype=torch.bool, device=dev)
        blk = spec.block
        m["dense"] = blocks.repeat_interleave(blk, 0).repeat_interleave(blk, 1)[:L, :L].contiguous()
        m["mask_mod"] = lambda b, h, q, kv: blocks[q // blk, kv // blk]
        m["flex_tensors"] = [blocks]
        m["blocks"] = blocks.reshape(1, 1, spec.nb, spec.nb).contiguous()
    else:  # dense
        g = torch.Generator(device=dev)
        g.manual_seed(seed)
        bits = torch.rand(L, L, device=dev, generator=g) < PAIR_KEEP
        bi = idx // spec.block
        band = (bi[:, None] - bi[None, :]) < spec.band
        dense = (k_j <= q_i) & (~band | bits | (k_j == q_i))
        del bits, band
        m["dense"] = dense
        m["mask_mod"] = lambda b, h, q, kv: dense[q, kv]
        m["flex_tensors"] = [dense]
        m["band_pairs"] = None  # counted from the tensor below
    return m


def count_row_pairs(torch, spec, masks):
    """(pairs, check): pairs from the definitions; check compares them with the dense tensor's count."""
    dense_count = int(masks["dense"].sum().item())
    if spec.name == "dense":
        blk, L = spec.block, spec.L
        idx = torch.arange(L, device="cuda")
        bi = idx // blk
        in_band = ((bi[:, None] - bi[None, :]) < spec.band) & (idx[None, :] <= idx[:, None])
        band_pairs = int((masks["dense"] & in_band).sum().item())
        del in_band
        pairs = spec.count_pairs(band_pairs)
    else:
        pairs = spec.count_pairs()
    ok = pairs == dense_count
    return pairs, ("ok" if ok else f"MISMATCH (pairs from the definition {pairs} != dense mask {dense_count})")


def reference_outputs(torch, qt, kt, vt, dense, scale, heads_per_chunk):
    """O_ref (float32 on the upcast inputs) and O_lp (the same naive attention in the dtype),
    (B, H, L, D), a few heads at a time to bound the L x L scores. A row without keys gives 0."""
    outs_ref, outs_lp = [], []
    keep = dense[None, None]
    for h0 in range(0, qt.shape[1], heads_per_chunk):
        sl = slice(h0, h0 + heads_per_chunk)
        for upcast, outs in ((True, outs_ref), (False, outs_lp)):
            q, k, v = (t[:, sl].float() if upcast else t[:, sl] for t in (qt, kt, vt))
            s = torch.matmul(q, k.transpose(-2, -1)) * scale
            s.masked_fill_(~keep, float("-inf"))
            p = torch.softmax(s, dim=-1)
            del s
            p = torch.nan_to_num(p, nan=0.0)
            outs.append(torch.matmul(p, v).float() if upcast else torch.matmul(p, v))
            del p
    return torch.cat(outs_ref, dim=1), torch.cat(outs_lp, dim=1)


def fa_rule(torch, got, o_ref, o_lp, dtype):
    """(ok, maxdiff, bound): FlashAttention's rule (ANCHORS.md); NaN never passes."""
    ref_lp = o_ref.to(dtype)
    atol = 2 * (ref_lp + 0.3 - 0.3 - ref_lp).abs().max().item()
    bound = 2 * (o_lp.float() - o_ref).abs().max().item() + atol
    diff = (got.float() - o_ref).abs().max().item()
    ok = diff <= bound and not torch.isnan(got).any().item()
    return ok, diff, bound


def blockmask_bytes(torch, bm):
    total = 0
    for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices",
                 "q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices"):
        t = getattr(bm, name, None)
        if isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
    return total


def make_flex_block_mask(create_block_mask, mask_mod, L):
    try:  # _compile: no L x L intermediate while the mask is built (present in the 2.x releases)
        return create_block_mask(mask_mod, None, None, L, L, device="cuda", BLOCK_SIZE=BLOCK, _compile=True)
    except TypeError:
        return create_block_mask(mask_mod, None, None, L, L, device="cuda", BLOCK_SIZE=BLOCK)


def run_row(torch, lib, row, opts, flex_fn):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import create_block_mask
    F = torch.nn.functional

    dtype_name, L, mask_name = row
    dtype = torch.float16 if dtype_name == "fp16" else torch.bfloat16
    spec = MaskSpec(mask_name, L, seed=opts.seed)
    scale = 1.0 / math.sqrt(D)
    res = {"row": row, "desc": spec.describe(), "ms": {}, "status": {}, "check": {}, "maxdiff": {},
           "bytes": {"dense_bool": L * L}, "mask_create_ms": None, "blocks": None}
    torch.manual_seed(opts.seed)
    q, k, v = (torch.randn(B, L, H, D, device="cuda", dtype=dtype) for _ in range(3))
    out = torch.empty_like(q)
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, D) views: the peers' layout

    masks = build_masks(torch, spec, opts.seed)
    pairs, pair_check = count_row_pairs(torch, spec, masks)
    res["pairs"], res["pair_check"] = pairs, pair_check
    stream = torch.cuda.current_stream().cuda_stream or None

    # Ours: inputs, block mask (timed creation for the dense source), the call.
    block_mask, ours = None, None
    res["bytes"]["ours"] = 0
    res["bytes"]["seg_ids"] = masks["seg_ids"].numel() * 4 if masks["seg_ids"] is not None else 0
    try:
        if mask_name == "block_sparse":
            block_mask = OurBlockMask(lib, torch, masks["blocks"], False, L, BLOCK, stream)
        elif mask_name == "dense":
            source = masks["dense"].reshape(1, 1, L, L)
            times = []
            for _ in range(3):  # median of 3 compressions; each synchronises once inside
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                bm = OurBlockMask(lib, torch, source, True, L, BLOCK, stream)
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
                if block_mask is None:
                    block_mask = bm
                else:
                    bm.close()
            res["mask_create_ms"] = statistics.median(times)
        if block_mask is not None:
            i = block_mask.info
            res["bytes"]["ours"] = int(i.state_bytes)
            res["blocks"] = (int(i.empty_blocks), int(i.full_blocks), int(i.partial_blocks))
            expected = spec.block_classes()
            if res["blocks"] != expected:
                res["pair_check"] = (f"MISMATCH (block mask empty/full/partial {res['blocks']} != "
                                     f"{expected} from the definition)")
        ours = Ours(lib, torch, q, k, v, out, spec, scale, masks["seg_ids"], block_mask)
    except FastattnError as exc:
        res["status"]["ours"] = "error: " + str(exc)

    # FlexAttention: BlockMask creation (timed once, after a warm one) outside the attention timing.
    flex_call, bm = None, None
    try:
        bm = make_flex_block_mask(create_block_mask, masks["mask_mod"], L)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        bm = make_flex_block_mask(create_block_mask, masks["mask_mod"], L)
        end.record()
        torch.cuda.synchronize()
        res["flex_mask_create_ms"] = start.elapsed_time(end)
        res["bytes"]["flex"] = blockmask_bytes(torch, bm)
        res["bytes"]["flex_mask_mod"] = sum(t.numel() * t.element_size() for t in masks["flex_tensors"])

        def flex_call():
            return flex_fn(qt, kt, vt, block_mask=bm, scale=scale)
        flex_call()  # compiles here, outside any timing
        torch.cuda.synchronize()
    except Exception as exc:
        res["status"]["flex"] = "n/a: " + first_line(exc)
        flex_call = None

    attn_mask = masks["dense"][None, None]  # [1, 1, L, L] bool, broadcast over B and H

    def sdpa(backend):
        def run():
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(qt, kt, vt, attn_mask=attn_mask, scale=scale)
        return run
    peers = {"cudnn": sdpa(SDPBackend.CUDNN_ATTENTION), "mem_eff": sdpa(SDPBackend.EFFICIENT_ATTENTION)}

    # Correctness before timing.
    if opts.check:
        o_ref, o_lp = reference_outputs(torch, qt, kt, vt, masks["dense"], scale, opts.heads_per_chunk)
        if ours is not None:
            out.fill_(float("nan"))  # every element must be written by ours
            try:
                ours()
                torch.cuda.synchronize()
                ok, diff, bound = fa_rule(torch, out.transpose(1, 2), o_ref, o_lp, dtype)
                res["maxdiff"]["ours"] = diff
                res["check"]["ours"] = "ok" if ok else f"MISMATCH (max diff {diff:.3g} > {bound:.3g})"
            except FastattnError as exc:
                res["status"]["ours"] = "error: " + str(exc)
        if flex_call is not None:
            try:
                got = flex_call()
                torch.cuda.synchronize()
                ok, diff, bound = fa_rule(torch, got, o_ref, o_lp, dtype)
                res["maxdiff"]["flex"] = diff
                res["check"]["flex"] = "ok" if ok else f"MISMATCH (max diff {diff:.3g} > {bound:.3g})"
                del got
            except Exception as exc:
                res["status"]["flex"] = "n/a: " + first_line(exc)
                flex_call = None
        del o_ref, o_lp
        torch.cuda.empty_cache()
    if not res["pair_check"] == "ok":
        res["check"]["ours"] = res["pair_check"]

    if ours is not None and "ours" not in res["status"]:
        res["ms"]["ours"], res["status"]["ours"] = time_peer(torch, ours, opts.warmup, opts.repeats)
    if flex_call is not None:
        res["ms"]["flex"], res["status"]["flex"] = time_peer(torch, flex_call, opts.warmup, opts.repeats)
    for name, fn in peers.items():
        res["ms"][name], res["status"][name] = time_peer(torch, fn, opts.warmup, opts.repeats)
    for name in IMPLS:
        res["ms"].setdefault(name, None)
        res["status"].setdefault(name, "n/a")
    res["tflops"] = {n: (flops(pairs) / (ms * 1e-3) / 1e12 if ms else None) for n, ms in res["ms"].items()}

    if block_mask is not None:
        block_mask.close()
    del ours, block_mask, bm, flex_call, peers, attn_mask, masks, q, k, v, out, qt, kt, vt
    torch.cuda.empty_cache()
    return res


def row_ok(res, name):
    """A ratio against `name` is printed only when ours and (for flex) the peer passed their checks."""
    if res["check"].get("ours", "skipped") not in ("ok", "skipped"):
        return False
    if name == "flex" and res["check"].get("flex", "skipped") not in ("ok", "skipped"):
        return False
    return True


def ratio(res, name):
    a, b = res["ms"].get("ours"), res["ms"].get(name)
    if a is None or b is None or not row_ok(res, name):
        return None
    return b / a  # ours' speed over the peer's (> 1: ours faster)


def fmt_ms(ms, status):
    if ms is not None:
        return f"{ms:.3f}"
    return "OOM" if status == "OOM" else ("err" if status.startswith("error") else "n/a")


def fmt_bytes(n):
    if n is None:
        return "-"
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n}B"


def print_row_line(res):
    dtype_name, L, mask_name = res["row"]
    parts = [f"{dtype_name} L={L} {res['desc']} pairs={res['pairs']}"]
    for name in IMPLS:
        ms, tf, st = res["ms"][name], res["tflops"][name], res["status"][name]
        parts.append(f"{name} {ms:.3f} ms {tf:.1f} TF/s" if ms is not None else f"{name} {st}")
    for name in ("ours", "flex"):
        if name in res["check"]:
            d = res["maxdiff"].get(name)
            parts.append(f"check {name} {res['check'][name]}" + (f" maxdiff {d:.3g}" if d is not None else ""))
    by = res["bytes"]
    parts.append(f"mask bytes ours {by['ours']} (segment ids {by['seg_ids']}) dense {by['dense_bool']} "
                 f"flex {by.get('flex', '-')} (+mask_mod tensors {by.get('flex_mask_mod', '-')})")
    if res["blocks"]:
        parts.append("our blocks e/f/p %d/%d/%d" % res["blocks"])
    if res["mask_create_ms"] is not None:
        parts.append(f"our compression {res['mask_create_ms']:.3f} ms")
    if res.get("flex_mask_create_ms") is not None:
        parts.append(f"flex create_block_mask {res['flex_mask_create_ms']:.3f} ms")
    print(" | ".join(parts), flush=True)


def write_json(fh, res, env):
    dtype_name, L, mask_name = res["row"]
    for name in IMPLS:
        rec = {**env, "impl": name, "dtype": dtype_name, "B": B, "H": H, "d": D, "L": L, "mask": mask_name,
               "mask_desc": res["desc"], "pairs": res["pairs"], "flop_formula": "4*D*H*pairs",
               "ms": res["ms"][name], "tflops": res["tflops"][name], "status": res["status"][name],
               "check": res["check"].get(name), "maxdiff": res["maxdiff"].get(name),
               "ours_over_peer": ratio(res, name) if name != "ours" else None,
               "dense_mask_bytes": res["bytes"]["dense_bool"]}
        if name == "ours":
            rec.update(mask_state_bytes=res["bytes"]["ours"], segment_id_bytes=res["bytes"]["seg_ids"],
                       blocks_empty_full_partial=res["blocks"], mask_create_ms=res["mask_create_ms"],
                       pair_check=res["pair_check"])
        if name == "flex":
            rec.update(blockmask_bytes=res["bytes"].get("flex"), mask_mod_tensor_bytes=res["bytes"].get("flex_mask_mod"),
                       mask_create_ms=res.get("flex_mask_create_ms"))
        fh.write(json.dumps(rec) + "\n")
    fh.flush()


def print_table(results):
    print("\ntime in ms; TF/s = 4*D*H*pairs / time (pairs counted exactly, the same for every column); "
          "x = peer time / our time (> 1: ours faster), shown only where the checks passed", flush=True)
    head = (f"{'dtype':5} {'L':>6} {'mask':12} {'ours':>8} {'TF/s':>6} {'flex':>8} {'cudnn':>8} {'mem-eff':>8} "
            f"{'x flex':>7} {'x cudnn':>7} {'x memef':>7} {'ours B':>9} {'segids B':>9} {'dense B':>9} "
            f"{'flex B':>9} {'check':>6}")
    print(head)
    print("-" * len(head))
    for r in results:
        dtype_name, L, mask_name = r["row"]
        ms, st = r["ms"], r["status"]
        tf = r["tflops"]["ours"]
        ratios = [ratio(r, n) for n in ("flex", "cudnn", "mem_eff")]
        checks = [r["check"].get(n, "skipped") for n in ("ours", "flex")]
        check = "ok" if all(c in ("ok", "skipped") for c in checks) else ("FAIL" if checks[0] not in ("ok", "skipped")
                                                                          else "flexF")
        by = r["bytes"]
        print(f"{dtype_name:5} {L:6d} {mask_name:12} {fmt_ms(ms['ours'], st['ours']):>8} "
              f"{(f'{tf:.1f}' if tf else '-'):>6} "
              + " ".join(f"{fmt_ms(ms[n], st[n]):>8}" for n in ("flex", "cudnn", "mem_eff")) + " "
              + " ".join(f"{(f'{x:.2f}x' if x else '-'):>7}" for x in ratios)
              + f" {fmt_bytes(by['ours']):>9} {fmt_bytes(by['seg_ids']):>9} {fmt_bytes(by['dense_bool']):>9}"
              f" {fmt_bytes(by.get('flex')):>9} {check:>6}", flush=True)
    dense_rows = [r for r in results if r["mask_create_ms"] is not None]
    for r in dense_rows:
        print(f"dense row {r['row'][0]} L={r['row'][1]}: fa_block_mask_create from the device bool "
              f"[1,1,L,L] took {r['mask_create_ms']:.3f} ms (median of 3), blocks e/f/p "
              + ("%d/%d/%d" % r["blocks"] if r["blocks"] else "-"), flush=True)
    for r in results:
        for name in IMPLS:
            if r["status"][name] not in ("ok",) and r["status"][name] != "n/a":
                print(f"  {r['row'][0]} L={r['row'][1]} {r['row'][2]} {name}: {r['status'][name]}")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default=os.path.join(REPO_ROOT, "build-cuda", "libfastattn.so"),
                    help="the fastattn shared library (default: build-cuda/libfastattn.so in the repository)")
    ap.add_argument("--json", help="write one JSON line per (row, implementation) here")
    ap.add_argument("--commit", help="commit of the measured tree (default: git rev-parse HEAD, else 'unknown')")
    ap.add_argument("--lengths", default="8192,16384", help="comma-separated L (Lq = Lk)")
    ap.add_argument("--masks", default=",".join(MASKS), help="comma-separated subset of " + ",".join(MASKS))
    ap.add_argument("--dtypes", default="bf16", help="comma-separated subset of fp16,bf16")
    ap.add_argument("--quick", action="store_true", help="only L=8192 and 10 repeats")
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per implementation (median reported)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed calls before timing")
    ap.add_argument("--seed", type=int, default=0, help="seed of the inputs and the random masks")
    ap.add_argument("--heads-per-chunk", type=int, default=2,
                    help="heads per step of the float32 reference (bounds its L x L scores)")
    ap.add_argument("--check", dest="check", action="store_true", default=True,
                    help="check ours and FlexAttention against the float32 reference before timing (default)")
    ap.add_argument("--no-check", dest="check", action="store_false", help="skip the output checks")
    ap.add_argument("--selftest", action="store_true", help="check the pure-Python mask code and exit (no torch)")
    opts = ap.parse_args(argv)
    if opts.repeats < 1 or opts.warmup < 0 or opts.heads_per_chunk < 1:
        ap.error("--repeats and --heads-per-chunk must be >= 1 and --warmup >= 0")
    try:
        opts.lengths = tuple(int(x) for x in opts.lengths.split(","))
    except ValueError:
        ap.error("--lengths takes comma-separated integers")
    if any(L < 1 for L in opts.lengths):
        ap.error("--lengths must be >= 1")
    opts.masks = tuple(opts.masks.split(","))
    if any(m not in MASKS for m in opts.masks):
        ap.error("--masks takes a comma-separated subset of " + ",".join(MASKS))
    opts.dtypes = tuple(opts.dtypes.split(","))
    if any(d not in ("fp16", "bf16") for d in opts.dtypes):
        ap.error("--dtypes takes fp16, bf16 or both, comma-separated")
    if opts.quick:
        opts.lengths = tuple(L for L in opts.lengths if L <= 8192) or (8192,)
        opts.repeats = min(opts.repeats, 10)
    return opts


def main(argv=None):
    opts = parse_args(argv)
    if opts.selftest:
        return selftest()
    import torch
    from torch.nn.attention.flex_attention import flex_attention

    lib = load_cuda_library(torch, opts.lib)
    if not hasattr(lib, "fa_block_mask_create"):
        raise SystemExit(f"{opts.lib} lacks fa_block_mask_create: build the tree with the tiling masks")

    env = run_environment(torch, opts.commit)
    env["fastattn"] = lib.fa_version_string().decode()
    print(f"device {env['device']} | driver {env['driver']} | torch {env['torch']} | CUDA {env['cuda']} | "
          f"cuDNN {env['cudnn']} | commit {env['commit']} | fastattn {env['fastattn']}", flush=True)
    print(f"B={B} H={H} D={D}, Lq = Lk = L; FLOPs = 4*D*H*pairs (pairs = allowed (q,k) pairs, counted exactly); "
          f"median of {opts.repeats} event-timed calls after {opts.warmup} warm-ups; FlexAttention compiled "
          f"(torch.compile) and its BlockMask (BLOCK_SIZE {BLOCK}) built before timing; check "
          f"{'on (FlashAttention rule vs float32 reference)' if opts.check else 'off'}", flush=True)

    # One compiled graph per (mask_mod, L, dtype): raise Dynamo's recompile limit (8 by default) so
    # no row falls back to eager FlexAttention, and keep shapes static (no dynamic-shape kernels).
    for knob in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, max(64, getattr(torch._dynamo.config, knob)))
    flex_fn = torch.compile(flex_attention, dynamic=False)
    fh = open(opts.json, "w") if opts.json else None
    results = []
    for dtype_name in opts.dtypes:
        for L in opts.lengths:
            for mask_name in opts.masks:
                res = run_row(torch, lib, (dtype_name, L, mask_name), opts, flex_fn)
                results.append(res)
                print_row_line(res)
                if fh:
                    write_json(fh, res, env)
    if fh:
        fh.close()
    print_table(results)
    failed = [r for r in results if r["check"].get("ours", "ok") not in ("ok",) or r["status"]["ours"] != "ok"]
    flex_failed = [r for r in results if r["check"].get("flex", "ok") != "ok"]
    if flex_failed:
        print(f"\nFlexAttention failed the check on {len(flex_failed)} row(s): no ratio against it there")
    if failed:
        print(f"\nFAILED: {len(failed)} row(s) with a MISMATCH or an error from our call", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
