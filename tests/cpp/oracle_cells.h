#pragma once
// Independent f64 oracles for the standard cells: plain loops over std::vector<double> written
// from PyTorch's documented equations (nn.RNNCell, nn.LSTMCell, nn.GRUCell, the LayerNorm-LSTM of
// pytorch/benchmarks/fastrnns, Gers & Schmidhuber's peephole LSTM). They share nothing with the
// builder, the IR or the interpreter but the parameter names, so a test that compares against
// them checks the whole path from cell definition to result. Backend tests reuse them.
//
// Layout: every batched value is row-major [B, n]; W is [out, in] as in nn.Linear, so
// (x W^T)[b][j] = sum_k x[b][k] * W[j][k]. Parameters are looked up by name, never by position.
#include <cmath>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "compiler/ir/graph.h"
#include "runtime/tensor.h"

namespace cellfuse::oracle {

using Vec = std::vector<double>;

// Sizes of one cell application. `output` is used by elman_proj only.
struct Dims {
  std::int64_t batch = 1;
  std::int64_t input = 1;
  std::int64_t hidden = 1;
  std::int64_t output = 1;
};

// Parameter values by name, as the cell declares them (row-major).
using Params = std::map<std::string, Vec, std::less<>>;

// What one step gives: per-step outputs and next states, in the cell's declaration order
// (h for elman/gru/elman_proj's state, then c where the cell has one; y for elman_proj's output).
struct OracleStep {
  std::vector<Vec> outputs;
  std::vector<Vec> next_states;
};

// A whole sequence: outputs[o][t] is output o at step t; final states after the last step.
struct OracleSequence {
  std::vector<std::vector<Vec>> outputs;
  std::vector<Vec> final_states;
};

namespace detail {

inline std::size_t idx(std::int64_t i) { return static_cast<std::size_t>(i); }

// The parameter, checked to hold exactly `count` values: a cell that declares a parameter with
// another shape than the documented one fails here, not with a confusing mismatch later.
inline const Vec& get(const Params& p, std::string_view name, std::int64_t count) {
  auto it = p.find(name);
  if (it == p.end()) throw std::invalid_argument("oracle: no parameter named " + std::string(name));
  if (it->second.size() != idx(count))
    throw std::invalid_argument("oracle: parameter " + std::string(name) + " has " +
                                std::to_string(it->second.size()) + " values, expected " +
                                std::to_string(count));
  return it->second;
}

inline void check_size(const Vec& v, std::int64_t count, const char* what) {
  if (v.size() != idx(count))
    throw std::invalid_argument(std::string("oracle: ") + what + " has " +
                                std::to_string(v.size()) + " values, expected " +
                                std::to_string(count));
}

inline double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// x [B,K] times W^T (W [N,K]) plus an optional bias [N]: nn.Linear.
inline Vec linear(const Vec& x, std::int64_t B, std::int64_t K, const Vec& W, std::int64_t N,
                  const Vec* bias) {
  Vec y(idx(B * N), 0.0);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t j = 0; j < N; ++j) {
      double acc = 0.0;
      for (std::int64_t k = 0; k < K; ++k) acc += x[idx(b * K + k)] * W[idx(j * K + k)];
      y[idx(b * N + j)] = acc + (bias ? (*bias)[idx(j)] : 0.0);
    }
  return y;
}

// F.layer_norm over each row of x [B,N] with affine weight and bias: biased variance, eps inside
// the square root.
inline Vec layer_norm(const Vec& x, std::int64_t B, std::int64_t N, const Vec& weight,
                      const Vec& bias, double eps = 1e-5) {
  Vec y(x.size());
  for (std::int64_t b = 0; b < B; ++b) {
    double mean = 0.0;
    for (std::int64_t j = 0; j < N; ++j) mean += x[idx(b * N + j)];
    mean /= static_cast<double>(N);
    double var = 0.0;
    for (std::int64_t j = 0; j < N; ++j) {
      double d = x[idx(b * N + j)] - mean;
      var += d * d;
    }
    var /= static_cast<double>(N);
    double inv = 1.0 / std::sqrt(var + eps);
    for (std::int64_t j = 0; j < N; ++j)
      y[idx(b * N + j)] = (x[idx(b * N + j)] - mean) * inv * weight[idx(j)] + bias[idx(j)];
  }
  return y;
}

// Element [b][gate * H + j] of a [B, G*H] gate matrix: gate blocks follow one another.
inline double gate(const Vec& gates, std::int64_t G, std::int64_t H, std::int64_t b,
                   std::int64_t g, std::int64_t j) {
  return gates[idx(b * G * H + g * H + j)];
}

}  // namespace detail

// nn.RNNCell (tanh): h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh). Output h'.
inline OracleStep elman_step(const Params& p, const Dims& d, const Vec& x, const Vec& h) {
  using namespace detail;
  const std::int64_t B = d.batch, I = d.input, H = d.hidden;
  check_size(x, B * I, "x");
  check_size(h, B * H, "h");
  const Vec& b_ih = get(p, "b_ih", H);
  const Vec& b_hh = get(p, "b_hh", H);
  Vec a = linear(x, B, I, get(p, "W_ih", H * I), H, &b_ih);
  Vec r = linear(h, B, H, get(p, "W_hh", H * H), H, &b_hh);
  Vec h2(idx(B * H));
  for (std::size_t e = 0; e < h2.size(); ++e) h2[e] = std::tanh(a[e] + r[e]);
  return {{h2}, {h2}};
}

// Elman with an output projection: as elman, and y = h' W_ho^T + b_ho. Output y, state h'.
inline OracleStep elman_proj_step(const Params& p, const Dims& d, const Vec& x, const Vec& h) {
  using namespace detail;
  OracleStep s = elman_step(p, d, x, h);
  const Vec& b_ho = get(p, "b_ho", d.output);
  Vec y = linear(s.next_states[0], d.batch, d.hidden, get(p, "W_ho", d.output * d.hidden),
                 d.output, &b_ho);
  return {{y}, {s.next_states[0]}};
}

// nn.LSTMCell: gates = x W_ih^T + b_ih + h W_hh^T + b_hh, split i, f, g, o;
// c' = σ(f) c + σ(i) tanh(g); h' = σ(o) tanh(c'). Output h'; states h', c'.
inline OracleStep lstm_step(const Params& p, const Dims& d, const Vec& x, const Vec& h,
                            const Vec& c) {
  using namespace detail;
  const std::int64_t B = d.batch, I = d.input, H = d.hidden;
  check_size(x, B * I, "x");
  check_size(h, B * H, "h");
  check_size(c, B * H, "c");
  const Vec& b_ih = get(p, "b_ih", 4 * H);
  const Vec& b_hh = get(p, "b_hh", 4 * H);
  Vec gx = linear(x, B, I, get(p, "W_ih", 4 * H * I), 4 * H, &b_ih);
  Vec gh = linear(h, B, H, get(p, "W_hh", 4 * H * H), 4 * H, &b_hh);
  Vec h2(idx(B * H)), c2(idx(B * H));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t j = 0; j < H; ++j) {
      auto pre = [&](std::int64_t g) { return gate(gx, 4, H, b, g, j) + gate(gh, 4, H, b, g, j); };
      double i = sigmoid(pre(0)), f = sigmoid(pre(1)), g = std::tanh(pre(2)), o = sigmoid(pre(3));
      double cn = f * c[idx(b * H + j)] + i * g;
      c2[idx(b * H + j)] = cn;
      h2[idx(b * H + j)] = o * std::tanh(cn);
    }
  return {{h2}, {h2, c2}};
}

// nn.GRUCell: r = σ(W_ir x + b_ir + W_hr h + b_hr), z = σ(W_iz x + b_iz + W_hz h + b_hz),
// n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) n + z h. Output h'.
inline OracleStep gru_step(const Params& p, const Dims& d, const Vec& x, const Vec& h) {
  using namespace detail;
  const std::int64_t B = d.batch, I = d.input, H = d.hidden;
  check_size(x, B * I, "x");
  check_size(h, B * H, "h");
  const Vec& b_ih = get(p, "b_ih", 3 * H);
  const Vec& b_hh = get(p, "b_hh", 3 * H);
  Vec gx = linear(x, B, I, get(p, "W_ih", 3 * H * I), 3 * H, &b_ih);
  Vec gh = linear(h, B, H, get(p, "W_hh", 3 * H * H), 3 * H, &b_hh);
  Vec h2(idx(B * H));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t j = 0; j < H; ++j) {
      double r = sigmoid(gate(gx, 3, H, b, 0, j) + gate(gh, 3, H, b, 0, j));
      double z = sigmoid(gate(gx, 3, H, b, 1, j) + gate(gh, 3, H, b, 1, j));
      double n = std::tanh(gate(gx, 3, H, b, 2, j) + r * gate(gh, 3, H, b, 2, j));
      h2[idx(b * H + j)] = (1.0 - z) * n + z * h[idx(b * H + j)];
    }
  return {{h2}, {h2}};
}

// LayerNorm-LSTM (pytorch/benchmarks/fastrnns/custom_lstms.py, LayerNormLSTMCell):
// gates = LN_i(x W_ih^T) + LN_h(h W_hh^T) (no linear biases), split i, f, g, o;
// c' = LN_c(σ(f) c + σ(i) tanh(g)); h' = σ(o) tanh(c'). Output h'; states h', c'.
inline OracleStep lnlstm_step(const Params& p, const Dims& d, const Vec& x, const Vec& h,
                              const Vec& c) {
  using namespace detail;
  const std::int64_t B = d.batch, I = d.input, H = d.hidden;
  check_size(x, B * I, "x");
  check_size(h, B * H, "h");
  check_size(c, B * H, "c");
  Vec gx = layer_norm(linear(x, B, I, get(p, "W_ih", 4 * H * I), 4 * H, nullptr), B, 4 * H,
                      get(p, "ln_i_weight", 4 * H), get(p, "ln_i_bias", 4 * H));
  Vec gh = layer_norm(linear(h, B, H, get(p, "W_hh", 4 * H * H), 4 * H, nullptr), B, 4 * H,
                      get(p, "ln_h_weight", 4 * H), get(p, "ln_h_bias", 4 * H));
  Vec c_raw(idx(B * H)), o_gate(idx(B * H));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t j = 0; j < H; ++j) {
      auto pre = [&](std::int64_t g) { return gate(gx, 4, H, b, g, j) + gate(gh, 4, H, b, g, j); };
      double i = sigmoid(pre(0)), f = sigmoid(pre(1)), g = std::tanh(pre(2));
      c_raw[idx(b * H + j)] = f * c[idx(b * H + j)] + i * g;
      o_gate[idx(b * H + j)] = sigmoid(pre(3));
    }
  Vec c2 = layer_norm(c_raw, B, H, get(p, "ln_c_weight", H), get(p, "ln_c_bias", H));
  Vec h2(idx(B * H));
  for (std::size_t e = 0; e < h2.size(); ++e) h2[e] = o_gate[e] * std::tanh(c2[e]);
  return {{h2}, {h2, c2}};
}

// Peephole LSTM (Gers & Schmidhuber), diagonal peepholes: with a = x W_ih^T + b_ih + h W_hh^T + b_hh
// split i, f, g, o: i = σ(a_i + w_ci c), f = σ(a_f + w_cf c), c' = f c + i tanh(a_g),
// o = σ(a_o + w_co c'), h' = o tanh(c'). Output h'; states h', c'.
inline OracleStep peephole_step(const Params& p, const Dims& d, const Vec& x, const Vec& h,
                                const Vec& c) {
  using namespace detail;
  const std::int64_t B = d.batch, I = d.input, H = d.hidden;
  check_size(x, B * I, "x");
  check_size(h, B * H, "h");
  check_size(c, B * H, "c");
  const Vec& b_ih = get(p, "b_ih", 4 * H);
  const Vec& b_hh = get(p, "b_hh", 4 * H);
  const Vec& w_ci = get(p, "w_ci", H);
  const Vec& w_cf = get(p, "w_cf", H);
  const Vec& w_co = get(p, "w_co", H);
  Vec gx = linear(x, B, I, get(p, "W_ih", 4 * H * I), 4 * H, &b_ih);
  Vec gh = linear(h, B, H, get(p, "W_hh", 4 * H * H), 4 * H, &b_hh);
  Vec h2(idx(B * H)), c2(idx(B * H));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t j = 0; j < H; ++j) {
      auto pre = [&](std::int64_t g) { return gate(gx, 4, H, b, g, j) + gate(gh, 4, H, b, g, j); };
      double cj = c[idx(b * H + j)];
      double i = sigmoid(pre(0) + w_ci[idx(j)] * cj);
      double f = sigmoid(pre(1) + w_cf[idx(j)] * cj);
      double cn = f * cj + i * std::tanh(pre(2));
      double o = sigmoid(pre(3) + w_co[idx(j)] * cn);
      c2[idx(b * H + j)] = cn;
      h2[idx(b * H + j)] = o * std::tanh(cn);
    }
  return {{h2}, {h2, c2}};
}

// One step of a standard cell by name ("elman", "elman_proj", "lstm", "gru", "lnlstm",
// "peephole"); inputs and states in the cell's declaration order ({x}; {h} or {h, c}).
inline OracleStep step(std::string_view cell, const Params& p, const Dims& d,
                       const std::vector<Vec>& inputs, const std::vector<Vec>& states) {
  auto want = [&](std::size_t n_states) {
    if (inputs.size() != 1 || states.size() != n_states)
      throw std::invalid_argument("oracle: " + std::string(cell) + " takes 1 input and " +
                                  std::to_string(n_states) + " state(s)");
  };
  if (cell == "elman") {
    want(1);
    return elman_step(p, d, inputs[0], states[0]);
  }
  if (cell == "elman_proj") {
    want(1);
    return elman_proj_step(p, d, inputs[0], states[0]);
  }
  if (cell == "gru") {
    want(1);
    return gru_step(p, d, inputs[0], states[0]);
  }
  if (cell == "lstm") {
    want(2);
    return lstm_step(p, d, inputs[0], states[0], states[1]);
  }
  if (cell == "lnlstm") {
    want(2);
    return lnlstm_step(p, d, inputs[0], states[0], states[1]);
  }
  if (cell == "peephole") {
    want(2);
    return peephole_step(p, d, inputs[0], states[0], states[1]);
  }
  throw std::invalid_argument("oracle: no oracle for cell " + std::string(cell));
}

// T steps: inputs[i][t] is input i at step t; each step's next states feed the following one.
inline OracleSequence sequence(std::string_view cell, const Params& p, const Dims& d,
                               const std::vector<std::vector<Vec>>& inputs,
                               std::vector<Vec> states) {
  const std::size_t steps = inputs.empty() ? 0 : inputs[0].size();
  OracleSequence out;
  for (std::size_t t = 0; t < steps; ++t) {
    std::vector<Vec> xs;
    for (const auto& in : inputs) xs.push_back(in.at(t));
    OracleStep s = step(cell, p, d, xs, states);
    out.outputs.resize(s.outputs.size());
    for (std::size_t o = 0; o < s.outputs.size(); ++o) out.outputs[o].push_back(s.outputs[o]);
    states = std::move(s.next_states);
  }
  out.final_states = std::move(states);
  return out;
}

// ---- Bridges from the runtime's tensors (so backend tests can feed the same arguments). ----

template <class T>
Vec to_vec(const HostTensor<T>& t) {
  return Vec(t.data.begin(), t.data.end());
}

// The cell's parameters by name, from arguments given in the cell's declaration order.
template <class T>
Params params_by_name(const Cell& cell, const std::vector<HostTensor<T>>& params) {
  if (params.size() != cell.params.size())
    throw std::invalid_argument("oracle: the cell has " + std::to_string(cell.params.size()) +
                                " params, " + std::to_string(params.size()) + " given");
  Params out;
  for (std::size_t i = 0; i < params.size(); ++i)
    out[std::string(cell.leaf_name(cell.params[i]))] = to_vec(params[i]);
  return out;
}

// Step t of a [T, B, n] sequence tensor.
template <class T>
Vec step_slice(const HostTensor<T>& seq, std::int64_t t) {
  if (seq.shape.size() != 3) throw std::invalid_argument("oracle: expected a [T,B,n] tensor");
  const auto n = static_cast<std::ptrdiff_t>(seq.shape[1] * seq.shape[2]);
  auto first = seq.data.begin() + static_cast<std::ptrdiff_t>(t) * n;
  return Vec(first, first + n);
}

}  // namespace cellfuse::oracle
