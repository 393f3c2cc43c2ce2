// CPU backends: the float64 reference (the test oracle) and the fast tiled
// flash-attention backend. Both take already-validated parameters.
#pragma once

#include "api/params.h"

namespace fastattn::cpu {

// Float64 reference: scores, softmax and P V all in double. Slow by design.
void reference_attention(const AttentionParams& p);

// Tiled flash attention (online softmax, fp32 accumulation), SIMD with
// runtime dispatch, OpenMP over (batch, head, query tile) work items. Covers
// padded, varlen and paged layouts, every mask, softcap and LSE.
void flash_attention(const AttentionParams& p);

// One decoding step: appends k_new / v_new to the cache (rotating k_new),
// rotates a copy of q, then attends on the reference (float64) or the flash
// backend. p.cache_seqlens and the page table were checked on the host.
void decode(const DecodeParams& p, bool reference);

// Exact merge of partial (O, LSE) states.
void merge_states(const MergeParams& p);

// The SIMD target chosen at run time, e.g. "AVX3" or "AVX3+avx512bf16".
const char* simd_target_name();

}  // namespace fastattn::cpu
