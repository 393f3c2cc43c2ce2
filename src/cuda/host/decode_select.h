// Planning of the CUDA decode path: which kernel runs a decode step and into
// how many key splits it is cut. Pure functions of the device's properties
// and the problem (no GPU is touched), so the planner is unit-tested on
// machines without one.
#pragma once

#include <cstdint>

#include "api/params.h"
#include "api/status.h"

namespace fastattn::cuda {

// A CUDA-core decode block works on kDecodeRowsMax query rows at most, a
// tensor-core block on kDecodeMmaRows. A split covers at least
// kMinKeysPerSplit keys (one 16-key tile for each of 4 warps); a block's
// fixed cost is about the time it takes to read kBlockFixedKeys keys, and
// each split's partial state, written, read back and merged, adds about
// kSplitMergeKeys (fitted on the H100 over batch 1-4, 8 and 32 KV heads,
// 512-8K keys, 1-16 splits).
inline constexpr int kDecodeRowsMax = 8;
inline constexpr int kDecodeMmaRows = 16;
inline constexpr int kMinKeysPerSplit = 64;
inline constexpr int kBlockFixedKeys = 128;
inline constexpr int kSplitMergeKeys = 32;
// A split merged inside its cluster costs about kClusterMergeKeys instead
// (H100: 4K keys, batch 1, 8 KV heads: 8 splits merged in clusters 17.6 us,
// 11 through the merge kernel 18.1).
inline constexpr int kClusterMergeKeys = 8;
// Keys a tensor-core warp takes per step (the kernel's kTileKeys).
inline constexpr int kDecodeMmaTileKeys = 16;
// The most splits that merge inside a thread-block cluster: 8 blocks is the
// portable cluster size.
inline constexpr int kMaxClusterSplits = 8;

struct DecodeChoice {
  int head_dim = 0;    // instantiated head dim: 64, 128 or 256
  // mma.sync m16n8k16 over 16 packed query rows (sm80 and newer), else
  // CUDA cores over 1 to 8 rows.
  bool tensor_cores = false;
  // The merge of the splits launches behind the attention kernel while its
  // last blocks run (programmatic dependent launch, sm90 and newer).
  bool early_merge_launch = false;
  // Thread-block clusters exist (sm90 and newer), and this call's splits
  // merge in one (cluster_merge_allowed, and every cluster resident at once).
  bool clusters = false;
  bool cluster_merge = false;
  int warps = 4;       // tensor cores: warps per block, 4 or 8 (settle_decode_warps)
  // Dynamic shared memory a tensor-core block asks for at least: more than
  // half an SM's where one block runs an SM instead of two or three
  // (settle_decode_occupancy), else 0 (the kernel's own).
  int min_block_smem = 0;
  int rows = 0;        // query rows per block: 16 on tensor cores, else 1, 2, 4 or 8
  int row_chunks = 0;  // blocks per (sequence, KV head, split) to cover G * Lq rows
  int num_splits = 1;
  uint64_t workspace_bytes = 0;
};

// Checks the problem against what the decode kernels take and fills the
// kernel shape (head_dim, tensor_cores, rows, row_chunks). `capability` is
// major * 10 + minor; `requested_path` an fa_cuda_path: FA_CUDA_PATH_SM70 and
// SM75 force the CUDA-core kernel, SM80 and SM90 the tensor-core one (sm80
// and newer), AUTO takes tensor cores where the device has them. On failure
// the status names the argument and `out` is untouched.
Status choose_decode_kernel(int capability, int requested_path, const DecodeParams& p,
                            DecodeChoice* out);

// Warps per tensor-core block for `blocks` (sequence, KV head, row chunk)
// triples on `sms` SMs: 8 (one block per SM, the fewest blocks and partial
// states) while they fit in a wave or two; 4 (two blocks per SM, so one's
// start and end overlap the other's reads) for more, and always at D = 256,
// whose 8 rings would not fit in shared memory.
int choose_decode_warps(int64_t blocks, int sms, int head_dim);

// Keys per split from which 8-warp blocks give way to 4-warp ones. H100,
// D = 128, 128 blocks (one an SM), one process per shape and round: with
// 4K-128K keys a block 4 warps were 0.8-1.6% faster (batch 16 with 8 KV
// heads; batch 1 with 8 KV heads and 16 splits), with 512-2K keys 1-7%
// slower (batch 1 and 16 with 8 KV heads).
inline constexpr int64_t kFourWarpSplitKeys = 4096;

// The warps of the blocks once the splits are fixed: `warps`
// (choose_decode_warps) where it is 4, and 4 instead of 8 where each split
// holds at least kFourWarpSplitKeys of `max_keys`, the blocks with their
// splits fill at least half the SMs (fewer blocks keep 8 warps' reads in
// flight), and the 8-warp blocks' splits do not merge in clusters
// (`clustered`, clusters_keep_eight_warps). Blocks that switch to 4 warps
// then merge through the merge kernel: two or three 4-warp blocks fit an
// SM, and a cluster's blocks may share SMs while others idle (batch 1, 32
// KV heads, 4 splits of 32K keys merged in 4-warp clusters: 725 us against
// 700 with 8 warps on one H100, 698 against 700 on another). The splits
// themselves are chosen for 8-warp blocks: planned for 4-warp occupancy,
// batch 16 with 8 KV heads took 2 splits and ran 1-4% slower than 1.
int settle_decode_warps(int warps, int64_t blocks, int num_splits, int64_t max_keys, int sms,
                        bool clustered);

// When the 4-warp blocks at D = 128 run one an SM instead of two or three:
// splits of at least kOneBlockPerSmKeys keys from a contiguous cache, on
// sm90 devices whose DRAM gives each SM under kOneBlockPerSmDramGBps GB/s.
// Measured with 512-2048 blocks of one split (batch 16 and 64, 8 and 32 KV
// heads), one process per library and round:
// - H100 SXM (3.35 TB/s peak, 25 GB/s an SM): contiguous 8K-128K keys
//   0.7-1.9% faster (3.12-3.16 TB/s against 3.07-3.11, the rate 128 blocks
//   reach one an SM), level at 4K, 3-8% slower at 1K (where a second
//   block's reads cover one block's start and end); paged 0-1% slower at 8K.
// - H200 (4.8 TB/s, 36 GB/s an SM): contiguous between 1.1% slower and 1.3%
//   faster, paged 1-4.5% slower: there one block's copies in flight are too
//   few for the bandwidth.
inline constexpr int64_t kOneBlockPerSmKeys = 8192;
inline constexpr double kOneBlockPerSmDramGBps = 30.0;
// Whether the blocks of `c` (warps and merge settled) with `num_splits`
// splits of `max_keys` run one an SM, on a device of `capability` (major *
// 10 + minor) whose peak DRAM bandwidth is `dram_gbps_per_sm` an SM (0:
// unknown). Only the shape measured: 4-warp tensor-core blocks at D = 128
// (8-warp blocks and D = 256 fill an SM's shared memory anyway), not merged
// in clusters (their residency was checked for the kernel's own footprint).
bool settle_decode_occupancy(const DecodeChoice& c, int capability, bool paged, int num_splits,
                             int64_t max_keys, double dram_gbps_per_sm);
// Splits per (sequence, KV head, row chunk): those that minimise waves of
// resident blocks (sms * blocks_per_sm) times each block's keys plus its
// fixed cost, plus the merge's cost per split, so neither a batch of one nor
// a last, partial wave leaves SMs idle; never splits shorter than
// kMinKeysPerSplit keys. A split's keys are counted in whole rounds of
// `round_keys` (the tensor-core kernel deals whole rounds of tiles to its
// warps: 16 * warps; 1 for the CUDA-core kernel). Bit s of `cluster_splits`
// says that s splits would merge inside their clusters (cheaper).
int choose_num_splits(int64_t blocks, int64_t max_keys, int sms, int blocks_per_sm,
                      int round_keys, uint32_t cluster_splits = 0);

// Fewer, longer splits where the planner's model (choose_num_splits) would
// spread few blocks over every SM: on an H100, 64 blocks of 8 warps merged in
// clusters of 4 or 8 already read at the DRAM's speed (3.12 TB/s at batch 1
// with 8 KV heads, 8 splits), while 128 through the merge kernel read at
// 2.9-3.0 TB/s and finish less evenly. Forced split counts, one process,
// two rounds, us (the run of decode-h100.md):
// - batch 1, 8 KV heads: 8 splits against the model's 16: 51.8-51.9 against
//   53.2-53.5 at 32K keys, 178.1 against 180.6 at 128K;
// - batch 2, 8 KV heads, 32K keys: 4 splits 92.9 against 8 splits 95.9-96.2;
// - but clusters of 2, and 64 blocks without clusters, read slower than 128
//   blocks: batch 4 with 8 KV heads, 2 splits against 4: 187.3-187.4 against
//   181.9-182.2; batch 1 with 32 KV heads, 2 against 4: 188.4-188.8 against
//   182.0-182.3 at 32K keys, 735.6-741.4 against 696.7-702.5 at 128K; batch 2
//   with 32 KV heads, 1 split against 2: 358.6 against 351.8-353.9.
// The H200 (36 GB/s of DRAM an SM against the H100's 25) needs more blocks in
// flight for its bandwidth and keeps the model's count.
inline constexpr int64_t kClusterReadBlocks = 64;
inline constexpr int kClusterReadMinSplits = 4;
// The split count to run instead of the model's `num_splits` for 8-warp
// tensor-core blocks at D = 128 (`c`, warps not yet settled): the fewest
// splits from kClusterReadMinSplits to kMaxClusterSplits, below `num_splits`,
// that merge in clusters (bit s of `cluster_splits`) and make at least
// kClusterReadBlocks blocks of the `blocks` (sequence, KV head, row chunk)
// triples, on sm90 devices with under kOneBlockPerSmDramGBps of DRAM an SM
// (`dram_gbps_per_sm`, 0: unknown); else `num_splits`.
int prefer_cluster_read_splits(const DecodeChoice& c, int64_t blocks, int num_splits,
                               uint32_t cluster_splits, int capability, double dram_gbps_per_sm);

// The `clustered` argument of settle_decode_warps for 8-warp blocks `c`
// whose `num_splits` splits may merge in clusters (cluster_merge_allowed):
// true where they do (`merges`: every cluster resident), and where they do
// not, true unless 4-warp blocks would run one an SM instead
// (settle_decode_occupancy). Batch 1 with 32 KV heads in 4 splits (32
// clusters of four 8-warp blocks do not all fit), two interleaved rounds,
// us, 8-warp blocks and the merge kernel against 4-warp ones without
// clusters: H100 contiguous 0.6-1.1% faster with 4 warps (fp16 32K keys
// 181.5-181.7 against 183.5-183.9, 128K 701.3-701.5 against 704.7-706.7),
// paged 0.2-0.3% slower; H200 contiguous level (484.7-485.1 against
// 483.8-484.5 at 128K), paged 2-2.5% slower (494.9-498.0 against
// 487.5-489.8).
bool clusters_keep_eight_warps(const DecodeChoice& c, bool merges, int capability, bool paged,
                               int num_splits, int64_t max_keys, double dram_gbps_per_sm);

// Whether `num_splits` splits may merge inside their thread-block cluster
// (tensor-core kernel, sm90 and newer, 2 to kMaxClusterSplits splits): the
// merge then needs no partial states in global memory and no second kernel.
// The caller also checks that every cluster is resident at once: clusters
// left for a second wave made the call 30-45% slower on the H100.
bool cluster_merge_allowed(const DecodeChoice& c, int num_splits);

// Device memory for the splits' float32 partial O and LSE (0 for one split,
// and for a cluster merge, c.cluster_merge).
uint64_t decode_workspace_bytes(const DecodeParams& p, const DecodeChoice& c, int num_splits);

// Byte offset of the partial LSE array within the workspace.
uint64_t decode_workspace_lse_offset(const DecodeParams& p, int num_splits);

}  // namespace fastattn::cuda
