#pragma once
// The library of standard cells, each written with the builder exactly as a user would write it.
// Parameter names and layouts follow PyTorch (nn.LSTM gate order i,f,g,o; nn.GRU order r,z,n
// with the reset gate applied after the hidden bias), so weights copy over one to one.
#include <cstdint>
#include <string>
#include <string_view>

#include "compiler/ir/graph.h"

namespace cellfuse::cells {

// h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh); output h'.
Cell elman(std::int64_t input, std::int64_t hidden, DType dtype = DType::f32);
// As elman, plus an output projection y = h' W_ho^T + b_ho (output size `output`).
Cell elman_proj(std::int64_t input, std::int64_t hidden, std::int64_t output,
                DType dtype = DType::f32);
// nn.LSTM's cell: states h, c; output h'.
Cell lstm(std::int64_t input, std::int64_t hidden, DType dtype = DType::f32);
// nn.GRU's cell: state h; output h'.
Cell gru(std::int64_t input, std::int64_t hidden, DType dtype = DType::f32);
// LayerNorm-LSTM: layer norm (affine, eps 1e-5) on x W_ih^T, on h W_hh^T and on the new cell.
Cell lnlstm(std::int64_t input, std::int64_t hidden, DType dtype = DType::f32);
// Peephole LSTM (Gers & Schmidhuber): i and f see c, o sees the new c, through diagonal weights.
Cell peephole(std::int64_t input, std::int64_t hidden, DType dtype = DType::f32);

// A built-in cell by spec: "lstm", "lstm:512" (input = hidden = 512), "lstm:256,512" (input 256,
// hidden 512), "elman_proj:256,128,64" (input, hidden, output). Sizes default to 32.
Cell by_spec(std::string_view spec, DType dtype = DType::f32);
// True when `name` (before any ':') names a built-in cell.
bool is_builtin(std::string_view spec);
// "elman, elman_proj, lstm, gru, lnlstm, peephole"
std::string builtin_names();

}  // namespace cellfuse::cells
