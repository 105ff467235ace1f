// The reference interpreter runs the standard cells to the values of independent f64 loops
// (tests/cpp/oracle_cells.h), one step and whole sequences, in f64 and f32, at odd sizes.
// The interpreter is the oracle of every later backend, so it is itself checked against code
// that shares nothing with it but the documented equations and the parameter names.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "frontend/builder.h"
#include "frontend/cells.h"
#include "oracle_cells.h"
#include "runtime/reference/interpreter.h"

namespace cellfuse {
namespace {

using oracle::Vec;

// Input and output sizes differ from every hidden size tested, so a W_ih / W_hh mix-up or a
// transposed weight cannot go unnoticed.
constexpr std::int64_t kInput = 5;
constexpr std::int64_t kOutput = 3;

Cell make_cell(const std::string& name, std::int64_t hidden, DType dtype) {
  if (name == "elman") return cells::elman(kInput, hidden, dtype);
  if (name == "elman_proj") return cells::elman_proj(kInput, hidden, kOutput, dtype);
  if (name == "lstm") return cells::lstm(kInput, hidden, dtype);
  if (name == "gru") return cells::gru(kInput, hidden, dtype);
  if (name == "lnlstm") return cells::lnlstm(kInput, hidden, dtype);
  if (name == "peephole") return cells::peephole(kInput, hidden, dtype);
  throw std::invalid_argument("no such cell: " + name);
}

// Fresh random values, never all zero. Matrices are scaled by 2/sqrt(fan_in) so that gate
// pre-activations stay O(1) and the nonlinearities are exercised away from saturation.
class Random {
 public:
  explicit Random(std::uint64_t seed) : engine_(seed) {}

  template <class T>
  HostTensor<T> tensor(std::vector<std::int64_t> dims, double bound) {
    HostTensor<T> t(std::move(dims));
    std::uniform_real_distribution<double> dist(-bound, bound);
    for (auto& v : t.data) v = static_cast<T>(dist(engine_));
    return t;
  }

  template <class T>
  HostTensor<T> param(const Shape& s) {
    if (s.rank == 1) return tensor<T>({s.dims[0]}, 1.0);
    return tensor<T>({s.dims[0], s.dims[1]}, 2.0 / std::sqrt(static_cast<double>(s.dims[1])));
  }

 private:
  std::mt19937_64 engine_;
};

// |got - want| <= rtol * max(1, |want|): relative for large values, absolute near zero, where
// the rounding of cancelling terms (not the size of the result) sets the error.
template <class T>
::testing::AssertionResult close_to(const std::vector<T>& got, const Vec& want, double rtol) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure()
           << "size " << got.size() << ", expected " << want.size();
  std::ostringstream bad;
  int mismatches = 0;
  double worst = 0;
  for (std::size_t e = 0; e < got.size(); ++e) {
    double g = static_cast<double>(got[e]);
    double err = std::abs(g - want[e]) / std::max(1.0, std::abs(want[e]));
    worst = std::max(worst, err);
    if (!(err <= rtol) && ++mismatches <= 5)
      bad << "\n  [" << e << "] got " << g << ", expected " << want[e];
  }
  if (mismatches == 0) return ::testing::AssertionSuccess();
  bad.precision(17);
  return ::testing::AssertionFailure() << mismatches << " of " << got.size()
                                       << " values off (worst relative error " << worst
                                       << ", tolerance " << rtol << "):" << bad.str();
}

template <class T>
double tolerance() {
  return std::is_same_v<T, double> ? 1e-12 : 1e-5;
}

// Random arguments of the right shapes for every leaf of `cell`; for a sequence (steps > 0),
// inputs get a leading T axis.
template <class T>
void fill_args(const Cell& cell, std::int64_t batch, std::int64_t steps, Random& rng,
               std::vector<HostTensor<T>>& inputs, std::vector<HostTensor<T>>& states,
               std::vector<HostTensor<T>>& params) {
  for (ValueId v : cell.inputs) {
    std::vector<std::int64_t> dims{batch, cell.graph.node(v).shape.features()};
    if (steps > 0) dims.insert(dims.begin(), steps);
    inputs.push_back(rng.tensor<T>(dims, 1.0));
  }
  for (ValueId v : cell.states)
    states.push_back(rng.tensor<T>({batch, cell.graph.node(v).shape.features()}, 1.0));
  for (ValueId v : cell.params) params.push_back(rng.param<T>(cell.graph.node(v).shape));
}

// ---------------------------------------------------------------------------------------------
// One step.

using StepCase = std::tuple<std::string, DType, std::int64_t, std::int64_t>;  // cell, dtype, B, H
using SeqCase = std::tuple<std::string, DType, std::int64_t, std::int64_t, std::int64_t>;  // ..., T

class ReferenceCellStep : public ::testing::TestWithParam<StepCase> {};

template <class T>
void check_step(const StepCase& c, std::uint64_t seed) {
  const auto& [name, dtype, B, H] = c;
  Cell cell = make_cell(name, H, dtype);
  Random rng(seed);
  StepArgs<T> args;
  fill_args<T>(cell, B, 0, rng, args.inputs, args.states, args.params);

  // The oracle sees exactly the values the interpreter sees (already rounded to T), so in f32
  // only the interpreter's arithmetic differs from the f64 loops.
  std::vector<Vec> xs, hs;
  for (const auto& t : args.inputs) xs.push_back(oracle::to_vec(t));
  for (const auto& t : args.states) hs.push_back(oracle::to_vec(t));
  oracle::Dims dims{B, kInput, H, kOutput};
  oracle::OracleStep want =
      oracle::step(name, oracle::params_by_name(cell, args.params), dims, xs, hs);

  StepResult<T> got = interpret_step(cell, args);
  ASSERT_EQ(got.outputs.size(), want.outputs.size());
  ASSERT_EQ(got.next_states.size(), want.next_states.size());
  for (std::size_t o = 0; o < want.outputs.size(); ++o) {
    const std::int64_t n = cell.graph.node(cell.outputs[o].value).shape.features();
    EXPECT_EQ(got.outputs[o].shape, (std::vector<std::int64_t>{B, n}));
    EXPECT_TRUE(close_to(got.outputs[o].data, want.outputs[o], tolerance<T>()))
        << "output " << cell.outputs[o].name;
  }
  for (std::size_t s = 0; s < want.next_states.size(); ++s) {
    EXPECT_EQ(got.next_states[s].shape, (std::vector<std::int64_t>{B, H}));
    EXPECT_TRUE(close_to(got.next_states[s].data, want.next_states[s], tolerance<T>()))
        << "next state " << cell.leaf_name(cell.states[s]);
  }
}

std::uint64_t seed_of(const std::string& name, std::int64_t B, std::int64_t H, std::int64_t T) {
  // Different data for every case; fixed across runs so that a failure reproduces.
  return std::hash<std::string>{}(name) ^ static_cast<std::uint64_t>(B * 1000003 + H * 1009 + T);
}

TEST_P(ReferenceCellStep, MatchesF64Loops) {
  const auto& [name, dtype, B, H] = GetParam();
  std::uint64_t seed = seed_of(name, B, H, 0);
  SCOPED_TRACE("seed " + std::to_string(seed));
  if (dtype == DType::f64)
    check_step<double>(GetParam(), seed);
  else
    check_step<float>(GetParam(), seed);
}

const std::vector<std::string> kCells = {"elman", "elman_proj", "lstm",
                                         "gru",   "lnlstm",     "peephole"};

// Test names such as Cells/ReferenceCellStep.MatchesF64Loops/lstm_f32_B3_H33.
std::string case_label(const std::string& name, DType dtype, std::int64_t B, std::int64_t H) {
  return name + "_" + std::string(dtype_name(dtype)) + "_B" + std::to_string(B) + "_H" +
         std::to_string(H);
}
std::string step_case_name(const ::testing::TestParamInfo<StepCase>& info) {
  const auto& [name, dtype, B, H] = info.param;
  return case_label(name, dtype, B, H);
}
std::string seq_case_name(const ::testing::TestParamInfo<SeqCase>& info) {
  const auto& [name, dtype, B, H, T] = info.param;
  return case_label(name, dtype, B, H) + "_T" + std::to_string(T);
}

INSTANTIATE_TEST_SUITE_P(
    Cells, ReferenceCellStep,
    ::testing::Combine(::testing::ValuesIn(kCells), ::testing::Values(DType::f64, DType::f32),
                       ::testing::Values(std::int64_t{1}, std::int64_t{3}),
                       ::testing::Values(std::int64_t{1}, std::int64_t{7}, std::int64_t{33})),
    step_case_name);

// ---------------------------------------------------------------------------------------------
// Sequences: the state of each step feeds the next.

class ReferenceCellSequence : public ::testing::TestWithParam<SeqCase> {};

template <class T>
void check_sequence(const SeqCase& c, std::uint64_t seed) {
  const auto& [name, dtype, B, H, steps] = c;
  Cell cell = make_cell(name, H, dtype);
  Random rng(seed);
  SequenceArgs<T> args;
  fill_args<T>(cell, B, steps, rng, args.inputs, args.states, args.params);

  std::vector<std::vector<Vec>> xs(args.inputs.size());
  for (std::size_t i = 0; i < args.inputs.size(); ++i)
    for (std::int64_t t = 0; t < steps; ++t) xs[i].push_back(oracle::step_slice(args.inputs[i], t));
  std::vector<Vec> hs;
  for (const auto& t : args.states) hs.push_back(oracle::to_vec(t));
  oracle::Dims dims{B, kInput, H, kOutput};
  oracle::OracleSequence want =
      oracle::sequence(name, oracle::params_by_name(cell, args.params), dims, xs, hs);

  SequenceResult<T> got = interpret_sequence(cell, args);
  ASSERT_EQ(got.outputs.size(), want.outputs.size());
  ASSERT_EQ(got.final_states.size(), want.final_states.size());
  for (std::size_t o = 0; o < want.outputs.size(); ++o) {
    const std::int64_t n = cell.graph.node(cell.outputs[o].value).shape.features();
    ASSERT_EQ(got.outputs[o].shape, (std::vector<std::int64_t>{steps, B, n}));
    for (std::int64_t t = 0; t < steps; ++t) {
      std::vector<T> at_t(got.outputs[o].data.begin() + t * B * n,
                          got.outputs[o].data.begin() + (t + 1) * B * n);
      EXPECT_TRUE(close_to(at_t, want.outputs[o][static_cast<std::size_t>(t)], tolerance<T>()))
          << "output " << cell.outputs[o].name << " at step " << t;
    }
  }
  for (std::size_t s = 0; s < want.final_states.size(); ++s) {
    EXPECT_EQ(got.final_states[s].shape, (std::vector<std::int64_t>{B, H}));
    EXPECT_TRUE(close_to(got.final_states[s].data, want.final_states[s], tolerance<T>()))
        << "final state " << cell.leaf_name(cell.states[s]);
  }
}

TEST_P(ReferenceCellSequence, MatchesF64Loops) {
  const auto& [name, dtype, B, H, steps] = GetParam();
  std::uint64_t seed = seed_of(name, B, H, steps);
  SCOPED_TRACE("seed " + std::to_string(seed));
  if (dtype == DType::f64)
    check_sequence<double>(GetParam(), seed);
  else
    check_sequence<float>(GetParam(), seed);
}

INSTANTIATE_TEST_SUITE_P(
    Cells, ReferenceCellSequence,
    ::testing::Combine(::testing::ValuesIn(kCells), ::testing::Values(DType::f64, DType::f32),
                       ::testing::Values(std::int64_t{1}, std::int64_t{3}),
                       ::testing::Values(std::int64_t{1}, std::int64_t{7}, std::int64_t{33}),
                       ::testing::Values(std::int64_t{1}, std::int64_t{2}, std::int64_t{5})),
    seq_case_name);

// ---------------------------------------------------------------------------------------------
// The cells' parameter lists: arguments are passed by position, so the declaration order is part
// of the interface (and must not depend on the compiler's order of evaluating operands).

std::vector<std::string> param_names(const Cell& cell) {
  std::vector<std::string> names;
  for (ValueId v : cell.params) names.emplace_back(cell.leaf_name(v));
  return names;
}

std::vector<std::string> param_shapes(const Cell& cell) {
  std::vector<std::string> shapes;
  for (ValueId v : cell.params) shapes.push_back(to_string(cell.graph.node(v).shape));
  return shapes;
}

TEST(StandardCells, ParametersInPyTorchOrderAndShapes) {
  using ::testing::ElementsAre;
  const std::int64_t I = 5, H = 7, O = 3;
  Cell elman = cells::elman(I, H);
  EXPECT_THAT(param_names(elman), ElementsAre("W_ih", "W_hh", "b_ih", "b_hh"));
  EXPECT_THAT(param_shapes(elman), ElementsAre("[7,5]", "[7,7]", "[7]", "[7]"));

  Cell proj = cells::elman_proj(I, H, O);
  EXPECT_THAT(param_names(proj), ElementsAre("W_ih", "W_hh", "b_ih", "b_hh", "W_ho", "b_ho"));
  EXPECT_THAT(param_shapes(proj), ElementsAre("[7,5]", "[7,7]", "[7]", "[7]", "[3,7]", "[3]"));

  Cell lstm = cells::lstm(I, H);
  EXPECT_THAT(param_names(lstm), ElementsAre("W_ih", "W_hh", "b_ih", "b_hh"));
  EXPECT_THAT(param_shapes(lstm), ElementsAre("[28,5]", "[28,7]", "[28]", "[28]"));

  Cell gru = cells::gru(I, H);
  EXPECT_THAT(param_names(gru), ElementsAre("W_ih", "W_hh", "b_ih", "b_hh"));
  EXPECT_THAT(param_shapes(gru), ElementsAre("[21,5]", "[21,7]", "[21]", "[21]"));

  Cell ln = cells::lnlstm(I, H);
  EXPECT_THAT(param_names(ln), ElementsAre("W_ih", "W_hh", "ln_i_weight", "ln_i_bias",
                                           "ln_h_weight", "ln_h_bias", "ln_c_weight", "ln_c_bias"));
  EXPECT_THAT(param_shapes(ln),
              ElementsAre("[28,5]", "[28,7]", "[28]", "[28]", "[28]", "[28]", "[7]", "[7]"));

  Cell peep = cells::peephole(I, H);
  EXPECT_THAT(param_names(peep),
              ElementsAre("W_ih", "W_hh", "b_ih", "b_hh", "w_ci", "w_cf", "w_co"));
  EXPECT_THAT(param_shapes(peep),
              ElementsAre("[28,5]", "[28,7]", "[28]", "[28]", "[7]", "[7]", "[7]"));
}

TEST(StandardCells, RolesAndDtype) {
  for (const auto& name : kCells) {
    SCOPED_TRACE(name);
    Cell cell = make_cell(name, 7, DType::f64);
    EXPECT_EQ(cell.graph.dtype(), DType::f64);
    EXPECT_EQ(cell.name, name);
    ASSERT_EQ(cell.inputs.size(), 1u);
    EXPECT_EQ(cell.leaf_name(cell.inputs[0]), "x");
    bool two_states = name == "lstm" || name == "lnlstm" || name == "peephole";
    ASSERT_EQ(cell.states.size(), two_states ? 2u : 1u);
    EXPECT_EQ(cell.leaf_name(cell.states[0]), "h");
    if (two_states) {
      EXPECT_EQ(cell.leaf_name(cell.states[1]), "c");
    }
    ASSERT_EQ(cell.outputs.size(), 1u);
    EXPECT_EQ(cell.outputs[0].name, name == "elman_proj" ? "y" : "h");
  }
}

// ---------------------------------------------------------------------------------------------
// The comparison has teeth: cells that differ from the documented equations only in a detail
// (gate order, where the reset gate applies) are told apart from the oracle.

template <class BuildGates>
Cell custom_lstm(BuildGates order) {
  CellBuilder b("lstm", DType::f64);
  Val x = b.input("x", kInput);
  Val h = b.state("h", 7);
  Val c = b.state("c", 7);
  Val W_ih = b.param("W_ih", {28, kInput});
  Val W_hh = b.param("W_hh", {28, 7});
  Val b_ih = b.param("b_ih", {28});
  Val b_hh = b.param("b_hh", {28});
  std::vector<Val> g = chunk(linear(x, W_ih, b_ih) + linear(h, W_hh, b_hh), 4);
  order(g);
  Val c2 = sigmoid(g[1]) * c + sigmoid(g[0]) * tanh(g[2]);
  Val h2 = sigmoid(g[3]) * tanh(c2);
  b.output("h", h2);
  b.next(h, h2);
  b.next(c, c2);
  return std::move(b).finish();
}

// Largest relative difference between a cell's step and the named oracle's, on random data.
double max_error_against_oracle(const Cell& cell, const std::string& oracle_name) {
  Random rng(42);
  StepArgs<double> args;
  fill_args<double>(cell, 3, 0, rng, args.inputs, args.states, args.params);
  std::vector<Vec> xs{oracle::to_vec(args.inputs[0])}, hs;
  for (const auto& t : args.states) hs.push_back(oracle::to_vec(t));
  auto want = oracle::step(oracle_name, oracle::params_by_name(cell, args.params),
                           {3, kInput, 7, kOutput}, xs, hs);
  auto got = interpret_step(cell, args);
  double worst = 0;
  for (std::size_t s = 0; s < want.next_states.size(); ++s)
    for (std::size_t e = 0; e < want.next_states[s].size(); ++e)
      worst = std::max(worst, std::abs(got.next_states[s].data[e] - want.next_states[s][e]));
  return worst;
}

TEST(OracleSensitivity, LstmGateOrderMatters) {
  // The unchanged order agrees; swapping g and o (i,f,o,g) must not.
  EXPECT_LT(max_error_against_oracle(custom_lstm([](std::vector<Val>&) {}), "lstm"), 1e-12);
  EXPECT_GT(max_error_against_oracle(
                custom_lstm([](std::vector<Val>& g) { std::swap(g[2], g[3]); }), "lstm"),
            1e-3);
}

TEST(OracleSensitivity, GruResetGateAfterHiddenBias) {
  // The same GRU with the reset gate applied before the hidden bias,
  // n = tanh(W_in x + b_in + r * (W_hn h) + b_hn), must be told apart from PyTorch's.
  CellBuilder b("gru", DType::f64);
  Val x = b.input("x", kInput);
  Val h = b.state("h", 7);
  Val W_ih = b.param("W_ih", {21, kInput});
  Val W_hh = b.param("W_hh", {21, 7});
  Val b_ih = b.param("b_ih", {21});
  Val b_hh = b.param("b_hh", {21});
  auto gi = chunk(linear(x, W_ih, b_ih), 3);
  auto gh = chunk(linear(h, W_hh), 3);
  auto bh = split(b_hh, {7, 7, 7});
  Val r = sigmoid(gi[0] + gh[0] + bh[0]);
  Val z = sigmoid(gi[1] + gh[1] + bh[1]);
  Val n = tanh(gi[2] + r * gh[2] + bh[2]);
  Val h2 = (1.0 - z) * n + z * h;
  b.output("h", h2);
  b.next(h, h2);
  EXPECT_GT(max_error_against_oracle(std::move(b).finish(), "gru"), 1e-3);
}

}  // namespace
}  // namespace cellfuse
