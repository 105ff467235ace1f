#include "compiler/lower.h"

#include <chrono>

#include "compiler/ir/text.h"
#include "compiler/ir/verifier.h"
#include "compiler/passes/passes.h"

namespace cellfuse {

Cell optimize(const Cell& cell, std::vector<StageLog>* log, bool text) {
  verify(cell);
  if (log) log->push_back({"input", 0, text ? print_cell(cell) : std::string()});
  Cell current = cell;
  struct Pass {
    const char* name;
    Cell (*run)(const Cell&);
  };
  const Pass passes[] = {{"simplify", simplify},
                         {"cse", eliminate_common_subexpressions},
                         {"dce", eliminate_dead_code}};
  // Each pass can expose work for the others (CSE makes operands equal, which simplify's
  // min(x,x) needs); a few rounds reach the fixed point on any real cell, and the cap only
  // guards against a rule that undoes another.
  for (int round = 0; round < 16; ++round) {
    std::uint64_t before = cell_hash(current);
    std::size_t before_size = current.graph.size();
    for (const Pass& pass : passes) {
      auto start = std::chrono::steady_clock::now();
      current = pass.run(current);
      verify(current);
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      if (log) log->push_back({std::string(pass.name) + " (round " + std::to_string(round + 1) + ")", ms,
                               text ? print_cell(current) : std::string(),
                               std::chrono::duration_cast<std::chrono::nanoseconds>(start.time_since_epoch()).count()});
    }
    if (cell_hash(current) == before && current.graph.size() == before_size) break;
  }
  return current;
}

}  // namespace cellfuse
