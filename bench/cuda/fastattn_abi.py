"""ctypes mirror of include/fastattn/fastattn.h for the benchmarks in this folder.

Importable without torch or a GPU; the struct sizes are checked at import
against the C layout rules, and layout_lines() prints sizes, offsets and
constants in the format of a C program printing sizeof/offsetof, to diff.
c_layout_program() is that C program; `python3 fastattn_abi.py --check-c`
compiles it against the header with the system C compiler and diffs:

    python3 bench/cuda/fastattn_abi.py --check-c [--cc gcc]
"""
import ctypes
import os
import subprocess
import sys
import tempfile

# C enums are 4-byte ints.

FA_STATUS_OK = 0
FA_DTYPE_FLOAT32 = 0
FA_DTYPE_FLOAT16 = 1
FA_DTYPE_BFLOAT16 = 2
FA_DTYPE_BOOL = 3  # one byte, nonzero = true: masks only
FA_BACKEND_CPU = 1
FA_BACKEND_CUDA = 3
FA_MASK_NONE = 0
FA_MASK_CAUSAL = 1
FA_MASK_SLIDING_WINDOW = 2
FA_MASK_PREFIX_LM = 3
FA_ROTARY_NONE = 0
FA_MAX_DECODE_QUERIES = 16
FA_MAX_DECODE_SPLITS = 256

c_enum = ctypes.c_int


class FaTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("dtype", c_enum),
        ("ndim", ctypes.c_int32),
        ("shape", ctypes.c_int64 * 4),
        ("strides", ctypes.c_int64 * 4),  # in elements
    ]


class FaRunOptions(ctypes.Structure):
    _fields_ = [
        ("backend", c_enum),
        ("num_threads", ctypes.c_int32),
        ("cuda_stream", ctypes.c_void_p),
        ("cuda_path", ctypes.c_int32),
        ("reserved", ctypes.c_int32 * 7),
    ]


class FaMask(ctypes.Structure):
    _fields_ = [
        ("kind", c_enum),
        ("window_left", ctypes.c_int64),
        ("window_right", ctypes.c_int64),
        ("prefix_len", ctypes.c_int64),      # FA_MASK_PREFIX_LM
        ("chunk_size", ctypes.c_int64),      # 0 = off
        ("reserved", ctypes.c_int64 * 4),    # must be zero
        ("q_segment_ids", ctypes.POINTER(ctypes.c_int32)),  # with k_segment_ids
        ("k_segment_ids", ctypes.POINTER(ctypes.c_int32)),
        ("block_mask", ctypes.c_void_p),     # const fa_block_mask*, opaque
        ("reserved_ptr", ctypes.c_void_p * 1),
    ]


class FaAttentionArgs(ctypes.Structure):
    _fields_ = [
        ("q", FaTensor),
        ("k", FaTensor),
        ("v", FaTensor),
        ("out", FaTensor),
        ("lse", FaTensor),
        ("cu_seqlens_q", ctypes.POINTER(ctypes.c_int32)),
        ("cu_seqlens_k", ctypes.POINTER(ctypes.c_int32)),
        ("num_seqs", ctypes.c_int64),
        ("mask", FaMask),
        ("softmax_scale", ctypes.c_float),
        ("softcap", ctypes.c_float),
        ("max_seqlen_q", ctypes.c_int64),
        ("max_seqlen_k", ctypes.c_int64),
    ]


class FaDecodeArgs(ctypes.Structure):
    _fields_ = [
        ("q", FaTensor),
        ("k_cache", FaTensor),
        ("v_cache", FaTensor),
        ("page_table", ctypes.POINTER(ctypes.c_int32)),  # NULL: contiguous cache
        ("page_table_stride", ctypes.c_int64),
        ("max_pages_per_seq", ctypes.c_int64),
        ("cache_seqlens", ctypes.POINTER(ctypes.c_int32)),
        ("k_new", FaTensor),
        ("v_new", FaTensor),
        ("rotary_style", ctypes.c_int32),
        ("rotary_dim", ctypes.c_int32),
        ("rotary_cos", FaTensor),
        ("rotary_sin", FaTensor),
        ("out", FaTensor),
        ("lse", FaTensor),
        ("mask", FaMask),
        ("softmax_scale", ctypes.c_float),
        ("softcap", ctypes.c_float),
        ("max_seqlen_k", ctypes.c_int64),
        ("num_splits", ctypes.c_int32),
    ]


class FaDecodePlan(ctypes.Structure):
    _fields_ = [
        ("backend", ctypes.c_int32),
        ("num_splits", ctypes.c_int32),
        ("workspace_bytes", ctypes.c_uint64),
        ("problem", ctypes.c_int64 * 8),
        ("reserved", ctypes.c_int64 * 8),
    ]


class FaBlockMaskArgs(ctypes.Structure):
    _fields_ = [
        ("dense", FaTensor),   # FA_DTYPE_BOOL [Bm, Hm, Lq, Lk]
        ("blocks", FaTensor),  # FA_DTYPE_BOOL [Bm, Hm, ceil(Lq/block_q), ceil(Lk/block_k)]
        ("seqlen_q", ctypes.c_int64),  # blocks only
        ("seqlen_k", ctypes.c_int64),
        ("block_q", ctypes.c_int64),   # 0 = 128
        ("block_k", ctypes.c_int64),
        ("reserved", ctypes.c_int64 * 4),
    ]


class FaBlockMaskInfo(ctypes.Structure):
    _fields_ = [
        ("batch", ctypes.c_int64),
        ("heads", ctypes.c_int64),
        ("seqlen_q", ctypes.c_int64),
        ("seqlen_k", ctypes.c_int64),
        ("block_q", ctypes.c_int64),
        ("block_k", ctypes.c_int64),
        ("empty_blocks", ctypes.c_int64),
        ("full_blocks", ctypes.c_int64),
        ("partial_blocks", ctypes.c_int64),
        ("state_bytes", ctypes.c_uint64),
        ("on_device", ctypes.c_int32),
        ("device", ctypes.c_int32),
    ]


# Sizes worked out by hand from the C layout rules on LP64 (pointers and
# int64 8 bytes, aligned to 8; enums and int32 4 bytes), so that a field added
# to or reordered in fastattn.h without updating this mirror fails at import
# instead of passing garbage to the library:
#   fa_tensor:       data 0..8, dtype 8..12, ndim 12..16, shape 16..48,
#                    strides 48..80                                  -> 80
#   fa_run_options:  backend 0..4, num_threads 4..8, cuda_stream 8..16,
#                    cuda_path 16..20, reserved 20..48                -> 48
#   fa_mask:         kind 0..4, pad 4..8 (int64 next), window_left 8..16,
#                    window_right 16..24, prefix_len 24..32,
#                    chunk_size 32..40, reserved 40..72,
#                    q_segment_ids 72..80, k_segment_ids 80..88,
#                    block_mask 88..96, reserved_ptr 96..104        -> 104
#   fa_attention_args: q,k,v,out,lse 5 x 80 = 0..400, cu_seqlens_q 400..408,
#                    cu_seqlens_k 408..416, num_seqs 416..424,
#                    mask 424..528, softmax_scale 528..532, softcap 532..536,
#                    max_seqlen_q 536..544, max_seqlen_k 544..552   -> 552
#   fa_decode_args:  q, k_cache, v_cache 0..240, page_table 240..248,
#                    page_table_stride 248..256, max_pages_per_seq 256..264,
#                    cache_seqlens 264..272, k_new 272..352, v_new 352..432,
#                    rotary_style 432..436, rotary_dim 436..440,
#                    rotary_cos 440..520, rotary_sin 520..600, out 600..680,
#                    lse 680..760, mask 760..864, softmax_scale 864..868,
#                    softcap 868..872, max_seqlen_k 872..880,
#                    num_splits 880..884, tail pad 884..888          -> 888
#   fa_decode_plan:  backend 0..4, num_splits 4..8, workspace_bytes 8..16,
#                    problem 16..80, reserved 80..144                -> 144
#   fa_block_mask_args: dense 0..80, blocks 80..160, seqlen_q 160..168,
#                    seqlen_k 168..176, block_q 176..184, block_k 184..192,
#                    reserved 192..224                               -> 224
#   fa_block_mask_info: batch .. partial_blocks 9 x 8 = 0..72,
#                    state_bytes 72..80, on_device 80..84, device 84..88 -> 88
EXPECTED_SIZES = {FaTensor: 80, FaRunOptions: 48, FaMask: 104, FaAttentionArgs: 552,
                  FaDecodeArgs: 888, FaDecodePlan: 144, FaBlockMaskArgs: 224, FaBlockMaskInfo: 88}
C_NAMES = {FaTensor: "fa_tensor", FaRunOptions: "fa_run_options", FaMask: "fa_mask",
           FaAttentionArgs: "fa_attention_args",
           FaDecodeArgs: "fa_decode_args", FaDecodePlan: "fa_decode_plan",
           FaBlockMaskArgs: "fa_block_mask_args", FaBlockMaskInfo: "fa_block_mask_info"}
C_CONSTANTS = {"FA_STATUS_OK": FA_STATUS_OK, "FA_DTYPE_FLOAT32": FA_DTYPE_FLOAT32,
               "FA_DTYPE_FLOAT16": FA_DTYPE_FLOAT16, "FA_DTYPE_BFLOAT16": FA_DTYPE_BFLOAT16,
               "FA_DTYPE_BOOL": FA_DTYPE_BOOL, "FA_BACKEND_CPU": FA_BACKEND_CPU,
               "FA_BACKEND_CUDA": FA_BACKEND_CUDA, "FA_MASK_NONE": FA_MASK_NONE,
               "FA_MASK_CAUSAL": FA_MASK_CAUSAL, "FA_MASK_SLIDING_WINDOW": FA_MASK_SLIDING_WINDOW,
               "FA_MASK_PREFIX_LM": FA_MASK_PREFIX_LM, "FA_ROTARY_NONE": FA_ROTARY_NONE,
               "FA_MAX_DECODE_QUERIES": FA_MAX_DECODE_QUERIES,
               "FA_MAX_DECODE_SPLITS": FA_MAX_DECODE_SPLITS}


def check_struct_sizes():
    # Explicit raises rather than `assert`, which python -O would drop.
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        raise AssertionError("the fastattn ctypes mirror assumes a 64-bit (LP64) process")
    for cls, expected in EXPECTED_SIZES.items():
        got = ctypes.sizeof(cls)
        if got != expected:
            raise AssertionError(f"ctypes.sizeof({cls.__name__}) = {got}, C layout says {expected}: "
                                 "the mirror is out of step with fastattn.h")


check_struct_sizes()


def layout_lines():
    """'sizeof NAME N', 'offsetof NAME.FIELD N' and 'const NAME N' lines, in the
    format a C program printing sizeof/offsetof of fastattn.h gives, to diff."""
    lines = []
    for cls, cname in C_NAMES.items():
        lines.append(f"sizeof {cname} {ctypes.sizeof(cls)}")
        for field, _ in cls._fields_:
            lines.append(f"offsetof {cname}.{field} {getattr(cls, field).offset}")
    for name, value in C_CONSTANTS.items():
        lines.append(f"const {name} {value}")
    return lines


def c_layout_program():
    """C source printing the same lines as layout_lines() from fastattn.h itself."""
    body = []
    for cls, cname in C_NAMES.items():
        body.append(f'  printf("sizeof {cname} %zu\\n", sizeof({cname}));')
        for field, _ in cls._fields_:
            body.append(f'  printf("offsetof {cname}.{field} %zu\\n", offsetof({cname}, {field}));')
    for name in C_CONSTANTS:
        body.append(f'  printf("const {name} %lld\\n", (long long){name});')
    return ("#include <stddef.h>\n#include <stdio.h>\n#include \"fastattn/fastattn.h\"\n"
            "int main(void) {\n" + "\n".join(body) + "\n  return 0;\n}\n")


def check_against_c(cc="gcc", include_dir=None):
    """Compiles c_layout_program() against the header and diffs with layout_lines().
    Returns the differing lines (empty: the mirror matches)."""
    if include_dir is None:
        include_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))), "include")
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = os.path.join(tmp, "layout.c"), os.path.join(tmp, "layout")
        with open(src, "w") as fh:
            fh.write(c_layout_program())
        subprocess.run([cc, "-std=c11", "-Wall", "-Werror", "-I", include_dir, src, "-o", exe], check=True)
        c_lines = subprocess.run([exe], check=True, capture_output=True, text=True).stdout.splitlines()
    py_lines = layout_lines()
    diff = [f"C: {a} | ctypes: {b}" for a, b in zip(c_lines, py_lines) if a != b]
    if len(c_lines) != len(py_lines):
        diff.append(f"C printed {len(c_lines)} lines, ctypes {len(py_lines)}")
    return diff


class FastattnError(RuntimeError):
    pass


def load_library(path):
    lib = ctypes.CDLL(path)
    lib.fa_attention_forward.restype = c_enum
    lib.fa_attention_forward.argtypes = [ctypes.POINTER(FaAttentionArgs), ctypes.POINTER(FaRunOptions)]
    lib.fa_plan_decode.restype = c_enum
    lib.fa_plan_decode.argtypes = [ctypes.POINTER(FaDecodeArgs), ctypes.POINTER(FaRunOptions),
                                   ctypes.POINTER(FaDecodePlan)]
    lib.fa_run_decode.restype = c_enum
    lib.fa_run_decode.argtypes = [ctypes.POINTER(FaDecodeArgs), ctypes.POINTER(FaDecodePlan),
                                  ctypes.c_void_p, ctypes.c_uint64, ctypes.POINTER(FaRunOptions)]
    lib.fa_last_error.restype = ctypes.c_char_p
    lib.fa_last_error.argtypes = []
    lib.fa_version_string.restype = ctypes.c_char_p
    lib.fa_version_string.argtypes = []
    lib.fa_backend_available.restype = ctypes.c_int
    lib.fa_backend_available.argtypes = [c_enum]
    # The block-mask entry points are looked up only where a script uses them,
    # so a library from before them still serves the prefill and decode scripts.
    if hasattr(lib, "fa_block_mask_create"):
        lib.fa_block_mask_create.restype = c_enum
        lib.fa_block_mask_create.argtypes = [ctypes.POINTER(FaBlockMaskArgs), ctypes.POINTER(FaRunOptions),
                                             ctypes.POINTER(ctypes.c_void_p)]
        lib.fa_block_mask_get_info.restype = c_enum
        lib.fa_block_mask_get_info.argtypes = [ctypes.c_void_p, ctypes.POINTER(FaBlockMaskInfo)]
        lib.fa_block_mask_destroy.restype = None
        lib.fa_block_mask_destroy.argtypes = [ctypes.c_void_p]
    return lib


def load_cuda_library(torch, path):
    """load_library for a GPU benchmark: exits with a message naming what is
    missing (a GPU for torch, the file, its entry points, its CUDA backend)."""
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to torch")
    if not os.path.exists(path):
        raise SystemExit(f"library not found: {path} (build it or pass --lib)")
    try:
        lib = load_library(path)
    except AttributeError as exc:
        raise SystemExit(f"{path} lacks an entry point this script needs: {exc}")
    if lib.fa_backend_available(FA_BACKEND_CUDA) != 1:
        raise SystemExit(f"fa_backend_available(FA_BACKEND_CUDA) != 1 for {path}: "
                         "the library was built without the CUDA backend or sees no GPU")
    return lib


def fa_tensor_of(t, fa_dtype):
    """An fa_tensor over a torch tensor's storage; torch strides are already in elements."""
    ft = FaTensor()
    ft.data = t.data_ptr()
    ft.dtype = fa_dtype
    ft.ndim = t.dim()
    for i in range(t.dim()):
        ft.shape[i] = t.shape[i]
        ft.strides[i] = t.stride(i)
    return ft


def int32_ptr(t):
    return ctypes.cast(ctypes.c_void_p(t.data_ptr()), ctypes.POINTER(ctypes.c_int32))


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="check the ctypes mirror against include/fastattn/fastattn.h")
    ap.add_argument("--check-c", action="store_true",
                    help="compile a sizeof/offsetof program against the header and diff (needs a C compiler)")
    ap.add_argument("--cc", default="gcc")
    opts = ap.parse_args()
    if not opts.check_c:
        print("\n".join(layout_lines()))
        sys.exit(0)
    differences = check_against_c(opts.cc)
    print("\n".join(differences) if differences else
          f"ctypes mirror matches fastattn.h: {len(layout_lines())} sizeof/offsetof/const lines equal")
    sys.exit(1 if differences else 0)
