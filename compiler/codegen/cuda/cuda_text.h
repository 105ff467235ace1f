#pragma once
// What the two CUDA emitters write alike (cuda_emitter.cpp: one kernel per statement list;
// cuda_persistent.cpp: a whole loop stage as one cooperative kernel): indented lines, column
// expressions, one element's instructions and stores, and a reduction's accumulators. Internal
// to compiler/codegen/cuda.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "compiler/kernel/kernel.h"

namespace cellfuse::cuda_codegen {

inline std::string str(std::int64_t v) { return std::to_string(v); }

// The column expression `j` shifted by `offset`: "j" or "j + offset".
inline std::string column(std::int64_t offset, const std::string& j) { return offset == 0 ? j : j + " + " + str(offset); }

// Source text written a line at a time, indented two spaces per level.
class SourceText {
 protected:
  void line(const std::string& text) {
    src_.append(static_cast<std::size_t>(indent_) * 2, ' ');
    src_ += text;
    src_ += '\n';
  }

  int indent_ = 0;
  std::string src_;
};

// Element expressions of a buffer: `load(b, col)` reads buffer b at column expression col,
// `store(b, col)` is the lvalue written there.
struct ElementAccess {
  std::function<std::string(int, const std::string&)> load;
  std::function<std::string(int, const std::string&)> store;
};

// One element of `loop` at column j: "const T vI = <expr>;" for every instruction, then its
// stores. Returns each instruction's name (vI).
std::vector<std::string> emit_element(const std::function<void(const std::string&)>& line, const kernel::Loop& loop,
                                      DType dtype, const ElementAccess& access);

// "T accR = <start>;" for every reduction of `loop` (`sum_start` is how a sum's 0 is written),
// and the statements folding one element's values `v` into them.
void declare_accumulators(const std::function<void(const std::string&)>& line, const kernel::Loop& loop, DType dtype,
                          const std::string& sum_start);
void fold_accumulators(const std::function<void(const std::string&)>& line, const kernel::Loop& loop,
                       const std::vector<std::string>& v, DType dtype);

}  // namespace cellfuse::cuda_codegen
