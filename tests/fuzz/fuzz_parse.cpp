// libFuzzer target for the text form, the verifier and the graph passes.
//
// For every input: parse it. Malformed or invalid text must end in cellfuse::Error (the fuzzer
// reports anything else that escapes, and every crash, leak, hang or sanitizer finding). When it
// parses, the cell must
//   - verify,
//   - print and parse back to a structurally equal cell (the round trip of text.h),
//   - go through optimize() (simplify, CSE, DCE; verifier between stages) and verify again, and
//     survive a print/parse round trip of the optimized cell too,
//   - when small, run one step in the reference interpreter before and after optimize(); for a
//     cell without constants the passes only move exact operations around, so the two runs must
//     agree bit for bit (NaN matches NaN).
// A broken property calls __builtin_trap(), which libFuzzer reports as a crash with the input.
//
//   fuzz_parse -dict=tests/fuzz/cell.dict tests/fuzz/corpus     (see tests/fuzz/README.md)
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "compiler/ir/error.h"
#include "compiler/ir/text.h"
#include "compiler/ir/verifier.h"
#include "compiler/lower.h"
#include "runtime/random_args.h"
#include "runtime/reference/interpreter.h"

namespace {

using cellfuse::Cell;

[[noreturn]] void fail(const char* what, const std::string& text) {
  std::fprintf(stderr, "fuzz_parse: %s\n--- cell ---\n%s\n", what, text.c_str());
  __builtin_trap();
}

// Every value of every node for B=2 must fit in a small budget before we interpret the cell.
bool small_enough(const Cell& cell) {
  constexpr std::int64_t kBudget = std::int64_t{1} << 16;
  std::int64_t total = 0;
  for (const auto& n : cell.graph.nodes()) {
    std::int64_t e = n.shape.elements(2);
    if (e < 0 || e > kBudget) return false;
    total += e;
    if (n.op == cellfuse::OpKind::linear || n.op == cellfuse::OpKind::matmul)
      total += e * cell.graph.node(n.inputs[0]).shape.features();
    if (total > kBudget * 4) return false;
  }
  return true;
}

bool has_constants(const Cell& cell) {
  for (const auto& n : cell.graph.nodes())
    if (n.op == cellfuse::OpKind::constant) return true;
  return false;
}

template <class T>
bool same_values(const std::vector<cellfuse::HostTensor<T>>& a,
                 const std::vector<cellfuse::HostTensor<T>>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].shape != b[i].shape || a[i].data.size() != b[i].data.size()) return false;
    for (std::size_t k = 0; k < a[i].data.size(); ++k) {
      T x = a[i].data[k], y = b[i].data[k];
      if (std::isnan(x) && std::isnan(y)) continue;
      if (x != y) return false;
    }
  }
  return true;
}

template <class T>
void run_both(const Cell& before, const Cell& after, const std::string& text) {
  cellfuse::SequenceArgs<T> args;
  try {
    args = cellfuse::random_sequence_args<T>(before, 2, 2, 7);
  } catch (const cellfuse::Error&) {
    return;
  }
  cellfuse::SequenceResult<T> r0, r1;
  try {
    r0 = cellfuse::interpret_sequence(before, args);
  } catch (const cellfuse::Error&) {
    // A cell the interpreter refuses (no inputs and no states: no batch size) must be refused
    // after optimize() as well.
    try {
      cellfuse::interpret_sequence(after, args);
    } catch (const cellfuse::Error&) {
      return;
    }
    fail("the interpreter refuses the cell but accepts it after optimize()", text);
  }
  r1 = cellfuse::interpret_sequence(after, args);
  if (!has_constants(before) &&
      (!same_values(r0.outputs, r1.outputs) || !same_values(r0.final_states, r1.final_states)))
    fail("optimize() changed the results of a cell without constants", text);
}

void check(std::string_view data) {
  Cell cell;
  try {
    cell = cellfuse::parse_cell(data, "<fuzz>");
  } catch (const cellfuse::Error&) {
    return;  // malformed or invalid text: the expected way to fail
  }
  // What parse_cell hands out is valid and prints back to itself.
  cellfuse::verify(cell);
  std::string text = cellfuse::print_cell(cell);
  Cell back = cellfuse::parse_cell(text, "<printed>");
  if (!cellfuse::structurally_equal(cell, back)) fail("print/parse round trip differs", text);
  if (cellfuse::print_cell(back) != text) fail("printing the re-parsed cell differs", text);

  Cell optimized = cellfuse::optimize(cell);
  cellfuse::verify(optimized);
  std::string optimized_text = cellfuse::print_cell(optimized);
  Cell optimized_back = cellfuse::parse_cell(optimized_text, "<optimized>");
  if (!cellfuse::structurally_equal(optimized, optimized_back))
    fail("print/parse round trip of the optimized cell differs", optimized_text);
  // Roles are the calling convention: the passes keep them exactly.
  if (optimized.inputs.size() != cell.inputs.size() || optimized.states.size() != cell.states.size() ||
      optimized.params.size() != cell.params.size() || optimized.outputs.size() != cell.outputs.size())
    fail("optimize() changed the cell's roles", text);

  if (small_enough(cell) && small_enough(optimized)) {
    if (cell.graph.dtype() == cellfuse::DType::f64)
      run_both<double>(cell, optimized, text);
    else
      run_both<float>(cell, optimized, text);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // Any exception other than a parse error (cellfuse::Error, caught in check) escapes and aborts:
  // an InternalError, std::bad_variant_access or std::out_of_range here is a bug.
  check(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
