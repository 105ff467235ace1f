#include "frontend/cells.h"

#include <charconv>
#include <vector>

#include "compiler/ir/error.h"
#include "frontend/builder.h"

namespace cellfuse::cells {
namespace {

struct LstmWeights {
  Val W_ih, W_hh, b_ih, b_hh;
};

LstmWeights gate_weights(CellBuilder& b, std::int64_t gates, std::int64_t input,
                         std::int64_t hidden) {
  return {b.param("W_ih", {gates, input}), b.param("W_hh", {gates, hidden}),
          b.param("b_ih", {gates}), b.param("b_hh", {gates})};
}

Val elman_step(CellBuilder& b, std::int64_t input, std::int64_t hidden, Val& h) {
  Val x = b.input("x", input);
  h = b.state("h", hidden);
  auto w = gate_weights(b, hidden, input, hidden);
  Val from_input = linear(x, w.W_ih, w.b_ih);
  Val from_state = linear(h, w.W_hh, w.b_hh);
  return tanh(from_input + from_state);
}

}  // namespace

// Every cell below makes one node per statement where an expression would make several: the
// operands of one call are evaluated in an unspecified order, and node order must not depend on
// the compiler (it is the cell's printed form and its cache key).

Cell elman(std::int64_t input, std::int64_t hidden, DType dtype) {
  CellBuilder b("elman", dtype);
  Val h;
  Val h2 = elman_step(b, input, hidden, h);
  b.output("h", h2);
  b.next(h, h2);
  return std::move(b).finish();
}

Cell elman_proj(std::int64_t input, std::int64_t hidden, std::int64_t output, DType dtype) {
  CellBuilder b("elman_proj", dtype);
  Val h;
  Val h2 = elman_step(b, input, hidden, h);
  // One declaration a statement: the operands of one call are evaluated in an unspecified order,
  // and the declaration order is the order in which the parameters are passed.
  Val W_ho = b.param("W_ho", {output, hidden});
  Val b_ho = b.param("b_ho", {output});
  Val y = linear(h2, W_ho, b_ho);
  b.output("y", y);
  b.next(h, h2);
  return std::move(b).finish();
}

Cell lstm(std::int64_t input, std::int64_t hidden, DType dtype) {
  CellBuilder b("lstm", dtype);
  Val x = b.input("x", input);
  Val h = b.state("h", hidden);
  Val c = b.state("c", hidden);
  auto w = gate_weights(b, 4 * hidden, input, hidden);
  Val from_input = linear(x, w.W_ih, w.b_ih);
  Val from_state = linear(h, w.W_hh, w.b_hh);
  auto gates = chunk(from_input + from_state, 4);
  Val i = sigmoid(gates[0]);
  Val f = sigmoid(gates[1]);
  Val g = tanh(gates[2]);
  Val o = sigmoid(gates[3]);
  Val kept = f * c;
  Val written = i * g;
  Val c2 = kept + written;
  Val h2 = o * tanh(c2);
  b.output("h", h2);
  b.next(h, h2);
  b.next(c, c2);
  return std::move(b).finish();
}

Cell gru(std::int64_t input, std::int64_t hidden, DType dtype) {
  CellBuilder b("gru", dtype);
  Val x = b.input("x", input);
  Val h = b.state("h", hidden);
  auto w = gate_weights(b, 3 * hidden, input, hidden);
  auto gi = chunk(linear(x, w.W_ih, w.b_ih), 3);
  auto gh = chunk(linear(h, w.W_hh, w.b_hh), 3);
  Val r = sigmoid(gi[0] + gh[0]);
  Val z = sigmoid(gi[1] + gh[1]);
  Val n = tanh(gi[2] + r * gh[2]);
  Val fresh = (1.0 - z) * n;
  Val kept = z * h;
  Val h2 = fresh + kept;
  b.output("h", h2);
  b.next(h, h2);
  return std::move(b).finish();
}

Cell lnlstm(std::int64_t input, std::int64_t hidden, DType dtype) {
  CellBuilder b("lnlstm", dtype);
  Val x = b.input("x", input);
  Val h = b.state("h", hidden);
  Val c = b.state("c", hidden);
  Val W_ih = b.param("W_ih", {4 * hidden, input});
  Val W_hh = b.param("W_hh", {4 * hidden, hidden});
  // Each parameter is declared in a statement of its own: the operands of one expression are
  // evaluated in an unspecified order, and the declaration order is the order of the arguments,
  // so it must not depend on the compiler.
  struct Affine {
    Val weight, bias;
  };
  auto norm_params = [&](const std::string& name, std::int64_t n) {
    Val weight = b.param(name + "_weight", {n});
    Val bias = b.param(name + "_bias", {n});
    return Affine{weight, bias};
  };
  Affine ln_i = norm_params("ln_i", 4 * hidden);
  Affine ln_h = norm_params("ln_h", 4 * hidden);
  Affine ln_c = norm_params("ln_c", hidden);
  Val x_gates = layer_norm(linear(x, W_ih), ln_i.weight, ln_i.bias);
  Val h_gates = layer_norm(linear(h, W_hh), ln_h.weight, ln_h.bias);
  auto g4 = chunk(x_gates + h_gates, 4);
  Val i = sigmoid(g4[0]);
  Val f = sigmoid(g4[1]);
  Val g = tanh(g4[2]);
  Val o = sigmoid(g4[3]);
  Val kept = f * c;
  Val written = i * g;
  Val c2 = layer_norm(kept + written, ln_c.weight, ln_c.bias);
  Val h2 = o * tanh(c2);
  b.output("h", h2);
  b.next(h, h2);
  b.next(c, c2);
  return std::move(b).finish();
}

Cell peephole(std::int64_t input, std::int64_t hidden, DType dtype) {
  CellBuilder b("peephole", dtype);
  Val x = b.input("x", input);
  Val h = b.state("h", hidden);
  Val c = b.state("c", hidden);
  auto w = gate_weights(b, 4 * hidden, input, hidden);
  Val w_ci = b.param("w_ci", {hidden}), w_cf = b.param("w_cf", {hidden});
  Val w_co = b.param("w_co", {hidden});
  Val from_input = linear(x, w.W_ih, w.b_ih);
  Val from_state = linear(h, w.W_hh, w.b_hh);
  auto gates = chunk(from_input + from_state, 4);
  Val i = sigmoid(gates[0] + w_ci * c);
  Val f = sigmoid(gates[1] + w_cf * c);
  Val kept = f * c;
  Val written = i * tanh(gates[2]);
  Val c2 = kept + written;
  Val o = sigmoid(gates[3] + w_co * c2);
  Val h2 = o * tanh(c2);
  b.output("h", h2);
  b.next(h, h2);
  b.next(c, c2);
  return std::move(b).finish();
}

namespace {

struct Builtin {
  std::string_view name;
  int max_sizes;
};
constexpr Builtin kBuiltins[] = {{"elman", 2}, {"elman_proj", 3}, {"lstm", 2},
                                 {"gru", 2},   {"lnlstm", 2},     {"peephole", 2}};

std::vector<std::int64_t> parse_sizes(std::string_view spec, std::string_view text) {
  std::vector<std::int64_t> sizes;
  while (!text.empty()) {
    auto comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    std::int64_t v = 0;
    auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (ec != std::errc() || ptr != item.data() + item.size() || v < 1 || v > (1 << 20))
      throw Error("cell '" + std::string(spec) + "': size '" + std::string(item) +
                  "' is not a whole number from 1 to 1048576");
    sizes.push_back(v);
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
  }
  return sizes;
}

}  // namespace

bool is_builtin(std::string_view spec) {
  std::string_view name = spec.substr(0, spec.find(':'));
  for (const auto& b : kBuiltins)
    if (b.name == name) return true;
  return false;
}

std::string builtin_names() {
  std::string out;
  for (const auto& b : kBuiltins) out += (out.empty() ? "" : ", ") + std::string(b.name);
  return out;
}

Cell by_spec(std::string_view spec, DType dtype) {
  auto colon = spec.find(':');
  std::string_view name = spec.substr(0, colon);
  std::vector<std::int64_t> sizes =
      colon == std::string_view::npos ? std::vector<std::int64_t>{} : parse_sizes(spec, spec.substr(colon + 1));
  const Builtin* found = nullptr;
  for (const auto& b : kBuiltins)
    if (b.name == name) found = &b;
  if (!found)
    throw Error("unknown cell '" + std::string(name) + "' (built-in cells: " + builtin_names() +
                "; or give a .cell file)");
  if (colon != std::string_view::npos && sizes.empty())
    throw Error("cell '" + std::string(spec) + "': no sizes after ':'");
  if (static_cast<int>(sizes.size()) > found->max_sizes)
    throw Error("cell '" + std::string(spec) + "': " + std::string(name) + " takes at most " +
                std::to_string(found->max_sizes) + " sizes");
  std::int64_t input = sizes.empty() ? 32 : sizes[0];
  std::int64_t hidden = sizes.size() >= 2 ? sizes[1] : input;
  std::int64_t output = sizes.size() >= 3 ? sizes[2] : hidden;
  if (name == "elman") return elman(input, hidden, dtype);
  if (name == "elman_proj") return elman_proj(input, hidden, output, dtype);
  if (name == "lstm") return lstm(input, hidden, dtype);
  if (name == "gru") return gru(input, hidden, dtype);
  if (name == "lnlstm") return lnlstm(input, hidden, dtype);
  return peephole(input, hidden, dtype);
}

}  // namespace cellfuse::cells
