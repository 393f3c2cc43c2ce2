// Validation of the public argument structs into the plain params structs
// that backends take. Nothing here touches an output buffer.
#pragma once

#include "api/params.h"
#include "api/status.h"
#include "fastattn/fastattn.h"

namespace fastattn {

// What a mask may hold where it is used: attention over q/k/v tensors takes
// every kind; attention over a KV cache (paged, decode) no documents and no
// block mask.
enum class MaskUse { kAttention, kCache };
Status build_mask_params(const fa_mask& mask, MaskUse use, MaskParams* out);
// Where the chosen backend reads cu_seqlens: the CPU backends on the host
// (their contents are checked here), the CUDA backend on the device (trusted;
// max_seqlen_q / max_seqlen_k required instead).
enum class OffsetsAccess { kHost, kDevice };

Status build_attention_params(const fa_attention_args& args, OffsetsAccess offsets,
                              AttentionParams* out);
Status build_paged_attention_params(const fa_paged_attention_args& args, AttentionParams* out);
Status build_merge_params(const fa_merge_args& args, MergeParams* out);
// kHost also reads cache_seqlens and page_table (the CPU backends) and checks
// every length, page and rotary position they imply; kDevice trusts them.
Status build_decode_params(const fa_decode_args& args, OffsetsAccess offsets, DecodeParams* out);

}  // namespace fastattn
