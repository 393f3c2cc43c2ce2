// The mask options of fastattn.h beyond windows: prefix-LM, chunked local
// attention, documents (segment ids) and block masks, each alone on shapes
// with ragged tiles and Lq < Lk, Lq > Lk, then combined with each other and
// with GQA, varlen, strides and softcap; some empty whole rows. float16 and
// bfloat16, the dtypes every backend runs.
#include <vector>

#include "check/case_builders.h"
#include "check/harness.h"

namespace fastattn::check {
namespace {

constexpr fa_dtype kHalfDtypes[] = {FA_DTYPE_FLOAT16, FA_DTYPE_BFLOAT16};

Case prefix_lm(Case c, int64_t prefix_len) {
  c.mask = FA_MASK_PREFIX_LM;
  c.prefix_len = prefix_len;
  return c;
}

Case chunked(Case c, int64_t chunk_size) {
  c.chunk_size = chunk_size;
  return c;
}

Case with_documents(Case c, int64_t mean_length, uint64_t seed, bool unmatched_queries = false) {
  c.documents.mean_length = mean_length;
  c.documents.seed = seed;
  c.documents.unmatched_queries = unmatched_queries;
  return c;
}

Case with_block_mask(Case c, BlockMaskKind kind, double density, int64_t block_q, int64_t block_k,
                     uint64_t seed) {
  c.block_mask.kind = kind;
  c.block_mask.density = density;
  c.block_mask.block_q = block_q;
  c.block_mask.block_k = block_k;
  c.block_mask.seed = seed;
  return c;
}

Case per(Case c, bool batch, bool head) {
  c.block_mask.per_batch = batch;
  c.block_mask.per_head = head;
  return c;
}

Case one_sequence(Case c) {
  c.batch = 1;
  return c;
}

}  // namespace

std::vector<Case> mask_option_cases(bool quick) {
  using K = BlockMaskKind;
  std::vector<Case> m;
  for (fa_dtype dt : kHalfDtypes) {
    // Prefix-LM: the prefix ends inside a key tile; with Lq > Lk the rows
    // before the first key see the prefix only.
    m.push_back(prefix_lm(base("prefix-lm", dt, 77, 131, 64), 40));
    m.push_back(prefix_lm(base("prefix-lm", dt, 300, 300, 128), 100));
    m.push_back(prefix_lm(base("prefix-lm", dt, 250, 150, 64), 20));
    // Chunks: Llama 4's causal chunks over many key tiles, and bidirectional ones.
    m.push_back(chunked(with_mask(one_sequence(base("chunk", dt, 513, 2049, 128)), FA_MASK_CAUSAL), 64));
    m.push_back(chunked(base("chunk", dt, 300, 300, 64), 100));
    // Documents: causal and bidirectional, Lq < Lk and Lq > Lk, documents
    // whose queries match no key (empty rows), and varlen batches (empty
    // sequences included).
    m.push_back(with_documents(with_mask(base("docs", dt, 300, 300, 64), FA_MASK_CAUSAL), 40, 1));
    m.push_back(with_documents(base("docs", dt, 77, 131, 128), 20, 2));
    m.push_back(with_documents(with_mask(base("docs", dt, 250, 150, 64), FA_MASK_CAUSAL), 30, 3));
    m.push_back(with_documents(with_mask(base("docs", dt, 200, 200, 64), FA_MASK_CAUSAL), 25, 4, true));
    Case var = with_documents(with_mask(base("docs varlen", dt, 177, 190, 64), FA_MASK_CAUSAL), 30, 5);
    var.batch = 5;
    var.varlen = true;
    m.push_back(var);
    // Block masks from both sources, every block size, broadcast or not.
    m.push_back(with_block_mask(base("block mask", dt, 300, 300, 64), K::kBlocks, 0.5, 128, 128, 1));
    m.push_back(per(with_block_mask(one_sequence(base("block mask", dt, 513, 2049, 128)), K::kBlocks, 0.3, 64,
                                    128, 2),
                    false, true));
    m.push_back(per(with_block_mask(base("block mask", dt, 77, 131, 64), K::kBlocks, 0.6, 64, 64, 3), true, false));
    // 64-key blocks: the key tiles of the block-mask kernels must divide them
    // (64 keys at D = 64 and D = 128 on the sm80 path).
    m.push_back(with_block_mask(base("block mask 64-key blocks", dt, 400, 700, 64), K::kBlocks, 0.5, 128, 64, 24));
    m.push_back(with_mask(with_block_mask(base("block mask 64-key blocks", dt, 333, 600, 128), K::kDense, 0.4, 128,
                                          64, 25),
                          FA_MASK_CAUSAL));
    m.push_back(per(with_block_mask(base("block mask", dt, 300, 300, 128), K::kDense, 0.5, 128, 128, 4), true,
                    true));
    m.push_back(per(with_block_mask(one_sequence(base("block mask", dt, 513, 2049, 64)), K::kStaircase, 0, 256,
                                    128, 5),
                    false, true));
    Case cap = with_block_mask(base("block mask softcap", dt, 200, 333, 128), K::kBlocks, 0.5, 128, 128, 6);
    cap.softcap = 5.0f;
    m.push_back(with_mask(cap, FA_MASK_CAUSAL));
  }
  // Single-dtype variants.
  constexpr fa_dtype h = FA_DTYPE_FLOAT16, bf = FA_DTYPE_BFLOAT16;
  m.push_back(prefix_lm(base("prefix-lm", h, 100, 90, 64), 500));  // longer than the keys: bidirectional
  m.push_back(chunked(prefix_lm(base("prefix-lm chunk", bf, 113, 203, 256), 50), 64));
  m.push_back(chunked(with_mask(base("chunk", h, 300, 100, 64), FA_MASK_CAUSAL), 32));  // Lq > Lk
  m.push_back(chunked(with_mask(base("chunk", bf, 77, 131, 64), FA_MASK_CAUSAL), 1));   // the diagonal only
  m.push_back(chunked(prefix_lm(base("chunk prefix-lm", h, 300, 300, 64), 64), 100));
  Case gqa = with_documents(with_mask(base("docs gqa", bf, 97, 131, 64), FA_MASK_SLIDING_WINDOW, 17, 5), 12, 6);
  gqa.heads_q = 6;
  m.push_back(gqa);
  Case strided = with_documents(with_mask(base("docs strided varlen", h, 150, 170, 80), FA_MASK_SLIDING_WINDOW,
                                          64, 0),
                                16, 7);
  strided.batch = 3;
  strided.varlen = true;
  strided.noncontiguous = true;
  m.push_back(strided);
  // Empty rows from a block mask: one row of blocks all false.
  Case empty = with_block_mask(base("block mask", h, 300, 300, 64), K::kBlocks, 0.7, 128, 128, 7);
  empty.block_mask.empty_block_row = true;
  m.push_back(empty);
  empty = per(with_block_mask(base("block mask", bf, 250, 190, 64), K::kDense, 0.5, 64, 128, 8), false, true);
  empty.block_mask.empty_block_row = true;
  m.push_back(with_mask(empty, FA_MASK_CAUSAL));
  m.push_back(with_mask(with_block_mask(base("block mask", h, 250, 150, 64), K::kDense, 0.4, 128, 128, 23),
                        FA_MASK_CAUSAL));  // Lq > Lk
  m.push_back(with_block_mask(base("block mask d256", h, 200, 300, 256), K::kBlocks, 0.5, 128, 128, 10));
  m.push_back(with_block_mask(base("block mask d80", bf, 300, 300, 80), K::kDense, 0.5, 128, 128, 11));
  // Combinations: everything narrows the same row.
  Case all = with_block_mask(base("block mask docs", bf, 300, 300, 64), K::kStaircase, 0, 128, 128, 12);
  m.push_back(with_documents(with_mask(all, FA_MASK_CAUSAL), 50, 8));
  Case gqa_prefix = per(with_block_mask(base("block mask gqa prefix-lm", bf, 197, 400, 128), K::kBlocks, 0.5, 128,
                                        256, 13),
                        false, true);
  gqa_prefix.heads_q = 8;
  m.push_back(prefix_lm(gqa_prefix, 60));
  m.push_back(chunked(with_mask(with_block_mask(base("block mask chunk", h, 600, 600, 64), K::kDense, 0.5, 128,
                                                128, 14),
                                FA_MASK_CAUSAL),
                      200));
  m.push_back(with_mask(with_block_mask(base("block mask window", bf, 400, 400, 128), K::kBlocks, 0.6, 256, 128,
                                        15),
                        FA_MASK_SLIDING_WINDOW, 100, 0));
  Case bm_strided = with_block_mask(base("block mask strided", h, 333, 555, 64), K::kBlocks, 0.5, 128, 128, 16);
  bm_strided.noncontiguous = true;
  bm_strided.with_lse = false;
  m.push_back(bm_strided);
  // A paged cache takes prefix-LM and chunks (documents and block masks
  // are refused there).
  Case paged = chunked(prefix_lm(base("paged prefix-lm chunk", h, 90, 333, 64), 30), 128);
  paged.page_size = 16;
  m.push_back(paged);
  // Multiple key tiles per query tile at every option, on lengths that are
  // not multiples of the tiles.
  m.push_back(chunked(with_mask(base("chunk", bf, 1000, 1000, 64), FA_MASK_SLIDING_WINDOW, 256, 0), 300));
  m.push_back(chunked(with_documents(with_mask(base("docs chunk", h, 1000, 1000, 64), FA_MASK_CAUSAL), 100, 9),
                      256));
  m.push_back(with_block_mask(one_sequence(base("block mask", h, 1000, 1000, 64)), K::kDense, 0.5, 256, 256, 17));
  if (!quick) {
    for (fa_dtype dt : kHalfDtypes) {
      Case docs = with_documents(with_mask(base("large docs", dt, 2048, 2048, 128), FA_MASK_CAUSAL), 256, 10);
      docs.batch = 1;
      docs.heads_q = 2;
      docs.heads_kv = 1;
      docs.documents.fixed_length = true;
      m.push_back(docs);
      Case sparse = per(with_block_mask(one_sequence(base("large block mask", dt, 2048, 2048, 128)), K::kBlocks,
                                        0.1, 128, 128, 18),
                        false, true);
      sparse.heads_q = 2;
      sparse.heads_kv = 1;
      m.push_back(sparse);
    }
  }
  // A forced sm90 path refuses block masks whose block_k its key tiles (128
  // keys, 80 at D = 256) do not divide.
  for (Case& c : m) {
    if (c.block_mask.kind != K::kNone) c.forced_path_may_refuse = true;
  }
  return m;
}

}  // namespace fastattn::check
