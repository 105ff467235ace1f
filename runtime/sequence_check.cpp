#include "runtime/sequence_check.h"

#include <string>
#include <type_traits>
#include <vector>

#include "compiler/ir/error.h"

namespace cellfuse {

template <class T>
std::int64_t check_sequence_args(const Cell& cell, const SequenceArgs<T>& args, std::int64_t batch,
                                 std::string_view backend) {
  auto fail = [&](const std::string& m) { throw Error(std::string(backend) + ": " + m); };
  if ((cell.graph.dtype() == DType::f32) != std::is_same_v<T, float>)
    fail("the cell is " + std::string(dtype_name(cell.graph.dtype())) + " but the arguments are " +
         (std::is_same_v<T, float> ? "f32" : "f64"));
  if (args.inputs.size() != cell.inputs.size())
    fail("the cell has " + std::to_string(cell.inputs.size()) + " input(s) but " +
         std::to_string(args.inputs.size()) + " were given");
  if (args.states.size() != cell.states.size())
    fail("the cell has " + std::to_string(cell.states.size()) + " state(s) but " +
         std::to_string(args.states.size()) + " were given");
  if (args.params.size() != cell.params.size())
    fail("the cell has " + std::to_string(cell.params.size()) + " param(s) but " +
         std::to_string(args.params.size()) + " were given");
  std::int64_t steps = args.steps;
  if (!args.inputs.empty() && !args.inputs[0].shape.empty()) steps = args.inputs[0].shape[0];
  if (steps < 0) fail("cannot tell the sequence length: give steps or per-step inputs");
  auto expect = [&](ValueId leaf, const HostTensor<T>& t, std::vector<std::int64_t> want) {
    std::int64_t n = 1;
    for (auto d : want) n *= d;
    if (t.shape != want || static_cast<std::int64_t>(t.data.size()) != n)
      fail(std::string(op_name(cell.graph.node(leaf).op)) + " %" + std::string(cell.leaf_name(leaf)) +
           ": expected a tensor of shape " + shape_string(want) + ", got " + shape_string(t.shape) +
           " (compiled for batch " + std::to_string(batch) + ")");
  };
  for (std::size_t i = 0; i < cell.inputs.size(); ++i)
    expect(cell.inputs[i], args.inputs[i], {steps, batch, cell.graph.node(cell.inputs[i]).shape.features()});
  for (std::size_t i = 0; i < cell.states.size(); ++i)
    expect(cell.states[i], args.states[i], {batch, cell.graph.node(cell.states[i]).shape.features()});
  for (std::size_t i = 0; i < cell.params.size(); ++i) {
    const Shape& s = cell.graph.node(cell.params[i]).shape;
    expect(cell.params[i], args.params[i],
           s.rank == 1 ? std::vector<std::int64_t>{s.dims[0]} : std::vector<std::int64_t>{s.dims[0], s.dims[1]});
  }
  return steps;
}

template std::int64_t check_sequence_args(const Cell&, const SequenceArgs<float>&, std::int64_t, std::string_view);
template std::int64_t check_sequence_args(const Cell&, const SequenceArgs<double>&, std::int64_t, std::string_view);

}  // namespace cellfuse
