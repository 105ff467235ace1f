#pragma once
// The text form of a cell, which is also the on-disk format (*.cell):
//
//   # an Elman cell
//   cell elman f32 {
//     %x = input : [B,4]
//     %h = state : [B,3]
//     %W_ih = param : [3,4]
//     %0 = linear %x, %W_ih : [B,3]
//     %1 = tanh %0 : [B,3]
//     output h = %1
//     next h = %1
//   }
//
// A statement is `%name = op operands {attrs} : shape`. A leaf (input, state, param) takes its
// name from the result and must give its shape; elsewhere the shape is optional and, when given,
// checked. Intermediate names are free (`%gates`); the printer numbers them in order, and error
// messages name values as the text does. Attributes (`{start=0, len=4}`) come in any order; a
// constant is `%c = constant {value=1e-05} : [B,1]`, its value any decimal, `inf`, `-inf` or
// `nan` (an f32 cell stores the nearest float). `#` starts a comment. Every cell prints and
// parses back to a structurally equal cell.
#include <string>
#include <string_view>

#include "compiler/ir/graph.h"

namespace cellfuse {

std::string print_cell(const Cell& cell);

// Throws Error "source:line:column: message" on malformed text or an invalid cell.
Cell parse_cell(std::string_view text, std::string_view source = "<text>");

// Reads and parses a .cell file; the error names the file.
Cell load_cell_file(const std::string& path);

// Formats a float attribute as the shortest text that parses back to the same bits; for f32,
// the shortest that parses back to the same float (constants of an f32 cell are floats).
std::string format_number(double value, DType dtype = DType::f64);

}  // namespace cellfuse
