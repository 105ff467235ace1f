#pragma once
// The argument check every compiled backend makes before it runs a sequence: the dtype, the
// counts, and every tensor's shape against the cell it compiled for batch size `batch`.
#include <cstdint>
#include <string_view>

#include "compiler/ir/graph.h"
#include "runtime/reference/interpreter.h"

namespace cellfuse {

// Returns the sequence length. Throws Error prefixed with `backend` ("CPU backend") that names
// the leaf and both shapes.
template <class T>
std::int64_t check_sequence_args(const Cell& cell, const SequenceArgs<T>& args, std::int64_t batch,
                                 std::string_view backend);

extern template std::int64_t check_sequence_args(const Cell&, const SequenceArgs<float>&, std::int64_t,
                                                 std::string_view);
extern template std::int64_t check_sequence_args(const Cell&, const SequenceArgs<double>&, std::int64_t,
                                                 std::string_view);

}  // namespace cellfuse
