// A custom recurrent cell written with the C++ builder: the minimal gated unit (MGU, Zhou et al.
// 2016), a GRU with a single gate. The program builds it, prints its IR before and after the graph
// passes, and runs it over a random sequence on the reference interpreter.
//
//   ./build/examples/example_custom_cell
#include <cstdio>
#include <iostream>

#include <cellfuse/cellfuse.h>  // the public API, all of it

using namespace cellfuse;

// f  = sigmoid(x W_f^T + h U_f^T + b_f)
// h~ = tanh(x W_h^T + (f * h) U_h^T + b_h)
// h' = (1 - f) * h + f * h~
Cell mgu(std::int64_t input, std::int64_t hidden) {
  CellBuilder b("mgu", DType::f32);
  Val x = b.input("x", input);
  Val h = b.state("h", hidden);
  Val W_f = b.param("W_f", {hidden, input});
  Val U_f = b.param("U_f", {hidden, hidden});
  Val b_f = b.param("b_f", {hidden});
  Val W_h = b.param("W_h", {hidden, input});
  Val U_h = b.param("U_h", {hidden, hidden});
  Val b_h = b.param("b_h", {hidden});

  // One op per statement keeps the node order (the printed form, the cache key) the same on every
  // compiler: the operands of one C++ call are evaluated in an unspecified order.
  Val fx = linear(x, W_f, b_f);           // [B,hidden]; the bias [hidden] is part of linear
  Val f = sigmoid(fx + linear(h, U_f));   // one linear inside: order is fixed
  Val cx = linear(x, W_h, b_h);
  Val candidate = tanh(cx + linear(f * h, U_h));
  Val keep = (1.0 - f) * h;               // a number becomes a constant of f's shape
  Val h_next = keep + f * candidate;

  b.output("h", h_next);
  b.next(h, h_next);
  return std::move(b).finish();           // verifies the cell
}

int main() {
  try {
    Cell cell = mgu(/*input=*/5, /*hidden=*/3);
    std::cout << "# as built\n" << print_cell(cell);
    Cell optimized = optimize(cell);  // simplify, CSE, DCE; verified between stages
    std::cout << "\n# after the passes\n" << print_cell(optimized);

    // 10 steps, batch 4, random inputs, states and parameters from seed 1.
    SequenceArgs<float> args = random_sequence_args<float>(optimized, 10, 4, 1);
    SequenceResult<float> result = interpret_sequence(optimized, args);
    double sum = 0;
    for (float v : result.final_states[0].data) sum += v;
    std::printf("\nfinal h: [%lld x %lld], sum %.6f\n",
                static_cast<long long>(result.final_states[0].shape[0]),
                static_cast<long long>(result.final_states[0].shape[1]), sum);
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
