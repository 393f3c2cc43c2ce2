#include "cuda/host/tma_desc.h"

#include <cudaTypedefs.h>

namespace fastattn::cuda {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      return static_cast<PFN_cuTensorMapEncodeTiled_v12000>(nullptr);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

}  // namespace

cudaError_t make_tensor_map(const TmaOperand& t, bool bf16, int box_rows, CUtensorMap* map) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = encode_fn();
  if (encode == nullptr) return cudaErrorNotSupported;
  constexpr int64_t kElem = 2;
  // The driver wants every stride positive and a multiple of 16 bytes, also
  // along dimensions of size 1, whose stride is never used: give those the
  // dense stride.
  int64_t strides[3] = {t.row_stride * kElem, t.head_stride * kElem, t.seq_stride * kElem};
  const int64_t sizes[3] = {t.rows, t.heads, t.seqs};
  int64_t dense = t.head_dim * kElem;
  for (int i = 0; i < 3; ++i) {
    dense = (dense + 15) / 16 * 16;
    if (sizes[i] <= 1) strides[i] = dense;
    dense = strides[i] * sizes[i];
  }
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(t.head_dim), static_cast<cuuint64_t>(t.rows),
                              static_cast<cuuint64_t>(t.heads), static_cast<cuuint64_t>(t.seqs)};
  const cuuint64_t byte_strides[3] = {static_cast<cuuint64_t>(strides[0]),
                                      static_cast<cuuint64_t>(strides[1]),
                                      static_cast<cuuint64_t>(strides[2])};
  const cuuint32_t box[4] = {64, static_cast<cuuint32_t>(box_rows), 1, 1};
  const cuuint32_t elem_strides[4] = {1, 1, 1, 1};
  const CUresult r = encode(
      map, bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 4,
      const_cast<void*>(t.base), dims, byte_strides, box, elem_strides,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

}  // namespace fastattn::cuda
