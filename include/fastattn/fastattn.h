/*
 * fastattn: exact, fused attention for LLM inference.
 *
 * The stable C ABI. Every entry point validates its arguments, returns a
 * status and never throws; on any status other than FA_STATUS_OK nothing has
 * been written to the outputs and fa_last_error() says which argument was
 * wrong and what is allowed. Plain structs only: zero-initialise them
 * (`fa_attention_args a = {0};`) and set what you need, so fields added at the
 * end in later versions keep their defaults.
 *
 * Tensors are described by fa_tensor: a data pointer, a dtype and up to four
 * dimensions with strides counted in elements (not bytes). The last dimension
 * (the head dimension) must be contiguous; every other stride is free, so
 * slices of a fused QKV projection can be passed without copies.
 */
#ifndef FASTATTN_FASTATTN_H_
#define FASTATTN_FASTATTN_H_

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define FA_API __declspec(dllexport)
#else
#define FA_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define FA_VERSION_MAJOR 0
#define FA_VERSION_MINOR 1
#define FA_VERSION_PATCH 0
#define FA_MAX_HEAD_DIM 256

typedef enum fa_status {
  FA_STATUS_OK = 0,
  FA_STATUS_INVALID_ARGUMENT = 1, /* an argument is out of its allowed range */
  FA_STATUS_UNSUPPORTED = 2,      /* valid, but the chosen backend cannot run it */
  FA_STATUS_NO_DEVICE = 3,        /* the chosen backend is not built or has no device */
  FA_STATUS_BACKEND_ERROR = 4,    /* the device reported an error while running */
  FA_STATUS_OUT_OF_MEMORY = 5,
  FA_STATUS_INTERNAL_ERROR = 6
} fa_status;

typedef enum fa_dtype {
  FA_DTYPE_FLOAT32 = 0,  /* CPU backends only */
  FA_DTYPE_FLOAT16 = 1,
  FA_DTYPE_BFLOAT16 = 2,
  FA_DTYPE_BOOL = 3      /* one byte, nonzero = true: masks only */
} fa_dtype;

typedef struct fa_tensor {
  void* data;
  fa_dtype dtype;
  int32_t ndim;
  int64_t shape[4];
  int64_t strides[4]; /* in elements; strides[ndim - 1] must be 1 */
} fa_tensor;

typedef enum fa_backend {
  FA_BACKEND_AUTO = 0,          /* CUDA when the data lives on a GPU, else CPU */
  FA_BACKEND_CPU = 1,           /* tiled flash attention, SIMD + threads */
  FA_BACKEND_CPU_REFERENCE = 2, /* float64 reference: the test oracle, slow */
  FA_BACKEND_CUDA = 3
} fa_backend;

/* CUDA kernel families; tests and benchmarks can force one. */
typedef enum fa_cuda_path {
  FA_CUDA_PATH_AUTO = 0,
  FA_CUDA_PATH_SM70 = 70, /* mma.sync m8n8k4, float16: Volta and newer */
  FA_CUDA_PATH_SM75 = 75, /* mma.sync m16n8k8 + ldmatrix, float16: Turing and newer */
  FA_CUDA_PATH_SM80 = 80, /* mma.sync m16n8k16 + cp.async: sm80 and newer */
  FA_CUDA_PATH_SM90 = 90  /* wgmma + TMA, warp-specialized: Hopper (9.0) only */
} fa_cuda_path;

typedef struct fa_run_options {
  fa_backend backend;
  int32_t num_threads;   /* CPU: worker threads, 0 = all available */
  void* cuda_stream;     /* CUDA: a cudaStream_t, NULL = the default stream */
  int32_t cuda_path;     /* CUDA: an fa_cuda_path; 0 = chosen by device capability */
  int32_t reserved[7];
} fa_run_options;

/*
 * Masks are small values; none of them is ever expanded into an Lq x Lk
 * matrix. Query row i (0-based, within its sequence) and key column j are
 * aligned bottom-right, as in FlashAttention >= 2.1: with off = Lk - Lq and
 * the query's position d = i + off,
 *   FA_MASK_CAUSAL:         j <= d
 *   FA_MASK_SLIDING_WINDOW: d - window_left <= j <= d + window_right,
 *                           a negative bound meaning unbounded on that side
 *                           (so window (-1, 0) is causal)
 *   FA_MASK_PREFIX_LM:      j <= d or j < prefix_len: a bidirectional prefix
 *                           of prefix_len keys, causal after it.
 * Three refinements combine with any kind; each removes pairs:
 *   chunk_size > 0:         chunked local attention, j and d in the same
 *                           chunk: floor(j / chunk_size) == floor(d / chunk_size)
 *                           (with FA_MASK_CAUSAL: causal within each chunk);
 *   q_segment_ids, k_segment_ids (set together): documents packed into one
 *                           sequence, q_segment_ids[i] == k_segment_ids[j];
 *                           int32 per token on the device that runs
 *                           ([B, Lq] and [B, Lk] contiguous, or [total_q]
 *                           and [total_k] for varlen), each row of ids
 *                           non-decreasing (documents are contiguous runs);
 *                           with FA_MASK_CAUSAL: causal within each document;
 *   block_mask:             a compressed boolean mask (fa_block_mask_create):
 *                           pairs it excludes are removed.
 * So documents of a packed batch are FA_MASK_CAUSAL plus segment ids, a
 * block-sparse or arbitrary mask is FA_MASK_NONE plus a block_mask, and
 * chunked local attention as in Llama 4 is FA_MASK_CAUSAL plus chunk_size.
 * A row that allows no key gets output 0 and LSE -inf.
 */
typedef enum fa_mask_kind {
  FA_MASK_NONE = 0,
  FA_MASK_CAUSAL = 1,
  FA_MASK_SLIDING_WINDOW = 2,
  FA_MASK_PREFIX_LM = 3
} fa_mask_kind;

typedef struct fa_block_mask fa_block_mask; /* opaque; see fa_block_mask_create */

typedef struct fa_mask {
  fa_mask_kind kind;
  int64_t window_left;
  int64_t window_right;
  int64_t prefix_len;            /* FA_MASK_PREFIX_LM: keys every query sees, >= 0 */
  int64_t chunk_size;            /* 0 = off; else > 0 */
  /* Room for the parameters of later mask kinds; must be zero. */
  int64_t reserved[4];
  const int32_t* q_segment_ids;  /* optional, with k_segment_ids */
  const int32_t* k_segment_ids;
  const fa_block_mask* block_mask; /* optional */
  const void* reserved_ptr[1];
} fa_mask;

/*
 * O = softmax(scale * Q K^T, masked) V, per head.
 *
 * Padded batch:  q [B, Lq, Hq, D], k and v [B, Lk, Hkv, D], out like q,
 *                lse float32 [B, Hq, Lq].
 * Variable length (cu_seqlens_q and cu_seqlens_k set, int32 arrays of
 * num_seqs + 1 cumulative offsets): q [total_q, Hq, D], k and v
 * [total_k, Hkv, D], out like q, lse float32 [Hq, total_q].
 * The CPU backends read cu_seqlens on the host and check them. The CUDA
 * backend reads them on the GPU (device, managed or pinned memory) and never
 * synchronises to look at them, so it needs max_seqlen_q and max_seqlen_k
 * (the longest sequence of each) and trusts the offsets: they must be
 * non-decreasing, start at 0 and stay within the tensors.
 *
 * Placement: FA_BACKEND_AUTO runs on the GPU that holds q (CUDA backend) and
 * on the CPU when q is in host memory; q, k, v, out and lse must all be on
 * the same side.
 *
 * Hq must be a multiple of Hkv (MHA, GQA, MQA); query head h reads KV head
 * h / (Hq / Hkv). D is any multiple of 8 up to 256. Sequence lengths are at
 * most 2^31 - 1. Outputs must not overlap the inputs.
 */
typedef struct fa_attention_args {
  fa_tensor q;
  fa_tensor k;
  fa_tensor v;
  fa_tensor out;
  fa_tensor lse;                /* optional: data == NULL skips it */
  const int32_t* cu_seqlens_q;  /* optional, varlen */
  const int32_t* cu_seqlens_k;  /* set together with cu_seqlens_q */
  int64_t num_seqs;             /* varlen only: number of sequences */
  fa_mask mask;
  float softmax_scale;          /* 0 = 1 / sqrt(D) */
  float softcap;                /* 0 = off; else scores = softcap * tanh(s / softcap) */
  int64_t max_seqlen_q;         /* varlen: longest query sequence (CUDA: required) */
  int64_t max_seqlen_k;         /* varlen: longest key sequence (CUDA: required) */
} fa_attention_args;

FA_API fa_status fa_attention_forward(const fa_attention_args* args,
                                      const fa_run_options* options);

/*
 * Attention of new queries over a paged KV cache (decode, speculative
 * verification, chunked prefill).
 *
 * q [B, Lq, Hq, D]: the last Lq positions of each sequence.
 * k_cache, v_cache [num_pages, page_size, Hkv, D]; any page_size >= 1.
 * page_table: host int32 [B, max_pages_per_seq] with row stride
 *   page_table_stride; entry p of sequence b is the page holding keys
 *   p * page_size ... p * page_size + page_size - 1.
 * seq_lens_k: host int32 [B], keys of each sequence (new tokens included).
 * out like q; lse float32 [B, Hq, Lq], optional.
 */
typedef struct fa_paged_attention_args {
  fa_tensor q;
  fa_tensor k_cache;
  fa_tensor v_cache;
  const int32_t* page_table;
  int64_t page_table_stride;
  int64_t max_pages_per_seq;
  const int32_t* seq_lens_k;
  fa_tensor out;
  fa_tensor lse;
  fa_mask mask;
  float softmax_scale;
  float softcap;
} fa_paged_attention_args;

FA_API fa_status fa_paged_attention(const fa_paged_attention_args* args,
                                    const fa_run_options* options);

/*
 * One decoding step (or a speculative verification) over a KV cache, planned
 * once and run many times:
 *   1. optionally append the new tokens' K/V to the cache, with rotary
 *      embedding of the new q and k;
 *   2. attend from the Lq new queries to every key of each sequence, split
 *      over the keys when that keeps the GPU busy, partial states merged on
 *      the device.
 *
 * q [B, Lq, Hq, D]: the last Lq positions of each sequence (CUDA: Lq 1 to 16).
 * The cache, one of
 *   paged (page_table set):      k_cache, v_cache [num_pages, page_size, Hkv, D],
 *                                any page_size >= 1; page_table int32
 *                                [B, max_pages_per_seq], row stride page_table_stride;
 *   contiguous (page_table NULL): k_cache, v_cache [B, capacity, Hkv, D].
 * cache_seqlens int32 [B]: keys already in the cache of each sequence.
 * k_new, v_new [B, Lq, Hkv, D], optional (both or neither): written to cache
 *   positions cache_seqlens[b] ... cache_seqlens[b] + Lq - 1 before attention.
 *   Sequence b then has cache_seqlens[b] + Lq keys (without them: cache_seqlens[b]).
 * Rotary (needs k_new): q and k_new are rotated at positions cache_seqlens[b] + i
 *   with rotary_cos, rotary_sin float32 [max_position, rotary_dim / 2] (row
 *   stride free); rotary_dim even, 2 to D; the rotated values are rounded to
 *   the dtype (k_new as stored in the cache).
 * out like q; lse float32 [B, Hq, Lq], optional. mask, softmax_scale and
 * softcap as in fa_attention_args, the queries aligned to the end of each
 * sequence.
 * page_table and cache_seqlens: host memory on the CPU backends (checked);
 * on CUDA they are read on the GPU (device, managed or pinned memory) and
 * trusted, so a captured graph can replay with new lengths.
 */
typedef enum fa_rotary_style {
  FA_ROTARY_NONE = 0,
  FA_ROTARY_HALF = 1,       /* pairs (x[i], x[i + rotary_dim / 2]): GPT-NeoX, Llama */
  FA_ROTARY_INTERLEAVED = 2 /* pairs (x[2i], x[2i + 1]): GPT-J */
} fa_rotary_style;

#define FA_MAX_DECODE_QUERIES 16
#define FA_MAX_DECODE_SPLITS 256

typedef struct fa_decode_args {
  fa_tensor q;
  fa_tensor k_cache;
  fa_tensor v_cache;
  const int32_t* page_table;    /* NULL: contiguous cache */
  int64_t page_table_stride;
  int64_t max_pages_per_seq;
  const int32_t* cache_seqlens;
  fa_tensor k_new;              /* optional */
  fa_tensor v_new;              /* optional, set together with k_new */
  int32_t rotary_style;         /* an fa_rotary_style */
  int32_t rotary_dim;
  fa_tensor rotary_cos;
  fa_tensor rotary_sin;
  fa_tensor out;
  fa_tensor lse;                /* optional */
  fa_mask mask;
  float softmax_scale;          /* 0 = 1 / sqrt(D) */
  float softcap;                /* 0 = off */
  /* Planning: the most keys any sequence will have (after the append);
   * 0 = the cache's capacity. Runs with longer sequences stay exact. */
  int64_t max_seqlen_k;
  int32_t num_splits;           /* 0 = the planner chooses; else 1 to FA_MAX_DECODE_SPLITS */
} fa_decode_args;

/* What fa_plan_decode chose; pass it unchanged to fa_run_decode. A plan
 * stays valid for every call with the same backend, device, dtype, B, Lq,
 * Hq, Hkv, D and cache capacity (lengths, pages and pointers may change). */
typedef struct fa_decode_plan {
  int32_t backend;          /* the fa_backend that runs it */
  int32_t num_splits;       /* key splits per (sequence, KV head) */
  uint64_t workspace_bytes; /* device memory fa_run_decode needs (0: none) */
  int64_t problem[8];       /* what the plan was made for; checked by the run */
  int64_t reserved[8];
} fa_decode_plan;

FA_API fa_status fa_plan_decode(const fa_decode_args* args, const fa_run_options* options,
                                fa_decode_plan* plan);

/* workspace: workspace_bytes of memory on the device that runs the plan
 * (unused when 0), not shared with a concurrent call. No allocation, no host
 * synchronisation: capturable in a CUDA graph. */
FA_API fa_status fa_run_decode(const fa_decode_args* args, const fa_decode_plan* plan,
                               void* workspace, uint64_t workspace_bytes,
                               const fa_run_options* options);

/*
 * Merge of partial attention states over disjoint key sets into the exact
 * state over their union:
 *   LSE = log(sum_i exp(LSE_i)),  O = sum_i exp(LSE_i - LSE) * O_i.
 * outs[i] [B, L, H, D] (any dtype), lses[i] float32 [B, H, L];
 * out [B, L, H, D], lse optional. Where every LSE_i is -inf: O = 0, LSE = -inf.
 * On CUDA (every tensor on one GPU) it runs on options->cuda_stream, without
 * allocation or host synchronisation.
 */
typedef struct fa_merge_args {
  int32_t num_states;
  const fa_tensor* outs;
  const fa_tensor* lses;
  fa_tensor out;
  fa_tensor lse; /* optional */
} fa_merge_args;

FA_API fa_status fa_merge_states(const fa_merge_args* args,
                                 const fa_run_options* options);

/*
 * A compressed boolean mask, built once and used by every call (layer, step)
 * that passes it in fa_mask.block_mask. The (Lq, Lk) plane is cut into
 * blocks of block_q x block_k; each block is EMPTY (never loaded by the
 * kernels), FULL (run without any mask instruction) or PARTIAL, and only
 * PARTIAL blocks keep their bits, packed 32 to a word. Its state is 8 bytes
 * a block plus block_q * block_k / 8 bytes a PARTIAL block: at 128 x 128
 * blocks and 10% PARTIAL, 1/78 of the dense bool mask.
 *
 * From exactly one source:
 *   dense:  FA_DTYPE_BOOL [Bm, Hm, Lq, Lk] (ndim 4, last dim contiguous),
 *           nonzero = the pair is allowed: an arbitrary mask;
 *   blocks: FA_DTYPE_BOOL [Bm, Hm, ceil(Lq / block_q), ceil(Lk / block_k)]
 *           with seqlen_q, seqlen_k: nonzero = FULL, 0 = EMPTY: a
 *           block-sparse mask.
 * Bm is 1 (the same for every sequence) or the batch B, Hm is 1 or Hq.
 * block_q, block_k: 64, 128 or 256 (0 = 128). The CUDA backend runs block
 * masks on every path (sm70, sm75, sm80, sm90) with block_q 128 or 256 (a
 * query tile of 128 rows lies in one block row) and key tiles that divide
 * block_k (64 keys on sm70 to sm80, 16 on sm70/sm75 at D = 256; 128 on sm90
 * up to D = 128, so D = 256 runs on sm80).
 * The source's memory decides where the mask lives and runs: a device
 * tensor is compressed on that GPU (on options->cuda_stream, which the call
 * synchronises once to size the result; the mask is complete in that
 * stream's order, so work on other streams must wait for it), a host tensor
 * on the CPU; a mask
 * serves the backend on its side only. The source may be freed afterwards.
 * Padded batches only (no cu_seqlens, no paged cache).
 */
typedef struct fa_block_mask_args {
  fa_tensor dense;
  fa_tensor blocks;
  int64_t seqlen_q; /* blocks only */
  int64_t seqlen_k; /* blocks only */
  int64_t block_q;  /* 0 = 128 */
  int64_t block_k;  /* 0 = 128 */
  int64_t reserved[4];
} fa_block_mask_args;

typedef struct fa_block_mask_info {
  int64_t batch, heads, seqlen_q, seqlen_k; /* batch, heads: 1 = broadcast */
  int64_t block_q, block_k;
  int64_t empty_blocks, full_blocks, partial_blocks;
  uint64_t state_bytes; /* memory the compressed mask holds */
  int32_t on_device;    /* 1: GPU memory (device below), 0: host memory */
  int32_t device;
} fa_block_mask_info;

FA_API fa_status fa_block_mask_create(const fa_block_mask_args* args,
                                      const fa_run_options* options, fa_block_mask** mask);
FA_API fa_status fa_block_mask_get_info(const fa_block_mask* mask, fa_block_mask_info* info);
/* Frees the mask; NULL is a no-op. No call that uses it may be in flight. */
FA_API void fa_block_mask_destroy(fa_block_mask* mask);

/* Would fa_attention_forward accept and run these arguments? Writes nothing. */
FA_API fa_status fa_attention_supported(const fa_attention_args* args,
                                        const fa_run_options* options);

/* The message of the last failed call on this thread ("" after success). */
FA_API const char* fa_last_error(void);
FA_API const char* fa_status_string(fa_status status);
FA_API const char* fa_version_string(void);
/* 1 when the backend is built in and can run here (CUDA: a GPU is present). */
FA_API int fa_backend_available(fa_backend backend);
/* The SIMD target the CPU backend dispatched to here, e.g. "AVX3+avx512bf16"
 * (the "+avx512bf16" part: bf16 inputs use the AVX512-BF16 dot products). */
FA_API const char* fa_cpu_target(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FASTATTN_FASTATTN_H_ */
