// The correctness matrix: ANCHORS.md's awkward shapes, every head dim class,
// head layouts and every feature of the contract, each crossed with the
// dtypes where the dtype changes the code path.
#include <utility>
#include <vector>

#include "check/case_builders.h"
#include "check/harness.h"

namespace fastattn::check {
namespace {

constexpr fa_dtype kDtypes[] = {FA_DTYPE_FLOAT32, FA_DTYPE_FLOAT16, FA_DTYPE_BFLOAT16};

}  // namespace

std::vector<Case> correctness_matrix(bool quick) {
  std::vector<Case> m;
  // Awkward (Lq, Lk), Lq > Lk among them (causal rows with no key).
  std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1},     {239, 1},   {799, 3}, {113, 203},
                                                     {300, 100}, {1, 517},   {64, 128}};
  if (!quick) shapes.push_back({1023, 1024});
  for (auto [lq, lk] : shapes) {
    for (fa_dtype dt : kDtypes) {
      m.push_back(base("shape", dt, lq, lk, 64));
      m.push_back(with_mask(base("shape", dt, lq, lk, 64), FA_MASK_CAUSAL));
    }
  }
  if (!quick) {
    Case big = base("large", FA_DTYPE_BFLOAT16, 4224, 4224, 128);
    big.batch = 1;
    big.heads_q = 2;
    big.heads_kv = 1;
    m.push_back(with_mask(big, FA_MASK_CAUSAL));
    big.dtype = FA_DTYPE_FLOAT32;
    m.push_back(big);
  }
  // Head dims: the exact fast ones and padded ones.
  for (int64_t d : {8, 40, 64, 72, 80, 96, 128, 136, 256}) {
    for (fa_dtype dt : kDtypes) {
      m.push_back(with_mask(base("head dim", dt, 113, 203, d), FA_MASK_CAUSAL));
    }
  }
  // MHA, GQA, MQA under every built-in mask.
  for (auto [hq, hkv] : std::vector<std::pair<int64_t, int64_t>>{{3, 3}, {6, 2}, {5, 1}}) {
    for (fa_dtype dt : {FA_DTYPE_FLOAT32, FA_DTYPE_BFLOAT16}) {
      Case c = base("heads", dt, 97, 131, 64);
      c.heads_q = hq;
      c.heads_kv = hkv;
      m.push_back(c);
      m.push_back(with_mask(c, FA_MASK_CAUSAL));
      m.push_back(with_mask(c, FA_MASK_SLIDING_WINDOW, 17, 5));
    }
  }
  // Windows: one-sided, zero-width (the diagonal only), wider than the
  // sequence, and one that empties rows (Lq > Lk, right bound negative-going).
  for (fa_dtype dt : kDtypes) {
    m.push_back(with_mask(base("window", dt, 200, 200, 64), FA_MASK_SLIDING_WINDOW, 32, -1));
    m.push_back(with_mask(base("window", dt, 200, 200, 64), FA_MASK_SLIDING_WINDOW, -1, 7));
    m.push_back(with_mask(base("window", dt, 150, 250, 64), FA_MASK_SLIDING_WINDOW, 0, 0));
    m.push_back(with_mask(base("window", dt, 150, 250, 64), FA_MASK_SLIDING_WINDOW, 1000, 1000));
    m.push_back(with_mask(base("window", dt, 250, 150, 64), FA_MASK_SLIDING_WINDOW, 8, 0));
  }
  // Softcap (strong enough to bend the scores) and an explicit scale.
  for (fa_dtype dt : kDtypes) {
    Case c = base("softcap", dt, 129, 257, 128);
    c.softcap = 1.5f;
    c.softmax_scale = 0.25f;
    m.push_back(c);
    m.push_back(with_mask(c, FA_MASK_CAUSAL));
  }
  // A sharp softmax (scores of tens): the row maximum must carry the range.
  // Not bf16: its plain implementation's rounded scores are off by ~0.25,
  // which would make the rule's tolerance meaningless.
  for (fa_dtype dt : {FA_DTYPE_FLOAT32, FA_DTYPE_FLOAT16}) {
    Case c = base("sharp", dt, 70, 150, 64);
    c.softmax_scale = 4.0f;
    m.push_back(with_mask(c, FA_MASK_CAUSAL));
  }
  // Scores of standard deviation 16 at the head dims whose GPU kernels keep
  // a row's maximum until it rises by 2^8 (lazy rescaling): over several key
  // tiles a row's maximum then both stays and moves, over short rows (700
  // keys) and long ones (2100). (Much sharper, the plain float32 loop's own
  // rounding exceeds the harness's 1e-4.)
  for (const auto& [d, scale] : {std::pair<int64_t, float>{128, 1.5f}, {256, 1.0f}}) {
    Case c = base("sharp", FA_DTYPE_FLOAT16, 130, 700, d);
    c.softmax_scale = scale;
    m.push_back(with_mask(c, FA_MASK_CAUSAL));
    c.seqlen_q = 70;
    c.seqlen_k = 2100;
    m.push_back(c);
  }
  // Variable-length batches (lengths drawn per sequence, zero included).
  for (fa_dtype dt : kDtypes) {
    Case c = base("varlen", dt, 177, 190, 64);
    c.batch = 5;
    c.varlen = true;
    m.push_back(c);
    m.push_back(with_mask(c, FA_MASK_CAUSAL));
    m.push_back(with_mask(c, FA_MASK_SLIDING_WINDOW, 24, 3));
  }
  // Arbitrary strides: heads outermost, padded rows and batches.
  for (fa_dtype dt : kDtypes) {
    Case c = base("strides", dt, 77, 91, 80);
    c.noncontiguous = true;
    m.push_back(with_mask(c, FA_MASK_CAUSAL));
    c.varlen = true;
    c.batch = 3;
    m.push_back(c);
  }
  // Paged KV cache: decode (Lq = 1), speculative (Lq = 4) and chunked prefill.
  for (int64_t ps : {1, 5, 16, 64}) {
    for (fa_dtype dt : kDtypes) {
      Case c = base("paged", dt, 1, 300, 128);
      c.batch = 3;
      c.heads_q = 8;
      c.heads_kv = 2;
      c.page_size = ps;
      m.push_back(c);
      c.seqlen_q = 4;
      m.push_back(with_mask(c, FA_MASK_CAUSAL));
    }
  }
  for (fa_dtype dt : kDtypes) {
    Case c = base("paged prefill", dt, 90, 333, 64);
    c.page_size = 16;
    c.noncontiguous = true;
    m.push_back(with_mask(c, FA_MASK_CAUSAL));
    m.push_back(with_mask(c, FA_MASK_SLIDING_WINDOW, 40, 0));
  }
  // Decode over a long contiguous cache (split across threads).
  for (fa_dtype dt : kDtypes) {
    Case c = base("decode", dt, 1, quick ? 4099 : 20000, 128);
    c.batch = 1;
    c.heads_q = 8;
    c.heads_kv = 1;
    m.push_back(c);
  }
  // Without LSE.
  for (fa_dtype dt : kDtypes) {
    Case c = base("no lse", dt, 65, 65, 96);
    c.with_lse = false;
    m.push_back(with_mask(c, FA_MASK_CAUSAL));
  }
  for (const Case& c : mask_option_cases(quick)) m.push_back(c);
  return m;
}

namespace {

// Shapes that cross many 128 x 64 tiles of the GPU kernels, with ragged
// edges on both axes, for every feature the CUDA path implements.
std::vector<Case> gpu_multi_tile_cases(bool quick) {
  std::vector<Case> m;
  for (fa_dtype dt : {FA_DTYPE_FLOAT16, FA_DTYPE_BFLOAT16}) {
    for (int64_t d : {64, 128}) {
      m.push_back(base("tiles", dt, 1023, 1024, d));
      m.push_back(with_mask(base("tiles", dt, 1023, 1024, d), FA_MASK_CAUSAL));
    }
    m.push_back(with_mask(base("tiles", dt, 900, 2100, 96), FA_MASK_SLIDING_WINDOW, 256, 0));
    m.push_back(with_mask(base("tiles", dt, 2100, 900, 80), FA_MASK_CAUSAL));  // empty rows
    Case cap = base("tiles softcap", dt, 500, 700, 128);
    cap.softcap = 30.0f;
    m.push_back(with_mask(cap, FA_MASK_CAUSAL));
    // D = 64's softcap kernels take other key tiles than its plain ones.
    Case cap64 = base("tiles softcap", dt, 600, 900, 64);
    cap64.softcap = 20.0f;
    m.push_back(cap64);
    Case wide = base("tiles", dt, 777, 1500, 256);
    wide.heads_q = 4;
    wide.heads_kv = 1;
    m.push_back(wide);
    // Many (head, sequence) pairs: the sm90 kernels' persistent blocks take
    // them in sections (8 heads here on a 132-SM GPU), the last one partial.
    Case sections = base("tiles sections", dt, 1000, 1000, 128);
    sections.batch = 3;
    sections.heads_q = 12;
    sections.heads_kv = 4;
    m.push_back(dt == FA_DTYPE_FLOAT16 ? sections : with_mask(sections, FA_MASK_CAUSAL));
    Case decode = base("tiles decode", dt, 1, 5000, 128);
    decode.heads_q = 8;
    m.push_back(decode);
    Case var = base("tiles varlen", dt, 700, 900, 128);
    var.batch = 7;
    var.varlen = true;
    m.push_back(with_mask(var, FA_MASK_CAUSAL));
    Case strided = base("tiles strided", dt, 333, 555, 64);
    strided.noncontiguous = true;
    m.push_back(with_mask(strided, FA_MASK_SLIDING_WINDOW, 100, 20));
    // D = 64 where rows see 1024 keys or more on average: on sm90 its
    // 192-row tiles (three consumer warpgroups), under each mask kind.
    m.push_back(with_mask(base("tiles 192-row", dt, 700, 2500, 64), FA_MASK_CAUSAL));
    m.push_back(with_mask(base("tiles 192-row", dt, 2100, 2100, 64), FA_MASK_CAUSAL));
    m.push_back(with_mask(base("tiles 192-row", dt, 1500, 2600, 64), FA_MASK_SLIDING_WINDOW, 1100, 0));
    // Rows 0-99 see no key.
    m.push_back(with_mask(base("tiles 192-row", dt, 3000, 2900, 64), FA_MASK_CAUSAL));
    Case var64 = base("tiles 192-row varlen", dt, 700, 2500, 64);
    var64.batch = 4;
    var64.varlen = true;
    m.push_back(with_mask(var64, FA_MASK_CAUSAL));
    Case docs64 = with_mask(base("tiles 192-row documents", dt, 1100, 2300, 64), FA_MASK_CAUSAL);
    docs64.documents.mean_length = 700;
    docs64.documents.seed = 41;
    m.push_back(docs64);
    Case strided64 = base("tiles 192-row strided", dt, 1000, 1500, 64);
    strided64.noncontiguous = true;
    strided64.heads_q = 6;
    strided64.heads_kv = 1;
    m.push_back(strided64);
  }
  if (!quick) {
    Case big = base("large", FA_DTYPE_FLOAT16, 4224, 4224, 128);
    big.batch = 1;
    big.heads_q = 4;
    big.heads_kv = 1;
    m.push_back(big);
  }
  return m;
}

}  // namespace

bool backend_runs(const Case& c, fa_backend backend) {
  if (backend != FA_BACKEND_CUDA) return true;
  // The CUDA kernels' query tiles are 128 rows, each inside one block row.
  const bool block_ok = c.block_mask.kind == BlockMaskKind::kNone || c.block_mask.block_q >= 128;
  return c.dtype != FA_DTYPE_FLOAT32 && c.page_size == 0 && block_ok;
}

std::vector<Case> matrix_for(fa_backend backend, bool quick) {
  std::vector<Case> m;
  for (const Case& c : correctness_matrix(quick && backend != FA_BACKEND_CUDA)) {
    if (backend_runs(c, backend)) m.push_back(c);
  }
  if (backend == FA_BACKEND_CUDA) {
    for (const Case& c : gpu_multi_tile_cases(quick)) m.push_back(c);
  }
  return m;
}

}  // namespace fastattn::check
