#pragma once
// Shared by the backend tests: run a cell on a backend and on the f64 reference interpreter with
// the same random arguments, and compare.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "cell_conversion.h"
#include "compiler/ir/graph.h"
#include "runtime/random_args.h"
#include "runtime/reference/bptt.h"
#include "runtime/reference/interpreter.h"

namespace cellfuse::testing_support {

// Sanitizer builds (Debug, ASan + UBSan) run the same checks on fewer cases: they are there to
// catch memory errors, which a handful of cases exercise as well as many.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

// ||got - want|| / ||want|| (or the absolute norm when `want` is all but zero), and every
// element finite where the reference is.
template <class T>
void expect_close(const HostTensor<T>& got, const HostTensor<double>& want, double tolerance,
                  const std::string& what) {
  ASSERT_EQ(got.shape, want.shape) << what;
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < want.data.size(); ++i) {
    double g = static_cast<double>(got.data[i]), w = want.data[i];
    ASSERT_EQ(std::isnan(g), std::isnan(w)) << what << " element " << i << ": " << g << " vs " << w;
    if (std::isnan(w) || std::isinf(w)) continue;
    diff += (g - w) * (g - w);
    norm += w * w;
  }
  double rel = std::sqrt(diff) / std::max(std::sqrt(norm), 1e-30);
  EXPECT_LE(rel, tolerance) << what << ": relative error " << rel;
}

template <class T>
void expect_matches(const SequenceResult<T>& got, const SequenceResult<double>& want, double tolerance,
                    const std::string& what) {
  ASSERT_EQ(got.outputs.size(), want.outputs.size()) << what;
  ASSERT_EQ(got.final_states.size(), want.final_states.size()) << what;
  for (std::size_t o = 0; o < want.outputs.size(); ++o)
    expect_close(got.outputs[o], want.outputs[o], tolerance, what + " output " + std::to_string(o));
  for (std::size_t s = 0; s < want.final_states.size(); ++s)
    expect_close(got.final_states[s], want.final_states[s], tolerance, what + " state " + std::to_string(s));
}

// Every gradient of a BPTT run (inputs, initial states, parameters) against the reference's.
template <class T>
void expect_grads(const SequenceGradients<T>& got, const SequenceGradients<double>& want, double tol,
                  const std::string& what) {
  ASSERT_EQ(got.inputs.size(), want.inputs.size()) << what;
  ASSERT_EQ(got.states.size(), want.states.size()) << what;
  ASSERT_EQ(got.params.size(), want.params.size()) << what;
  for (std::size_t i = 0; i < want.inputs.size(); ++i) expect_close(got.inputs[i], want.inputs[i], tol, what + " d input " + std::to_string(i));
  for (std::size_t i = 0; i < want.states.size(); ++i) expect_close(got.states[i], want.states[i], tol, what + " d state " + std::to_string(i));
  for (std::size_t i = 0; i < want.params.size(); ++i) expect_close(got.params[i], want.params[i], tol, what + " d param " + std::to_string(i));
}

}  // namespace cellfuse::testing_support
