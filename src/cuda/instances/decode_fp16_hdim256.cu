// Decode attention, CUDA cores, fp16, head dim 256.
#include "cuda/decode/decode_launch.cuh"

FASTATTN_DECODE_INSTANCE(__half, 256)
