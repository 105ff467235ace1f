// A minimal gated unit (MGU: a GRU with one gate) written with cellfuse's builder, run by the
// reference interpreter and, when the library has it, compiled for the CPU; the two must agree.
// Only the public header is included.
#include <cellfuse/cellfuse.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

using namespace cellfuse;

Cell mgu(std::int64_t input, std::int64_t hidden) {
  CellBuilder b("mgu", DType::f32);
  Val x = b.input("x", input);
  Val h = b.state("h", hidden);
  Val W_f = b.param("W_f", {hidden, input});
  Val U_f = b.param("U_f", {hidden, hidden});
  Val b_f = b.param("b_f", {hidden});
  Val W_h = b.param("W_h", {hidden, input});
  Val U_h = b.param("U_h", {hidden, hidden});
  Val fx = linear(x, W_f, b_f);
  Val f = sigmoid(fx + linear(h, U_f));
  Val cx = linear(x, W_h);
  Val candidate = tanh(cx + linear(f * h, U_h));
  Val keep = (1.0 - f) * h;
  Val h_next = keep + f * candidate;
  b.output("h", h_next);
  b.next(h, h_next);
  return std::move(b).finish();
}

double sum(const HostTensor<float>& t) {
  double s = 0;
  for (float v : t.data) s += v;
  return s;
}

int main() {
  const Cell cell = optimize(mgu(16, 32));
  const auto args = random_sequence_args<float>(cell, /*steps=*/20, /*batch=*/4, /*seed=*/7);
  const SequenceResult<float> ref = interpret_sequence(cell, args);
  std::printf("reference: final h sum %.6f\n", sum(ref.final_states[0]));
#if CELLFUSE_HAVE_LLVM
  auto compiled = compile_cpu(cell, /*batch=*/4);
  const SequenceResult<float> cpu = compiled->run(args);
  double worst = 0;
  for (std::size_t i = 0; i < cpu.outputs[0].data.size(); ++i)
    worst = std::max(worst, double(std::abs(cpu.outputs[0].data[i] - ref.outputs[0].data[i])));
  std::printf("cpu: final h sum %.6f, max difference from the reference %.2e\n", sum(cpu.final_states[0]), worst);
  if (!(worst < 1e-4)) {
    std::printf("MISMATCH\n");
    return 1;
  }
#endif
  std::printf("ok\n");
  return 0;
}
