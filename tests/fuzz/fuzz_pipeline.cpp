// libFuzzer target for the whole pipeline: cell text -> parse -> verify -> compile() for the CPU
// (forward and training programs, LLVM JIT) -> run two steps at batch 2, forward and BPTT, against
// the f64 reference interpreter (tests/stress/differential.h: the random-cell driver's check,
// tolerances from the cell's depth and its f32 conditioning).
//
// Text that does not parse, and cells a stage refuses with a cellfuse::Error, are fine. A wrong
// result, any other exception, a crash, a hang or a sanitizer report is a bug. Cells are kept
// small (features, nodes) so one input takes well under a second.
//
//   fuzz_pipeline -dict=tests/fuzz/cell.dict tests/fuzz/corpus_pipeline tests/fuzz/seeds
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "compiler/ir/error.h"
#include "compiler/ir/text.h"
#include "differential.h"

namespace {

using namespace cellfuse;

[[noreturn]] void fail(const std::string& what, std::string_view text) {
  std::fprintf(stderr, "fuzz_pipeline: %s\n--- cell ---\n%.*s\n", what.c_str(), static_cast<int>(text.size()), text.data());
  __builtin_trap();
}

bool small(const Cell& cell) {
  if (cell.graph.size() > 96) return false;
  for (const Node& n : cell.graph.nodes()) {
    if (n.shape.features() > 64) return false;
    if (n.shape.rank == 2 && n.shape.dims[0] != Shape::kBatch && n.shape.dims[0] > 64) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  Cell cell;
  try {
    cell = parse_cell(text, "<fuzz>");
  } catch (const Error&) {
    return 0;
  }
  if (!small(cell)) return 0;
  stress::CheckOptions options;
  options.threads = 1;
  options.arg_seed = 11;
  stress::CheckCounts counts;
  const auto failure = stress::check_cpu(cell, {{2, 2}, {1, 2}}, options, counts);
  if (!failure) return 0;
  const std::string& where = failure->where;
  const bool refused = where.ends_with(" error") || where.starts_with("reference");
  if (!refused) fail(where + ": " + failure->detail, text);
  return 0;
}
