#include "bench_command.h"

#include <cmath>
#include <cstdio>
#include <iostream>
#include <new>
#include <stdexcept>

#include "bench_problem.h"
#include "bench_runner.h"
#include "cli_validators.h"
#include "device_choice.h"
#include "device_memory.h"
#include "host_tensor.h"
#include "json_line.h"
#include "library_error.h"
#include "progress.h"
#include "text_table.h"

namespace fastattn::tools {

namespace {

// A command line that parsed but does not describe a valid problem.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The default problems. CPU prefill is the CPU performance target; the GPU
// ones are rows of ANCHORS.md (prefill: hidden 2048, B*L = 16384 tokens;
// decode: the H200 decode row), so the numbers compare with the peers'.
struct problem_defaults {
  fa_dtype dtype;
  int64_t batch, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim;
};
constexpr problem_defaults kCpuPrefill{FA_DTYPE_FLOAT32, 1, 2048, 2048, 8, 8, 128};
constexpr problem_defaults kGpuPrefill{FA_DTYPE_FLOAT16, 8, 2048, 2048, 16, 16, 128};
constexpr problem_defaults kCpuDecode{FA_DTYPE_FLOAT32, 1, 1, 16384, 32, 8, 128};
constexpr problem_defaults kGpuDecode{FA_DTYPE_FLOAT16, 16, 1, 4096, 32, 8, 128};

fa_dtype parse_dtype(const std::string& s) {
  if (s == "fp16") return FA_DTYPE_FLOAT16;
  if (s == "bf16") return FA_DTYPE_BFLOAT16;
  return FA_DTYPE_FLOAT32;
}

bench_problem build_problem(const bench_cli& cli, fa_backend backend) {
  const bool gpu = backend == FA_BACKEND_CUDA;
  const problem_defaults& d = cli.decode ? (gpu ? kGpuDecode : kCpuDecode) : (gpu ? kGpuPrefill : kCpuPrefill);
  bench_problem p;
  p.decode = cli.decode;
  p.dtype = cli.dtype.empty() ? d.dtype : parse_dtype(cli.dtype);
  p.batch = cli.batch > 0 ? cli.batch : d.batch;
  p.head_dim = cli.head_dim > 0 ? cli.head_dim : d.head_dim;
  // In a decode, --seqlen is the cache length: the few new queries are set
  // with --seqlen-q alone.
  const int64_t seqlen_q_fallback = cli.decode ? d.seqlen_q : (cli.seqlen > 0 ? cli.seqlen : d.seqlen_q);
  p.seqlen_q = cli.seqlen_q > 0 ? cli.seqlen_q : seqlen_q_fallback;
  p.seqlen_k = cli.seqlen_k > 0 ? cli.seqlen_k : (cli.seqlen > 0 ? cli.seqlen : d.seqlen_k);
  p.heads_q = cli.heads_q > 0 ? cli.heads_q : d.heads_q;
  p.heads_kv = cli.heads_kv > 0 ? cli.heads_kv : (cli.heads_q > 0 ? p.heads_q : d.heads_kv);
  if (p.heads_q % p.heads_kv != 0) {
    throw usage_error("--heads-q (" + std::to_string(p.heads_q) + ") must be a multiple of --heads-kv (" +
                      std::to_string(p.heads_kv) + ")");
  }
  const std::string mask = cli.mask.empty() ? (cli.window_given ? "window" : "none") : cli.mask;
  const auto needs = [&mask](bool given, const char* flags, const char* masks) {
    if (given) throw usage_error(std::string(flags) + " need --mask " + masks + " (got --mask " + mask + ")");
  };
  needs(cli.window_given && mask != "window", "--window-left/--window-right", "window");
  needs(cli.prefix_len >= 0 && mask != "prefix-lm", "--prefix-len", "prefix-lm");
  needs((cli.doc_len > 0 || cli.doc_bidirectional) && mask != "documents", "--doc-len/--doc-bidirectional",
        "documents");
  needs((cli.density >= 0 || cli.block > 0) && mask != "block-sparse" && mask != "dense", "--density/--block",
        "block-sparse or dense");
  if (mask == "causal") p.mask = FA_MASK_CAUSAL;
  if (mask == "window") p.mask = FA_MASK_SLIDING_WINDOW;
  p.window_left = cli.window_left < 0 ? -1 : cli.window_left;
  p.window_right = cli.window_right < 0 ? -1 : cli.window_right;
  if (mask == "window" && !cli.window_given) {
    // A bare --mask window is the usual causal sliding window (Mistral's,
    // and the mask benchmark's): 1024 keys behind the diagonal.
    p.window_left = 1024;
    p.window_right = 0;
  }
  if (mask == "prefix-lm") {
    p.mask = FA_MASK_PREFIX_LM;
    p.prefix_len = cli.prefix_len >= 0 ? cli.prefix_len : p.seqlen_k / 4;
  }
  // Chunked local attention (Llama 4): causal within chunks; --chunk-size
  // also refines any other mask.
  if (mask == "chunked") p.mask = FA_MASK_CAUSAL;
  p.chunk_size = cli.chunk_size > 0 ? cli.chunk_size : (mask == "chunked" ? 1024 : 0);
  if (mask == "documents") {
    p.mask = cli.doc_bidirectional ? FA_MASK_NONE : FA_MASK_CAUSAL;
    p.mask_source = bench_problem::source::documents;
    p.doc_len = cli.doc_len > 0 ? cli.doc_len : 1024;
    if (p.decode) throw usage_error("--mask documents (segment ids) needs a padded batch, not --decode");
  }
  if (mask == "block-sparse" || mask == "dense") {
    p.mask_source = mask == "dense" ? bench_problem::source::dense : bench_problem::source::block_sparse;
    p.density = cli.density >= 0 ? cli.density : (mask == "dense" ? 0.5 : 0.1);
    p.block = cli.block > 0 ? cli.block : 128;
    if (p.decode) throw usage_error("--mask " + mask + " (a block mask) needs a padded batch, not --decode");
  }
  p.mask_seed = cli.seed;
  p.softcap = cli.softcap;
  p.page_size = cli.page_size;
  if (p.decode && p.seqlen_q > p.seqlen_k) {
    throw usage_error("--seqlen-q (" + std::to_string(p.seqlen_q) + ") must not exceed the cache length --seqlen-k (" +
                      std::to_string(p.seqlen_k) + ") with --decode");
  }
  return p;
}

std::string device_target(fa_backend backend) {
  if (backend == FA_BACKEND_CUDA) return gpu_name();
  if (backend == FA_BACKEND_CPU_REFERENCE) return "float64";
  return fa_cpu_target();
}

std::string heads_list(const std::vector<int64_t>& heads) {
  std::string s;
  for (size_t i = 0; i < heads.size(); ++i) s += (i == 0 ? "" : " and ") + std::to_string(heads[i]);
  return s;
}

// Bytes of mask state the run holds beside Q, K and V: the segment ids
// (inputs) or the compressed block mask; built-in kinds hold none.
std::string mask_state_line(const bench_problem& p, const bench_result& r) {
  const double dense_bytes = static_cast<double>(p.seqlen_q) * static_cast<double>(p.seqlen_k);
  std::string s = "mask state: ";
  if (r.block_mask) {
    const fa_block_mask_info& i = r.block_mask_info;
    s += strprintf("block mask %llu bytes on the %s (%lld empty, %lld full, %lld partial blocks of %lldx%lld), "
                   "built in %.3f ms",
                   static_cast<unsigned long long>(i.state_bytes), i.on_device ? "GPU" : "host",
                   static_cast<long long>(i.empty_blocks), static_cast<long long>(i.full_blocks),
                   static_cast<long long>(i.partial_blocks), static_cast<long long>(i.block_q),
                   static_cast<long long>(i.block_k), r.block_mask_create_ms);
  } else if (r.segment_id_bytes > 0) {
    s += strprintf("0 bytes; segment ids %lld bytes (int32 inputs, [B, Lq] + [B, Lk])",
                   static_cast<long long>(r.segment_id_bytes));
  } else {
    s += "0 bytes (built-in kind)";
  }
  return s + strprintf("; a dense bool mask would be Lq*Lk = %.0f bytes per (batch, head) broadcast\n", dense_bytes);
}

void print_table(const bench_problem& p, int64_t pairs, const bench_cli& cli, fa_backend backend,
                 const bench_result& r) {
  const bool gpu = backend == FA_BACKEND_CUDA;
  const double seconds = r.median_ms * 1e-3;
  std::string rate_header, rate;
  if (p.decode) {
    rate_header = "GB/s";
    rate = strprintf("%.1f", kv_bytes(p) / seconds * 1e-9);
  } else if (gpu) {
    rate_header = "TFLOP/s";
    rate = strprintf("%.1f", flops(p, pairs) / seconds * 1e-12);
  } else {
    rate_header = "GFLOP/s";
    rate = strprintf("%.1f", flops(p, pairs) / seconds * 1e-9);
  }
  text_table table({"problem", "device", "median ms", "min ms", rate_header, "max err"}, 2);
  table.add_row({describe(p), device_label(backend), strprintf("%.3f", r.median_ms), strprintf("%.3f", r.min_ms),
                 rate, strprintf("%.2e", r.max_abs_error)});
  std::cout << table.str() << "\n";
  if (p.decode) {
    std::cout << byte_formula(p) << strprintf(" = %.4g GB per call; GB/s = bytes / median time\n", kv_bytes(p) * 1e-9);
  } else {
    std::cout << flop_formula(p, pairs)
              << strprintf(" = %.4g GFLOP per call; rate = FLOPs / median time\n", flops(p, pairs) * 1e-9);
  }
  std::cout << mask_state_line(p, r);
  std::cout << "time: median and min of " << cli.repeats << " calls after " << cli.warmup << " warm-up calls, "
            << (gpu ? "CUDA events, L2 flushed before each call" : "steady_clock around each call") << "\n";
  if (!gpu) std::cout << "threads: " << (cli.threads == 0 ? std::string("all available") : std::to_string(cli.threads)) << "\n";
  const std::string rows = r.error_rows == 1 ? "the last query row" : "the last " + std::to_string(r.error_rows) + " query rows";
  std::cout << "max err: max |out - float64 reference| over " << rows << " of batch 0, query heads "
            << heads_list(r.error_heads) << "\n";
}

void print_json(const bench_problem& p, int64_t pairs, const bench_cli& cli, fa_backend backend,
                const bench_result& r) {
  const double seconds = r.median_ms * 1e-3;
  json_line j;
  j.text("command", "bench").text("version", fa_version_string()).text("kind", p.decode ? "decode" : "prefill");
  j.text("dtype", dtype_name(p.dtype)).integer("batch", p.batch).integer("seqlen_q", p.seqlen_q);
  j.integer("seqlen_k", p.seqlen_k).integer("heads_q", p.heads_q).integer("heads_kv", p.heads_kv);
  j.integer("head_dim", p.head_dim).text("mask", mask_label(p));
  j.integer("window_left", p.window_left).integer("window_right", p.window_right).number("softcap", p.softcap);
  j.integer("prefix_len", p.prefix_len).integer("chunk_size", p.chunk_size).integer("doc_len", p.doc_len);
  if (r.block_mask) j.number("density", p.density).integer("block", p.block);
  if (p.decode) j.integer("page_size", p.page_size);
  j.text("device", backend == FA_BACKEND_CUDA ? "cuda" : backend == FA_BACKEND_CPU ? "cpu" : "cpu-reference");
  j.text("target", device_target(backend)).integer("threads", cli.threads);
  j.integer("warmup", cli.warmup).integer("repeats", cli.repeats).integer("seed", static_cast<int64_t>(cli.seed));
  j.number("median_ms", r.median_ms).number("min_ms", r.min_ms);
  if (p.decode) {
    j.number("bytes", kv_bytes(p)).number("gbps", kv_bytes(p) / seconds * 1e-9);
  } else {
    j.number("flops", flops(p, pairs)).integer("allowed_pairs", pairs);
    j.number("tflops", flops(p, pairs) / seconds * 1e-12).number("gflops", flops(p, pairs) / seconds * 1e-9);
  }
  j.integer("segment_id_bytes", r.segment_id_bytes);
  j.integer("mask_state_bytes", r.block_mask ? static_cast<int64_t>(r.block_mask_info.state_bytes) : 0);
  j.number("dense_mask_bytes", static_cast<double>(p.seqlen_q) * static_cast<double>(p.seqlen_k));
  if (r.block_mask) {
    j.integer("empty_blocks", r.block_mask_info.empty_blocks).integer("full_blocks", r.block_mask_info.full_blocks);
    j.integer("partial_blocks", r.block_mask_info.partial_blocks).number("mask_create_ms", r.block_mask_create_ms);
  }
  j.number("max_abs_error", r.max_abs_error).integer("error_rows", r.error_rows);
  std::cout << j.str() << std::endl;
}

}  // namespace

CLI::App* add_bench_command(CLI::App& app, bench_cli& cli) {
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "Time one attention problem and check a sample of its output against the float64 reference.\n"
      "Without flags: fp32 B=1 H=8 D=128 L=2048 on the CPU (fp16 B=8 H=16 D=128 L=2048 on a GPU).");
  cmd->add_option("-b,--batch", cli.batch, "Batch size")->check(integer_at_least(1));
  cmd->add_option("--seqlen", cli.seqlen, "Query and key length (with --decode: the cache length)")
      ->check(integer_at_least(1));
  cmd->add_option("--seqlen-q", cli.seqlen_q, "Query length (decode default 1)")->check(integer_at_least(1));
  cmd->add_option("--seqlen-k", cli.seqlen_k, "Key length (decode: the cache length)")->check(integer_at_least(1));
  cmd->add_option("--heads-q", cli.heads_q, "Query heads")->check(integer_at_least(1));
  cmd->add_option("--heads-kv", cli.heads_kv, "KV heads (default: --heads-q); --heads-q must be a multiple")
      ->check(integer_at_least(1));
  cmd->add_option("--head-dim", cli.head_dim, "Head dimension")->check(head_dim_validator());
  cmd->add_option("--dtype", cli.dtype, "Element type (default fp32 on the CPU, fp16 on a GPU)")
      ->check(CLI::IsMember({"fp32", "fp16", "bf16"}));
  cmd->add_option("--mask", cli.mask,
                  "Attention mask (bottom-right aligned): none, causal, window (--window-left/right, "
                  "default 1024 and 0), prefix-lm "
                  "(--prefix-len), chunked (causal in --chunk-size chunks), documents (--doc-len; causal within "
                  "each unless --doc-bidirectional), block-sparse (random FULL blocks at --density, diagonal "
                  "always FULL) or dense (random pairs at --density); the last two build an fa_block_mask on the "
                  "run's side (host for cpu, GPU for cuda)")
      ->check(CLI::IsMember({"none", "causal", "window", "prefix-lm", "chunked", "documents", "block-sparse", "dense"}));
  const auto window_given = [&cli](const std::string&) { cli.window_given = true; };
  cmd->add_option("--window-left", cli.window_left, "Sliding window: keys allowed left of the diagonal (-1 = all)")
      ->each(window_given);
  cmd->add_option("--window-right", cli.window_right, "Sliding window: keys allowed right of the diagonal (-1 = all)")
      ->each(window_given);
  cmd->add_option("--prefix-len", cli.prefix_len, "prefix-lm: keys every query sees (default Lk/4)")
      ->check(integer_at_least(0));
  cmd->add_option("--chunk-size", cli.chunk_size,
                  "Chunked local attention: chunk length (default 1024 with --mask chunked; refines any mask)")
      ->check(integer_at_least(1));
  cmd->add_option("--doc-len", cli.doc_len, "documents: tokens per document, the last may be shorter (default 1024)")
      ->check(integer_at_least(1));
  cmd->add_flag("--doc-bidirectional", cli.doc_bidirectional, "documents: full attention within each document");
  cmd->add_option("--density", cli.density,
                  "block-sparse: probability of a FULL block (default 0.1); dense: of an allowed pair (default 0.5)")
      ->check(unit_interval());
  cmd->add_option("--block", cli.block, "block-sparse, dense: block size of the block mask (default 128)")
      ->check(CLI::IsMember({int64_t{64}, int64_t{128}, int64_t{256}}));
  cmd->add_option("--softcap", cli.softcap, "Score soft-capping, 0 = off")->check(non_negative_float());
  cmd->add_option("--device", cli.device, "Backend (auto: cuda when available, else cpu)")
      ->capture_default_str()
      ->check(CLI::IsMember(kDeviceNames));
  cmd->add_option("--threads", cli.threads, "CPU worker threads, 0 = all available")
      ->capture_default_str()
      ->check(integer_at_least(0));
  cmd->add_option("--repeats", cli.repeats, "Timed calls (the median is reported)")
      ->capture_default_str()->check(integer_at_least(1));
  cmd->add_option("--warmup", cli.warmup, "Untimed calls before timing")
      ->capture_default_str()->check(integer_at_least(0));
  cmd->add_option("--seed", cli.seed, "Seed of the random normal inputs")
      ->capture_default_str();
  CLI::Option* decode = cmd->add_flag(
      "--decode", cli.decode,
      "Decode over a paged KV cache (default: Lq=1, Lk=16384, Hq=32, Hkv=8 on the CPU; B=16, Lk=4096, fp16 on a "
      "GPU); reports GB/s of K+V read");
  cmd->add_option("--page-size", cli.page_size, "Decode: KV cache page size, 0 = contiguous cache")
      ->capture_default_str()
      ->check(integer_at_least(0))
      ->needs(decode);
  cmd->add_flag("--json", cli.json, "Print one JSON line per problem instead of the table");
  return cmd;
}

int run_bench_command(const bench_cli& cli) {
  try {
    const fa_backend backend = resolve_device(cli.device);
    const bench_problem problem = build_problem(cli, backend);
    progress_line progress(!cli.json);
    progress.update("bench: building the mask");
    const mask_inputs mask = make_mask_inputs(problem);
    const int64_t pairs = problem.decode ? 0 : allowed_pairs(problem, mask);
    bench_settings settings;
    settings.backend = backend;
    settings.num_threads = cli.threads;
    settings.warmup = cli.warmup;
    settings.repeats = cli.repeats;
    settings.seed = cli.seed;
    settings.on_progress = [&progress](const std::string& text) { progress.update(text); };
    const bench_result result = run_benchmark(problem, mask, settings);
    progress.clear();
    if (cli.json) {
      print_json(problem, pairs, cli, backend, result);
    } else {
      print_table(problem, pairs, cli, backend, result);
    }
    if (std::isnan(result.max_abs_error)) {
      std::cerr << "fastattn bench: the sampled output has NaN or unwritten elements\n";
      return 1;
    }
    return 0;
  } catch (const usage_error& e) {
    std::cerr << "fastattn bench: " << e.what() << "\n";
    return 2;
  } catch (const std::length_error&) {
    std::cerr << "fastattn bench: out of host memory for this problem\n";
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "fastattn bench: out of host memory for this problem\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "fastattn bench: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace fastattn::tools
