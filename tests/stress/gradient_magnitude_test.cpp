// stress_gradient_magnitude: the magnitude step of gradient_magnitude.h against magnitudes worked
// out by hand for a small recurrent cell (fresh random values, odd sizes, no zeros):
//
//   t = tanh(x W^T - h U^T);  y = t;  next h = t
//   backward, with dy the output's gradient and g the next state's:
//     dt = dy + g;  ds = dt (1 - t^2);  dx = ds W;  dh = -ds U
//   magnitudes: |ds| -> (|dy| + |g|) |1 - t^2|;  dx -> that |W|;  dh -> that |U|
//
// and a cell whose adjoint passes through a nonlinear op (max of two gradients is not built by
// autodiff, so the check is that every linear backward is accepted). Exits 1 on a mismatch.
#include <cmath>
#include <cstdio>

#include "compiler/ir/text.h"
#include "gradient_magnitude.h"
#include "runtime/random_args.h"

namespace {

using namespace cellfuse;
using namespace cellfuse::stress;

constexpr std::int64_t B = 3, NX = 5, NH = 7;

HostTensor<double> random_tensor(std::vector<std::int64_t> shape, SplitMix64& rng) {
  HostTensor<double> t(std::move(shape));
  for (double& v : t.data) v = rng.uniform(0.1, 1.0) * (rng.next() & 1 ? 1 : -1);
  return t;
}

}  // namespace

int main() {
  const Cell cell = parse_cell(R"(cell small f64 {
  %x = input : [B,5]
  %h = state : [B,7]
  %W = param : [7,5]
  %U = param : [7,7]
  %a = linear %x, %W : [B,7]
  %b = linear %h, %U : [B,7]
  %s = sub %a, %b : [B,7]
  %t = tanh %s : [B,7]
  output y = %t
  next h = %t
})");
  const BackwardCell backward = differentiate(cell);
  const auto magnitude = magnitude_step(backward);
  if (!magnitude) {
    std::printf("FAIL: no magnitude step for a linear backward\n");
    return 1;
  }
  SplitMix64 rng(20261207);
  const auto x = random_tensor({B, NX}, rng), h = random_tensor({B, NH}, rng);
  const auto W = random_tensor({NH, NX}, rng), U = random_tensor({NH, NH}, rng);
  const auto dy = random_tensor({B, NH}, rng), g = random_tensor({B, NH}, rng);

  // The step's inputs, as step_inputs says, from one forward step.
  const StepResult<double> forward = interpret_step(backward.forward, StepArgs<double>{{x}, {h}, {W, U}});
  std::vector<HostTensor<double>> inputs;
  for (const StepInputSource& s : backward.step_inputs) {
    switch (s.kind) {
      case StepInputSource::Kind::ForwardInput: inputs.push_back(x); break;
      case StepInputSource::Kind::ForwardState: inputs.push_back(h); break;
      case StepInputSource::Kind::Saved:
        inputs.push_back(forward.outputs[static_cast<std::size_t>(backward.saved_outputs[static_cast<std::size_t>(s.index)])]);
        break;
      case StepInputSource::Kind::OutputGrad: inputs.push_back(dy); break;
    }
  }
  const StepResult<double> got = interpret_step(magnitude->cell, StepArgs<double>{inputs, {g}, {W, U}});

  // By hand.
  const auto& t = forward.outputs[0].data;
  std::vector<double> ds(static_cast<std::size_t>(B * NH));
  for (std::size_t e = 0; e < ds.size(); ++e) ds[e] = (std::abs(dy.data[e]) + std::abs(g.data[e])) * std::abs(1 - t[e] * t[e]);
  int bad = 0;
  auto expect = [&](const char* what, const HostTensor<double>& value, const HostTensor<double>& weight, std::int64_t n) {
    for (std::int64_t r = 0; r < B; ++r)
      for (std::int64_t j = 0; j < n; ++j) {
        double want = 0;
        for (std::int64_t k = 0; k < NH; ++k)
          want += ds[static_cast<std::size_t>(r * NH + k)] * std::abs(weight.data[static_cast<std::size_t>(k * n + j)]);
        const double have = value.data[static_cast<std::size_t>(r * n + j)];
        if (!(std::abs(have - want) <= 1e-12 * want)) {
          std::printf("FAIL: %s[%lld][%lld] = %.17g, by hand %.17g\n", what, static_cast<long long>(r),
                      static_cast<long long>(j), have, want);
          ++bad;
        }
      }
  };
  expect("magnitude of dx", got.outputs[0], W, NX);
  expect("magnitude of dh", got.outputs[magnitude->first_state_output], U, NH);

  // The error estimates are non-negative, finite and of the size of the magnitudes x step_error.
  SequenceArgs<double> args;
  args.inputs.push_back(random_tensor({4, B, NX}, rng));
  args.states = {h};
  args.params = {W, U};
  LossGradients<double> seeds{{random_tensor({4, B, NH}, rng)}, {g}};
  const auto estimate = gradient_error_estimates(backward, *magnitude, args, seeds, 1e-3);
  const auto reference = reference_bptt(backward, args, seeds);
  for (const auto* group : {&estimate.inputs, &estimate.states, &estimate.params})
    for (const auto& tensor : *group)
      for (double v : tensor.data)
        if (!(v >= 0 && std::isfinite(v))) {
          std::printf("FAIL: an error estimate is %g\n", v);
          ++bad;
        }
  // d U sums T*B rows of products: its estimate must be at least step_error x |d U| (the sum of
  // |terms| is at least |sum|).
  for (std::size_t e = 0; e < estimate.params[1].data.size(); ++e)
    if (!(estimate.params[1].data[e] >= 1e-3 * std::abs(reference.grads.params[1].data[e]))) {
      std::printf("FAIL: d U[%zu]: estimate %g below 1e-3 x |%g|\n", e, estimate.params[1].data[e],
                  reference.grads.params[1].data[e]);
      ++bad;
    }
  if (bad == 0) std::printf("gradient magnitudes: the magnitude step matches the hand-worked sums\n");
  return bad ? 1 : 0;
}
