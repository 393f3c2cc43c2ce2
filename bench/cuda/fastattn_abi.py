"""ctypes mirror of include/fastattn/fastattn.h for the benchmarks in this folder.

Importable without torch or a GPU; the struct sizes are checked at import
against the C layout rules, and layout_lines() prints sizes, offsets and
constants in the format of a C program printing sizeof/offsetof, to diff.
"""
import ctypes

# C enums are 4-byte ints.

FA_STATUS_OK = 0
FA_DTYPE_FLOAT16 = 1
FA_DTYPE_BFLOAT16 = 2
FA_BACKEND_CUDA = 3
FA_MASK_NONE = 0
FA_MASK_CAUSAL = 1
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
        ("reserved", ctypes.c_int64 * 6),
        ("reserved_ptr", ctypes.c_void_p * 4),
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


# Sizes worked out by hand from the C layout rules on LP64 (pointers and
# int64 8 bytes, aligned to 8; enums and int32 4 bytes), so that a field added
# to or reordered in fastattn.h without updating this mirror fails at import
# instead of passing garbage to the library:
#   fa_tensor:       data 0..8, dtype 8..12, ndim 12..16, shape 16..48,
#                    strides 48..80                                  -> 80
#   fa_run_options:  backend 0..4, num_threads 4..8, cuda_stream 8..16,
#                    cuda_path 16..20, reserved 20..48                -> 48
#   fa_mask:         kind 0..4, pad 4..8 (int64 next), window_left 8..16,
#                    window_right 16..24, reserved 24..72,
#                    reserved_ptr 72..104                            -> 104
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
EXPECTED_SIZES = {FaTensor: 80, FaRunOptions: 48, FaMask: 104, FaAttentionArgs: 552,
                  FaDecodeArgs: 888, FaDecodePlan: 144}
C_NAMES = {FaTensor: "fa_tensor", FaRunOptions: "fa_run_options", FaMask: "fa_mask",
           FaAttentionArgs: "fa_attention_args",
           FaDecodeArgs: "fa_decode_args", FaDecodePlan: "fa_decode_plan"}
C_CONSTANTS = {"FA_STATUS_OK": FA_STATUS_OK, "FA_DTYPE_FLOAT16": FA_DTYPE_FLOAT16,
               "FA_DTYPE_BFLOAT16": FA_DTYPE_BFLOAT16, "FA_BACKEND_CUDA": FA_BACKEND_CUDA,
               "FA_MASK_NONE": FA_MASK_NONE, "FA_MASK_CAUSAL": FA_MASK_CAUSAL, "FA_ROTARY_NONE": FA_ROTARY_NONE,
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
