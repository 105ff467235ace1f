// The reference interpreter's argument checking (a wrong count, a wrong shape, an inconsistent
// batch: each a cellfuse::Error naming the leaf and both shapes), and the deterministic random
// arguments of runtime/random_args that every target is fed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "compiler/ir/error.h"
#include "frontend/builder.h"
#include "frontend/cells.h"
#include "runtime/random_args.h"
#include "runtime/reference/interpreter.h"

namespace cellfuse {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr std::int64_t kB = 3, kI = 5, kH = 7;

// Valid one-step arguments for lstm(kI, kH), batch kB: W_ih [28,5], W_hh [28,7], b_ih, b_hh [28].
template <class T>
StepArgs<T> lstm_step_args(const Cell& cell) {
  SequenceArgs<T> seq = random_sequence_args<T>(cell, 1, kB, 11);
  StepArgs<T> step{{}, seq.states, seq.params};
  HostTensor<T> x({kB, kI});
  x.data = seq.inputs[0].data;  // the one step of a T=1 sequence
  step.inputs.push_back(std::move(x));
  return step;
}

// The message of the cellfuse::Error that `f` throws, or a failure.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw something other than cellfuse::Error: " << e.what();
    return {};
  }
  ADD_FAILURE() << "did not throw";
  return {};
}

class InterpreterArgs : public ::testing::Test {
 protected:
  Cell cell_ = cells::lstm(kI, kH, DType::f64);
  StepArgs<double> args_ = lstm_step_args<double>(cell_);

  std::string step_error() {
    return error_of([&] { (void)interpret_step(cell_, args_); });
  }
};

TEST_F(InterpreterArgs, ValidArgumentsRun) {
  // The baseline each case below changes one thing of.
  StepResult<double> r = interpret_step(cell_, args_);
  ASSERT_EQ(r.outputs.size(), 1u);
  EXPECT_EQ(r.outputs[0].shape, (std::vector<std::int64_t>{kB, kH}));
  ASSERT_EQ(r.next_states.size(), 2u);
}

TEST_F(InterpreterArgs, TooFewParams) {
  args_.params.pop_back();
  EXPECT_THAT(step_error(), AllOf(HasSubstr("4 param(s)"), HasSubstr("3 were given")));
}

TEST_F(InterpreterArgs, TooManyParams) {
  args_.params.push_back(args_.params.back());
  EXPECT_THAT(step_error(), AllOf(HasSubstr("4 param(s)"), HasSubstr("5 were given")));
}

TEST_F(InterpreterArgs, WrongNumberOfStatesAndInputs) {
  auto saved = args_;
  args_.states.pop_back();
  EXPECT_THAT(step_error(), AllOf(HasSubstr("2 state(s)"), HasSubstr("1 were given")));
  args_ = saved;
  args_.inputs.push_back(args_.inputs[0]);
  EXPECT_THAT(step_error(), AllOf(HasSubstr("1 input(s)"), HasSubstr("2 were given")));
}

TEST_F(InterpreterArgs, ParamOfWrongShapeNamesLeafAndShapes) {
  args_.params[0] = HostTensor<double>({4 * kH, kI - 1});
  EXPECT_THAT(step_error(), AllOf(HasSubstr("%W_ih"), HasSubstr("[28,5]"), HasSubstr("[28,4]")));
}

TEST_F(InterpreterArgs, TransposedWeightNamesLeafAndShapes) {
  args_.params[1] = HostTensor<double>({kH, 4 * kH});
  EXPECT_THAT(step_error(), AllOf(HasSubstr("%W_hh"), HasSubstr("[28,7]"), HasSubstr("[7,28]")));
}

TEST_F(InterpreterArgs, BiasOfWrongRankNamesLeafAndShapes) {
  args_.params[3] = HostTensor<double>({1, 4 * kH});
  EXPECT_THAT(step_error(), AllOf(HasSubstr("%b_hh"), HasSubstr("[28]"), HasSubstr("[1,28]")));
}

TEST_F(InterpreterArgs, InputOfWrongFeaturesNamesLeafAndShapes) {
  args_.inputs[0] = HostTensor<double>({kB, kH});  // hidden size where the input size belongs
  EXPECT_THAT(step_error(), AllOf(HasSubstr("%x"), HasSubstr("[3,5]"), HasSubstr("[3,7]")));
}

TEST_F(InterpreterArgs, InconsistentBatchNamesLeafAndShapes) {
  // The batch comes from x (3); a state with another batch is the one named.
  args_.states[0] = HostTensor<double>({kB - 1, kH});
  EXPECT_THAT(step_error(), AllOf(HasSubstr("%h"), HasSubstr("[3,7]"), HasSubstr("[2,7]")));
  args_ = lstm_step_args<double>(cell_);
  args_.states[1] = HostTensor<double>({kB + 1, kH});
  EXPECT_THAT(step_error(), AllOf(HasSubstr("%c"), HasSubstr("[3,7]"), HasSubstr("[4,7]")));
}

TEST_F(InterpreterArgs, DataThatDoesNotFillTheShape) {
  args_.params[2].data.pop_back();  // shape [28] still claimed, 27 values held
  EXPECT_THAT(step_error(), AllOf(HasSubstr("%b_ih"), HasSubstr("[28]"), HasSubstr("28 values"),
                                  HasSubstr("27")));
}

TEST(InterpreterArgsF32, WrongShapeInF32Too) {
  Cell cell = cells::gru(kI, kH, DType::f32);
  SequenceArgs<float> args = random_sequence_args<float>(cell, 2, kB, 5);
  args.params[0] = HostTensor<float>({3 * kH, kI + 1});
  EXPECT_THAT(error_of([&] { (void)interpret_sequence(cell, args); }),
              AllOf(HasSubstr("%W_ih"), HasSubstr("[21,5]"), HasSubstr("[21,6]")));
}

// ---------------------------------------------------------------------------------------------
// Sequences.

TEST(InterpreterSequenceArgs, InconsistentBatchAndMissingTimeAxis) {
  Cell cell = cells::lstm(kI, kH, DType::f64);
  SequenceArgs<double> args = random_sequence_args<double>(cell, 4, kB, 3);
  ASSERT_NO_THROW((void)interpret_sequence(cell, args));

  auto bad = args;
  bad.states[0] = HostTensor<double>({kB + 2, kH});
  EXPECT_THAT(error_of([&] { (void)interpret_sequence(cell, bad); }),
              AllOf(HasSubstr("%h"), HasSubstr("[3,7]"), HasSubstr("[5,7]")));

  bad = args;
  bad.inputs[0] = HostTensor<double>({kB, kI});  // one step's [B,I] where [T,B,I] belongs
  EXPECT_THAT(error_of([&] { (void)interpret_sequence(cell, bad); }),
              AllOf(HasSubstr("%x"), HasSubstr("[3,5,5]"), HasSubstr("got [3,5]")));

  bad = args;
  bad.params[3] = HostTensor<double>({4 * kH + 1});
  EXPECT_THAT(error_of([&] { (void)interpret_sequence(cell, bad); }),
              AllOf(HasSubstr("%b_hh"), HasSubstr("[28]"), HasSubstr("[29]")));
}

TEST(InterpreterSequenceArgs, InputsOfDifferentLengths) {
  CellBuilder b("two", DType::f64);
  Val x = b.input("x", 3);
  Val u = b.input("u", 2);
  Val h = b.state("h", 3);
  Val W = b.param("W", {3, 2});
  Val h2 = tanh(x + linear(u, W) + h);
  b.output("h", h2);
  b.next(h, h2);
  Cell cell = std::move(b).finish();
  SequenceArgs<double> args = random_sequence_args<double>(cell, 4, 2, 9);
  ASSERT_NO_THROW((void)interpret_sequence(cell, args));
  args.inputs[1] = HostTensor<double>({3, 2, 2});  // T = 3 where x has T = 4
  EXPECT_THAT(error_of([&] { (void)interpret_sequence(cell, args); }),
              AllOf(HasSubstr("%u"), HasSubstr("[4,2,2]"), HasSubstr("[3,2,2]")));
}

// A cell without per-step inputs runs for `steps` steps and needs it.
TEST(InterpreterSequenceArgs, StepsWithoutInputs) {
  CellBuilder b("decay", DType::f64);
  Val h = b.state("h", 4);
  Val h2 = h * 0.5;
  b.output("h", h2);
  b.next(h, h2);
  Cell cell = std::move(b).finish();

  SequenceArgs<double> args;
  HostTensor<double> h0({2, 4});
  for (std::size_t e = 0; e < h0.data.size(); ++e) h0.data[e] = 1.0 + static_cast<double>(e);
  args.states.push_back(h0);
  EXPECT_THAT(error_of([&] { (void)interpret_sequence(cell, args); }),
              HasSubstr("sequence length"));

  args.steps = 3;
  SequenceResult<double> r = interpret_sequence(cell, args);
  ASSERT_EQ(r.outputs[0].shape, (std::vector<std::int64_t>{3, 2, 4}));
  for (std::size_t e = 0; e < h0.data.size(); ++e) {
    EXPECT_EQ(r.outputs[0].data[e], h0.data[e] * 0.5);
    EXPECT_EQ(r.outputs[0].data[8 + e], h0.data[e] * 0.25);
    EXPECT_EQ(r.final_states[0].data[e], h0.data[e] * 0.125);
  }
}

TEST(InterpreterSequenceArgs, NoBatchedArgumentAtAll) {
  CellBuilder b("bias_only", DType::f64);
  Val p = b.param("p", {4});
  b.output("y", broadcast(p));
  Cell cell = std::move(b).finish();
  StepArgs<double> args{{}, {}, {HostTensor<double>({4})}};
  EXPECT_THAT(error_of([&] { (void)interpret_step(cell, args); }), HasSubstr("batch size"));
}

// ---------------------------------------------------------------------------------------------
// runtime/random_args.

TEST(SplitMix64, ReferenceSequence) {
  // The first outputs of Vigna's reference splitmix64.c for seed 1234567: the same numbers on
  // every platform is the point of using it.
  SplitMix64 rng(1234567);
  EXPECT_EQ(rng.next(), 6457827717110365317ULL);
  EXPECT_EQ(rng.next(), 3203168211198807973ULL);
  EXPECT_EQ(rng.next(), 9817491932198370423ULL);
}

TEST(SplitMix64, UniformCoversTheHalfOpenRange) {
  SplitMix64 rng(99);
  double lo = 1e9, hi = -1e9, total = 0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    double v = rng.uniform(-2.0, 3.0);
    ASSERT_GE(v, -2.0);
    ASSERT_LT(v, 3.0);
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    total += v;
  }
  EXPECT_LT(lo, -1.99);
  EXPECT_GT(hi, 2.99);
  EXPECT_NEAR(total / n, 0.5, 0.02);  // the standard error of the mean is 0.005
}

template <class T>
void expect_same_args(const SequenceArgs<T>& a, const SequenceArgs<T>& b) {
  ASSERT_EQ(a.steps, b.steps);
  auto same = [](const std::vector<HostTensor<T>>& x, const std::vector<HostTensor<T>>& y) {
    ASSERT_EQ(x.size(), y.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      EXPECT_EQ(x[i].shape, y[i].shape);
      EXPECT_EQ(x[i].data, y[i].data);
    }
  };
  same(a.inputs, b.inputs);
  same(a.states, b.states);
  same(a.params, b.params);
}

TEST(RandomArgs, SameSeedSameNumbers) {
  Cell cell = cells::lnlstm(kI, kH, DType::f64);
  expect_same_args(random_sequence_args<double>(cell, 5, kB, 42),
                   random_sequence_args<double>(cell, 5, kB, 42));
}

TEST(RandomArgs, DifferentSeedDifferentNumbers) {
  Cell cell = cells::lstm(kI, kH, DType::f64);
  auto a = random_sequence_args<double>(cell, 5, kB, 42);
  auto b = random_sequence_args<double>(cell, 5, kB, 43);
  for (std::size_t i = 0; i < a.inputs.size(); ++i) EXPECT_NE(a.inputs[i].data, b.inputs[i].data);
  for (std::size_t i = 0; i < a.states.size(); ++i) EXPECT_NE(a.states[i].data, b.states[i].data);
  for (std::size_t i = 0; i < a.params.size(); ++i) EXPECT_NE(a.params[i].data, b.params[i].data);
}

TEST(RandomArgs, F32IsTheF64NumbersRounded) {
  // So that checksums of f32 and f64 runs of one seed are comparable.
  Cell c64 = cells::gru(kI, kH, DType::f64);
  Cell c32 = cells::gru(kI, kH, DType::f32);
  auto d = random_sequence_args<double>(c64, 2, kB, 8);
  auto f = random_sequence_args<float>(c32, 2, kB, 8);
  ASSERT_EQ(d.params.size(), f.params.size());
  for (std::size_t i = 0; i < d.params.size(); ++i)
    for (std::size_t e = 0; e < d.params[i].data.size(); ++e)
      ASSERT_EQ(f.params[i].data[e], static_cast<float>(d.params[i].data[e]));
  for (std::size_t e = 0; e < d.inputs[0].data.size(); ++e)
    ASSERT_EQ(f.inputs[0].data[e], static_cast<float>(d.inputs[0].data[e]));
}

TEST(RandomArgs, ShapesAndRanges) {
  const std::int64_t T = 4;
  Cell cell = cells::peephole(kI, kH, DType::f64);
  auto args = random_sequence_args<double>(cell, T, kB, 1);
  EXPECT_EQ(args.steps, T);
  ASSERT_EQ(args.inputs.size(), 1u);
  EXPECT_EQ(args.inputs[0].shape, (std::vector<std::int64_t>{T, kB, kI}));
  ASSERT_EQ(args.states.size(), 2u);
  auto within = [](const HostTensor<double>& t, double bound) {
    double biggest = 0;
    for (double v : t.data) {
      EXPECT_GE(v, -bound);
      EXPECT_LT(v, bound);
      biggest = std::max(biggest, std::abs(v));
    }
    // Not squeezed into a corner of the range, and not zeros.
    EXPECT_GT(biggest, 0.5 * bound);
  };
  within(args.inputs[0], 1.0);
  for (const auto& s : args.states) {
    EXPECT_EQ(s.shape, (std::vector<std::int64_t>{kB, kH}));
    within(s, 1.0);
  }
  ASSERT_EQ(args.params.size(), cell.params.size());
  for (std::size_t i = 0; i < args.params.size(); ++i) {
    SCOPED_TRACE(std::string(cell.leaf_name(cell.params[i])));
    const Shape& s = cell.graph.node(cell.params[i]).shape;
    std::vector<std::int64_t> dims(s.dims.begin(), s.dims.begin() + s.rank);
    EXPECT_EQ(args.params[i].shape, dims);
    // PyTorch's RNN initialization, with n the parameter's last dimension.
    within(args.params[i], 1.0 / std::sqrt(static_cast<double>(s.features())));
  }
}

TEST(RandomArgs, EveryBuiltinCellRunsOnThem) {
  for (const char* spec : {"elman:5,7", "elman_proj:5,7,3", "lstm:5,7", "gru:5,7", "lnlstm:5,7",
                           "peephole:5,7"}) {
    SCOPED_TRACE(spec);
    Cell cell = cells::by_spec(spec, DType::f64);
    auto args = random_sequence_args<double>(cell, 3, 2, 77);
    SequenceResult<double> r = interpret_sequence(cell, args);
    ASSERT_EQ(r.final_states.size(), cell.states.size());
    for (const auto& o : r.outputs)
      for (double v : o.data) ASSERT_TRUE(std::isfinite(v));
  }
}

TEST(RandomArgs, BadSizesAreErrors) {
  Cell cell = cells::lstm(kI, kH, DType::f64);
  EXPECT_THAT(error_of([&] { (void)random_sequence_args<double>(cell, 0, 1, 1); }),
              HasSubstr("T=0"));
  EXPECT_THAT(error_of([&] { (void)random_sequence_args<double>(cell, 1, 0, 1); }),
              HasSubstr("B=0"));
  // Refused before any allocation is tried.
  Cell big = cells::lstm(1000, 1000, DType::f32);
  EXPECT_THAT(error_of([&] { (void)random_sequence_args<float>(big, 1000000, 10000, 1); }),
              HasSubstr("GB"));
}

}  // namespace
}  // namespace cellfuse
