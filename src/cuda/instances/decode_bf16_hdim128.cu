// Decode attention, CUDA cores, bf16, head dim 128.
#include "cuda/decode/decode_launch.cuh"

FASTATTN_DECODE_INSTANCE(__nv_bfloat16, 128)
