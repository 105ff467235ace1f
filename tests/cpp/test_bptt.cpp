// The reference BPTT: its forward is the interpreter's, its gradients match a hand-written Elman
// BPTT and finite differences, are linear in the loss gradients, agree between f32 and f64, and
// a sequence of length 0 passes the final-state gradients through.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "backend_check.h"
#include "compiler/ir/error.h"
#include "compiler/passes/autodiff.h"
#include "frontend/builder.h"
#include "frontend/cells.h"
#include "grad_check.h"
#include "runtime/random_args.h"
#include "runtime/reference/bptt.h"
#include "runtime/reference/interpreter.h"

namespace cellfuse {
namespace {

using ::testing::HasSubstr;
using Tensor = HostTensor<double>;

const char* const kCells[] = {"elman", "elman_proj", "lstm", "gru", "lnlstm", "peephole"};

Cell small_cell(const std::string& name, DType dtype = DType::f64) {
  return cells::by_spec(name == "elman_proj" ? "elman_proj:3,5,2" : name + ":3,5", dtype);
}

TEST(Bptt, ForwardIsTheInterpreters) {
  for (const char* name : kCells) {
    SCOPED_TRACE(name);
    Cell cell = small_cell(name);
    auto args = random_sequence_args<double>(cell, 4, 3, 1);
    auto seeds = random_loss_gradients<double>(cell, 4, 3, 1);
    auto r = reference_bptt(differentiate(cell), args, seeds);
    auto want = interpret_sequence(cell, args);
    testing_support::expect_matches(r.forward, want, 1e-14, name);
    ASSERT_EQ(r.grads.inputs.size(), cell.inputs.size());
    ASSERT_EQ(r.grads.states.size(), cell.states.size());
    ASSERT_EQ(r.grads.params.size(), cell.params.size());
    for (std::size_t i = 0; i < cell.inputs.size(); ++i)
      EXPECT_EQ(r.grads.inputs[i].shape, args.inputs[i].shape);
    for (std::size_t i = 0; i < cell.states.size(); ++i)
      EXPECT_EQ(r.grads.states[i].shape, args.states[i].shape);
    for (std::size_t i = 0; i < cell.params.size(); ++i)
      EXPECT_EQ(r.grads.params[i].shape, args.params[i].shape);
  }
}

// An Elman BPTT written out by hand: h_{t+1} = tanh(x_t W^T + b + h_t U^T + c), output h_{t+1}.
TEST(Bptt, MatchesAHandWrittenElmanBptt) {
  const std::int64_t T = 3, B = 2, I = 3, H = 4;
  Cell cell = cells::elman(I, H, DType::f64);
  auto args = random_sequence_args<double>(cell, T, B, 21);
  auto seeds = random_loss_gradients<double>(cell, T, B, 22);
  auto r = reference_bptt(differentiate(cell), args, seeds);

  auto param = [&](const char* name) -> const std::vector<double>& {
    for (std::size_t i = 0; i < cell.params.size(); ++i)
      if (cell.leaf_name(cell.params[i]) == name) return args.params[i].data;
    throw std::runtime_error(name);
  };
  const auto &W = param("W_ih"), &U = param("W_hh"), &b = param("b_ih"), &c = param("b_hh");
  const auto& x = args.inputs[0].data;
  auto ix = [](std::int64_t i) { return static_cast<std::size_t>(i); };
  // Forward: hs[t] is the state step t starts from.
  std::vector<std::vector<double>> hs(ix(T + 1));
  hs[0] = args.states[0].data;
  for (std::int64_t t = 0; t < T; ++t) {
    hs[ix(t + 1)].assign(ix(B * H), 0.0);
    for (std::int64_t r_ = 0; r_ < B; ++r_)
      for (std::int64_t j = 0; j < H; ++j) {
        double z = b[ix(j)] + c[ix(j)];
        for (std::int64_t k = 0; k < I; ++k) z += x[ix((t * B + r_) * I + k)] * W[ix(j * I + k)];
        for (std::int64_t k = 0; k < H; ++k) z += hs[ix(t)][ix(r_ * H + k)] * U[ix(j * H + k)];
        hs[ix(t + 1)][ix(r_ * H + j)] = std::tanh(z);
      }
  }
  // Backward.
  std::vector<double> g = seeds.final_states[0].data, dW(W.size()), dU(U.size()), db(b.size()),
                      dx(x.size());
  for (std::int64_t t = T - 1; t >= 0; --t) {
    std::vector<double> dz(ix(B * H)), dh(ix(B * H), 0.0);
    for (std::int64_t i = 0; i < B * H; ++i) {
      double h1 = hs[ix(t + 1)][ix(i)];
      dz[ix(i)] = (g[ix(i)] + seeds.outputs[0].data[ix(t * B * H + i)]) * (1 - h1 * h1);
    }
    for (std::int64_t r_ = 0; r_ < B; ++r_)
      for (std::int64_t j = 0; j < H; ++j) {
        double d = dz[ix(r_ * H + j)];
        db[ix(j)] += d;
        for (std::int64_t k = 0; k < I; ++k) {
          dW[ix(j * I + k)] += d * x[ix((t * B + r_) * I + k)];
          dx[ix((t * B + r_) * I + k)] += d * W[ix(j * I + k)];
        }
        for (std::int64_t k = 0; k < H; ++k) {
          dU[ix(j * H + k)] += d * hs[ix(t)][ix(r_ * H + k)];
          dh[ix(r_ * H + k)] += d * U[ix(j * H + k)];
        }
      }
    g = dh;
  }
  auto expect_near = [](const std::vector<double>& got, const std::vector<double>& want,
                        const char* what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    for (std::size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR(got[i], want[i], 1e-12) << what << "[" << i << "]";
  };
  expect_near(r.grads.inputs[0].data, dx, "dx");
  expect_near(r.grads.states[0].data, g, "dh0");
  for (std::size_t i = 0; i < cell.params.size(); ++i) {
    std::string_view name = cell.leaf_name(cell.params[i]);
    const auto& want = name == "W_ih" ? dW : name == "W_hh" ? dU : db;  // both biases get db
    expect_near(r.grads.params[i].data, want, std::string(name).c_str());
  }
}

TEST(Bptt, ZeroLengthSequencePassesFinalStateGradientsThrough) {
  for (const char* name : kCells) {
    SCOPED_TRACE(name);
    Cell cell = small_cell(name);
    const std::int64_t B = 3;
    auto full = random_sequence_args<double>(cell, 1, B, 5);
    SequenceArgs<double> args;
    args.steps = 0;
    for (const auto& x : full.inputs)
      args.inputs.emplace_back(std::vector<std::int64_t>{0, B, x.shape[2]});
    args.states = full.states;
    args.params = full.params;
    auto seeds = random_loss_gradients<double>(cell, 0, B, 6);
    for (const auto& o : seeds.outputs) EXPECT_EQ(o.shape[0], 0);
    auto r = reference_bptt(differentiate(cell), args, seeds);
    ASSERT_EQ(r.grads.states.size(), cell.states.size());
    for (std::size_t s = 0; s < cell.states.size(); ++s) {
      EXPECT_EQ(r.grads.states[s].shape, seeds.final_states[s].shape);
      EXPECT_EQ(r.grads.states[s].data, seeds.final_states[s].data);
      EXPECT_EQ(r.forward.final_states[s].data, args.states[s].data);
    }
    for (std::size_t i = 0; i < cell.inputs.size(); ++i) {
      EXPECT_EQ(r.grads.inputs[i].shape, args.inputs[i].shape);
      EXPECT_TRUE(r.grads.inputs[i].data.empty());
    }
    ASSERT_EQ(r.grads.params.size(), cell.params.size());
    for (std::size_t p = 0; p < cell.params.size(); ++p) {
      EXPECT_EQ(r.grads.params[p].shape, args.params[p].shape);
      for (double v : r.grads.params[p].data) EXPECT_EQ(v, 0.0);
    }
  }
}

// Gradients are linear in the loss gradients: grads(w1 + 2 w2) = grads(w1) + 2 grads(w2).
TEST(Bptt, GradientsAreLinearInTheSeeds) {
  for (const char* name : kCells) {
    SCOPED_TRACE(name);
    Cell cell = small_cell(name);
    BackwardCell bw = differentiate(cell);
    auto args = random_sequence_args<double>(cell, 3, 2, 8);
    auto w1 = random_loss_gradients<double>(cell, 3, 2, 9);
    auto w2 = random_loss_gradients<double>(cell, 3, 2, 10);
    auto w3 = w1;
    auto combine = [](std::vector<Tensor>& a, const std::vector<Tensor>& b) {
      for (std::size_t k = 0; k < a.size(); ++k)
        for (std::size_t i = 0; i < a[k].data.size(); ++i) a[k].data[i] += 2 * b[k].data[i];
    };
    combine(w3.outputs, w2.outputs);
    combine(w3.final_states, w2.final_states);
    auto g1 = reference_bptt(bw, args, w1).grads, g2 = reference_bptt(bw, args, w2).grads,
         g3 = reference_bptt(bw, args, w3).grads;
    combine(g1.inputs, g2.inputs);
    combine(g1.states, g2.states);
    combine(g1.params, g2.params);
    for (std::size_t k = 0; k < g3.params.size(); ++k)
      testing_support::expect_close(g3.params[k], g1.params[k], 1e-12, "param");
    for (std::size_t k = 0; k < g3.inputs.size(); ++k)
      testing_support::expect_close(g3.inputs[k], g1.inputs[k], 1e-12, "input");
    for (std::size_t k = 0; k < g3.states.size(); ++k)
      testing_support::expect_close(g3.states[k], g1.states[k], 1e-12, "state");
  }
}

// The f32 reference (an f32 cell run in f32) agrees with the f64 one on the same cell in f64.
TEST(Bptt, F32AgreesWithF64) {
  for (const char* name : kCells) {
    SCOPED_TRACE(name);
    Cell cell32 = small_cell(name, DType::f32);
    Cell cell64 = testing_support::as_f64(cell32);
    auto args64 = random_sequence_args<double>(cell64, 5, 3, 12);
    auto seeds64 = random_loss_gradients<double>(cell64, 5, 3, 13);
    auto args32 = testing_support::convert<double, float>(args64);
    LossGradients<float> seeds32;
    for (const auto& t : seeds64.outputs)
      seeds32.outputs.push_back(testing_support::convert<double, float>(t));
    for (const auto& t : seeds64.final_states)
      seeds32.final_states.push_back(testing_support::convert<double, float>(t));
    auto r32 = reference_bptt(differentiate(cell32), args32, seeds32);
    auto r64 = reference_bptt(differentiate(cell64), args64, seeds64);
    for (std::size_t k = 0; k < r64.grads.inputs.size(); ++k)
      testing_support::expect_close(r32.grads.inputs[k], r64.grads.inputs[k], 1e-5, "input");
    for (std::size_t k = 0; k < r64.grads.states.size(); ++k)
      testing_support::expect_close(r32.grads.states[k], r64.grads.states[k], 1e-5, "state");
    for (std::size_t k = 0; k < r64.grads.params.size(); ++k)
      testing_support::expect_close(r32.grads.params[k], r64.grads.params[k], 1e-5, "param");
    EXPECT_NEAR(gradient_checksum(r32.grads), gradient_checksum(r64.grads),
                1e-4 * std::max(1.0, std::abs(gradient_checksum(r64.grads))));
  }
}

// A cell without per-step inputs runs for args.steps steps, and its gradients still match
// finite differences.
TEST(Bptt, CellWithoutInputsUsesSteps) {
  CellBuilder b("autonomous", DType::f64);
  Val h = b.state("h", 3);
  Val W = b.param("W", {3, 3});
  Val h2 = tanh(linear(h, W));
  b.output("y", h2 * 2.0);
  b.next(h, h2);
  Cell cell = std::move(b).finish();
  auto r = testing_support::check_cell_gradients(cell, 4, 2, 31);
  EXPECT_GT(r.checked, 0u);
}

TEST(Bptt, LossGradientsAndChecksum) {
  Cell cell = small_cell("elman_proj");
  auto a = random_loss_gradients<double>(cell, 4, 3, 7);
  auto b = random_loss_gradients<double>(cell, 4, 3, 7);
  auto c = random_loss_gradients<double>(cell, 4, 3, 8);
  ASSERT_EQ(a.outputs.size(), 1u);
  EXPECT_EQ(a.outputs[0].shape, (std::vector<std::int64_t>{4, 3, 2}));
  ASSERT_EQ(a.final_states.size(), 1u);
  EXPECT_EQ(a.final_states[0].shape, (std::vector<std::int64_t>{3, 5}));
  EXPECT_EQ(a.outputs[0].data, b.outputs[0].data);
  EXPECT_NE(a.outputs[0].data, c.outputs[0].data);
  // Not the numbers of the arguments drawn from the same seed.
  auto args = random_sequence_args<double>(cell, 4, 3, 7);
  EXPECT_NE(a.outputs[0].data[0], args.inputs[0].data[0]);
  for (double v : a.outputs[0].data) {
    EXPECT_GE(v, -1.0);
    EXPECT_LT(v, 1.0);
  }
  SequenceGradients<double> g;
  g.inputs.push_back(Tensor({2}));
  g.inputs[0].data = {1.5, 2};
  g.states.push_back(Tensor({1}));
  g.states[0].data = {-0.25};
  g.params.push_back(Tensor({2}));
  g.params[0].data = {10, 0.5};
  EXPECT_DOUBLE_EQ(gradient_checksum(g), 13.75);
}

TEST(Bptt, WrongArgumentsAreErrors) {
  Cell cell = small_cell("lstm");
  BackwardCell bw = differentiate(cell);
  auto args = random_sequence_args<double>(cell, 2, 3, 1);
  auto seeds = random_loss_gradients<double>(cell, 2, 3, 1);
  {
    auto bad = seeds;
    bad.outputs.clear();
    EXPECT_THROW(reference_bptt(bw, args, bad), Error);
  }
  {
    auto bad = seeds;
    bad.final_states[1] = Tensor({3, 4});
    try {
      reference_bptt(bw, args, bad);
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("gradient of final state %c"));
      EXPECT_THAT(e.what(), HasSubstr("[3,5]"));
    }
  }
  {
    auto bad = seeds;
    bad.outputs[0] = Tensor({3, 3, 5});
    try {
      reference_bptt(bw, args, bad);
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("gradient of output h"));
    }
  }
  {
    auto bad = args;
    bad.params[0] = Tensor({20, 4});
    try {
      reference_bptt(bw, bad, seeds);
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("param %W_ih"));
    }
  }
}

}  // namespace
}  // namespace cellfuse
