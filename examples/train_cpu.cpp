// Training a custom cell from C++ on the CPU backend: a multiplicative-integration RNN (Wu et al.,
// "On Multiplicative Integration with Recurrent Neural Networks", 2016) learns to imitate a
// teacher, the same cell with other weights. The teacher runs inference (compile_cpu, run_into);
// the student trains with BPTT (compile_cpu_bptt: forward_view, then backward_view) and plain
// SGD. Both compile once; every training step runs on the same memory.
//
//   build/examples/example_train_cpu      prints the loss as it falls; exits 1 unless it halves
#include <cmath>
#include <cstdio>
#include <vector>

#include <cellfuse/cellfuse.h>

using namespace cellfuse;

// h' = tanh(alpha * Wx * Uh + beta_h * Uh + beta_x * Wx + b): the product of the two projections
// where an Elman cell adds them.
Cell mi_rnn(std::int64_t input, std::int64_t hidden) {
  CellBuilder b("mi_rnn", DType::f32);
  Val x = b.input("x", input);
  Val h = b.state("h", hidden);
  Val W = b.param("W", {hidden, input});
  Val U = b.param("U", {hidden, hidden});
  Val alpha = b.param("alpha", {hidden});
  Val beta_h = b.param("beta_h", {hidden});
  Val beta_x = b.param("beta_x", {hidden});
  Val bias = b.param("bias", {hidden});
  Val wx = linear(x, W);
  Val uh = linear(h, U);
  Val gated = alpha * wx * uh;
  Val mixed = gated + beta_h * uh;
  Val pre = mixed + beta_x * wx + bias;
  Val h_next = tanh(pre);
  b.output("h", h_next);
  b.next(h, h_next);
  return std::move(b).finish();
}

// A vector per tensor, and the pointers a TrainingView takes.
std::vector<float*> pointers(std::vector<std::vector<float>>& tensors) {
  std::vector<float*> out;
  for (auto& t : tensors) out.push_back(t.data());
  return out;
}

int main() {
  const std::int64_t steps = 50, batch = 16, input = 8, hidden = 24;
  Cell cell = mi_rnn(input, hidden);

  // The teacher: the data's inputs and its own weights (seed 7); its outputs are the targets.
  auto teacher = compile_cpu(cell, batch);
  SequenceArgs<float> data = random_sequence_args<float>(cell, steps, batch, 7);
  SequenceResult<float> target;
  teacher->run_into(data, target);

  // The student: the same inputs and initial state, weights from another seed. The loss's
  // gradient depends on the forward's outputs, so the step runs in two halves on memory of our
  // own, as a framework's autograd function does: forward_view, the loss, backward_view.
  auto student = compile_cpu_bptt(cell, batch);
  std::vector<HostTensor<float>> params = random_sequence_args<float>(cell, steps, batch, 1).params;
  const std::int64_t rows = steps * batch;
  std::vector<std::vector<float>> outputs{std::vector<float>(rows * hidden)},
      finals{std::vector<float>(batch * hidden)}, output_grads{std::vector<float>(rows * hidden)},
      final_grads{std::vector<float>(batch * hidden, 0.0f)},  // the loss ignores the final state
      input_grads{std::vector<float>(rows * input)}, state_grads{std::vector<float>(batch * hidden)}, tape,
      param_grads;
  for (std::int64_t width : student->tape_widths()) tape.emplace_back(rows * width);
  for (const auto& p : params) param_grads.emplace_back(p.data.size());

  TrainingView<float> view;
  view.steps = steps;
  view.inputs = {data.inputs[0].data.data()};
  view.states = {data.states[0].data.data()};
  for (const auto& p : params) view.params.push_back(p.data.data());
  view.outputs = pointers(outputs);
  view.final_states = pointers(finals);
  view.tape = pointers(tape);
  view.output_grads = {output_grads[0].data()};
  view.final_state_grads = {final_grads[0].data()};
  view.input_grads = pointers(input_grads);
  view.state_grads = pointers(state_grads);
  view.param_grads = pointers(param_grads);

  const float rate = 0.5f;
  const std::vector<float>& y = outputs[0];
  const std::vector<float>& want = target.outputs[0].data;
  double first = 0, loss = 0;
  for (int iteration = 0; iteration <= 300; ++iteration) {
    student->forward_view(view);
    // loss = mean over the outputs of (y - target)^2 / 2, and its gradient.
    loss = 0;
    for (std::size_t i = 0; i < y.size(); ++i) {
      const double d = y[i] - want[i];
      loss += 0.5 * d * d / static_cast<double>(y.size());
      output_grads[0][i] = static_cast<float>(d / static_cast<double>(y.size()));
    }
    if (iteration == 0) first = loss;
    if (iteration % 50 == 0) std::printf("iteration %3d  loss %.6f\n", iteration, loss);
    student->backward_view(view);
    for (std::size_t p = 0; p < params.size(); ++p)
      for (std::size_t i = 0; i < params[p].data.size(); ++i) params[p].data[i] -= rate * param_grads[p][i];
  }
  const bool fell = std::isfinite(loss) && loss < 0.5 * first;
  std::printf("%s: loss %.6f -> %.6f\n", fell ? "trained" : "FAILED to train", first, loss);
  return fell ? 0 : 1;
}
