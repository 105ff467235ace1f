// Every kind of user mistake ends in a cellfuse::Error whose message names the op, the values and
// their shapes, or the line:column of the text. One test per kind; nothing crashes or aborts.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "compiler/ir/error.h"
#include "compiler/ir/text.h"
#include "compiler/ir/verifier.h"
#include "frontend/builder.h"

namespace cellfuse {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// The message of the Error that parsing `text` throws (the source is called "t.cell").
std::string parse_error(std::string_view text) {
  try {
    Cell cell = parse_cell(text, "t.cell");
    ADD_FAILURE() << "parsed without an error:\n" << text;
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a cellfuse::Error: " << e.what();
  }
  return "";
}

// The message of the Error that `f` throws.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a cellfuse::Error: " << e.what();
  }
  return "";
}

// A cell whose body (statements after two leaves) is `body`; lines 1..3 are the header, so the
// body's first line is line 4.
std::string cell_with(std::string_view body) {
  return "cell t f32 {\n  %x = input : [B,4]\n  %h = state : [B,3]\n" + std::string(body) +
         "  next h = %h\n}\n";
}

// ---------------------------------------------------------------------------------------------
// Shape mismatch.

TEST(Errors, ShapeMismatchNamesTheOpTheValuesAndTheShapes) {
  CellBuilder b("c");
  Val x = b.input("x", 4);
  Val h = b.state("h", 3);
  std::string msg = error_of([&] { (void)(x + h); });
  EXPECT_THAT(msg, AllOf(StartsWith("add:"), HasSubstr("shape mismatch"), HasSubstr("%x [B,4]"),
                         HasSubstr("%h [B,3]")));
}

TEST(Errors, ShapeMismatchInTextNamesTheTextsValues) {
  // Intermediate values are named as the text names them, not by an internal number.
  std::string msg = parse_error(cell_with("  %gates = tanh %x\n  %y = mul %gates, %h\n"));
  EXPECT_THAT(msg, AllOf(StartsWith("t.cell:5:8: mul:"), HasSubstr("shape mismatch"),
                         HasSubstr("%gates [B,4]"), HasSubstr("%h [B,3]")));
}

TEST(Errors, ShapeMismatchOfCatRows) {
  CellBuilder b("c");
  Val x = b.input("x", 4);
  Val v = b.param("v", {4});
  std::string msg = error_of([&] { cat({x, v}); });
  EXPECT_THAT(msg, AllOf(StartsWith("cat:"), HasSubstr("%x [B,4]"), HasSubstr("%v [4]")));
}

TEST(Errors, DeclaredShapeDisagreesWithTheOperands) {
  std::string msg = parse_error(cell_with("  %y = tanh %x : [B,5]\n"));
  EXPECT_THAT(msg, AllOf(StartsWith("t.cell:4:8: tanh:"), HasSubstr("declared shape [B,5]"),
                         HasSubstr("[B,4]")));
}

TEST(Errors, SliceOutOfRange) {
  std::string msg = parse_error(cell_with("  %y = slice %x {start=3, len=2}\n"));
  EXPECT_THAT(msg, AllOf(StartsWith("t.cell:4:8: slice:"), HasSubstr("start=3 len=2"),
                         HasSubstr("%x [B,4]")));
}

// ---------------------------------------------------------------------------------------------
// Wrong arity.

TEST(Errors, WrongArityInText) {
  std::string msg = parse_error(cell_with("  %y = tanh %x, %x\n"));
  EXPECT_EQ(msg, "t.cell:4:8: tanh: expects 1 operand(s), got 2");
  msg = parse_error(cell_with("  %y = add %x\n"));
  EXPECT_EQ(msg, "t.cell:4:8: add: expects 2 operand(s), got 1");
  msg = parse_error(cell_with("  %y = linear %x\n"));
  EXPECT_EQ(msg, "t.cell:4:8: linear: expects 2 to 3 operand(s), got 1");
  msg = parse_error(cell_with("  %y = cat\n"));
  EXPECT_EQ(msg, "t.cell:4:8: cat: expects at least 1 operand(s), got 0");
}

TEST(Errors, WrongArityInTheGraph) {
  Cell cell;
  ValueId x = cell.add_input("x", 4);
  std::string msg = error_of([&] { cell.graph.add(OpKind::where, {x, x}); });
  EXPECT_EQ(msg, "where: expects 3 operand(s), got 2");
  msg =
      error_of([&] { cell.graph.add(OpKind::input, {x}, {std::string("y")}, Shape::batched(4)); });
  EXPECT_EQ(msg, "input: expects 0 operand(s), got 1");
}

TEST(Errors, WrongAttributesInTheGraph) {
  Cell cell;
  ValueId x = cell.add_input("x", 4);
  EXPECT_THAT(error_of([&] { cell.graph.add(OpKind::slice, {x}, {std::int64_t{0}}); }),
              HasSubstr("slice: expects 2 attribute(s), got 1"));
  EXPECT_THAT(error_of([&] {
                cell.graph.add(OpKind::slice, {x}, {0.5, std::int64_t{1}});
              }),
              HasSubstr("slice: attribute start must be an integer"));
  EXPECT_THAT(error_of([&] { cell.graph.add(OpKind::expand, {x}, {std::string("n")}); }),
              HasSubstr("expand: attribute n must be an integer"));
  EXPECT_THAT(error_of([&] { cell.graph.add(OpKind::tanh, {ValueId{77}}); }),
              HasSubstr("tanh: operand 0 is not a value of this graph"));
}

// ---------------------------------------------------------------------------------------------
// Unknown op.

TEST(Errors, UnknownOp) {
  std::string msg = parse_error(cell_with("  %y = frobnicate %x\n"));
  EXPECT_EQ(msg, "t.cell:4:8: unknown op 'frobnicate'");
}

// ---------------------------------------------------------------------------------------------
// A value used before it is defined.

TEST(Errors, ValueUsedBeforeItIsDefined) {
  std::string msg = parse_error(cell_with("  %y = tanh %z\n  %z = tanh %x\n"));
  EXPECT_EQ(msg, "t.cell:4:13: %z is used before it is defined");
  msg = parse_error(cell_with("  %y = add %x, %nowhere\n"));
  EXPECT_EQ(msg, "t.cell:4:16: %nowhere is used before it is defined");
  msg = parse_error(cell_with("  output o = %later\n  %later = tanh %x\n"));
  EXPECT_EQ(msg, "t.cell:4:14: %later is used before it is defined");
  // A value may not use itself.
  msg = parse_error(cell_with("  %y = tanh %y\n"));
  EXPECT_EQ(msg, "t.cell:4:13: %y is used before it is defined");
}

// ---------------------------------------------------------------------------------------------
// A state never updated.

TEST(Errors, StateNeverUpdatedInText) {
  std::string msg =
      parse_error("cell t f32 {\n  %x = input : [B,4]\n  %h = state : [B,3]\n  output o = %x\n}\n");
  EXPECT_THAT(msg, AllOf(StartsWith("t.cell:5:1: "), HasSubstr("state %h [B,3] is never updated"),
                         HasSubstr("next h = ...")));
}

TEST(Errors, StateNeverUpdatedInTheBuilder) {
  CellBuilder b("c");
  Val x = b.input("x", 4);
  b.state("h", 3);
  b.output("y", x);
  std::string msg = error_of([&] { (void)std::move(b).finish(); });
  EXPECT_THAT(msg, HasSubstr("state %h [B,3] is never updated"));
}

// ---------------------------------------------------------------------------------------------
// A parameter of the wrong shape.

TEST(Errors, WeightWithTheWrongInnerDimension) {
  CellBuilder b("c");
  Val x = b.input("x", 4);
  Val W = b.param("W", {3, 5});
  std::string msg = error_of([&] { linear(x, W); });
  EXPECT_THAT(msg, AllOf(StartsWith("linear:"), HasSubstr("inner dimensions differ"),
                         HasSubstr("%x [B,4]"), HasSubstr("%W [3,5]"), HasSubstr("expects 5")));

  msg = parse_error(cell_with("  %W = param : [3,5]\n  %y = linear %x, %W\n"));
  EXPECT_THAT(
      msg, AllOf(StartsWith("t.cell:5:8: linear:"), HasSubstr("%x [B,4]"), HasSubstr("%W [3,5]")));
}

TEST(Errors, BiasOfTheWrongLength) {
  CellBuilder b("c");
  Val x = b.input("x", 4);
  Val W = b.param("W", {3, 4});
  Val bias = b.param("b", {4});
  std::string msg = error_of([&] { linear(x, W, bias); });
  EXPECT_THAT(msg, AllOf(StartsWith("linear:"), HasSubstr("the bias %b [4] must be [3]"),
                         HasSubstr("%W [3,4]")));
}

TEST(Errors, WeightThatIsNotAMatrix) {
  CellBuilder b("c");
  Val x = b.input("x", 4);
  Val v = b.param("v", {4});
  EXPECT_THAT(error_of([&] { matmul(x, v); }),
              AllOf(StartsWith("matmul:"), HasSubstr("%v [4] must be an unbatched matrix")));
  EXPECT_THAT(error_of([&] { linear(x, x); }),
              AllOf(StartsWith("linear:"), HasSubstr("%x [B,4] must be an unbatched matrix")));
}

TEST(Errors, LeafShapesAreChecked) {
  EXPECT_THAT(parse_error(cell_with("  %W = param : [B,4]\n")),
              AllOf(StartsWith("t.cell:4:8: "), HasSubstr("param %W: shape [B,4]"),
                    HasSubstr("must not be batched")));
  EXPECT_THAT(parse_error(cell_with("  %y = input : [4]\n")),
              AllOf(StartsWith("t.cell:4:8: "), HasSubstr("input %y: shape [4]"),
                    HasSubstr("must be [B,n]")));
  EXPECT_THAT(parse_error(cell_with("  %y = input\n")),
              AllOf(StartsWith("t.cell:4:8: "), HasSubstr("input %y: a shape must be given")));
  EXPECT_THAT(parse_error(cell_with("  %W = param : [99999999,2]\n")),
              HasSubstr("has a dimension out of range"));
  CellBuilder b("c");
  EXPECT_THAT(error_of([&] { b.param("W", {1, 2, 3}); }), HasSubstr("give one or two dimensions"));
  EXPECT_THAT(error_of([&] { b.input("x", 0); }), HasSubstr("out of range"));
}

// ---------------------------------------------------------------------------------------------
// Malformed text: each error at its exact line:column.

TEST(Errors, MissingEquals) {
  EXPECT_EQ(parse_error(cell_with("  %y tanh %x\n")), "t.cell:4:6: expected '=', found 'tanh'");
  EXPECT_EQ(parse_error(cell_with("  output o %x\n")), "t.cell:4:12: expected '=', found '%x'");
}

TEST(Errors, BadDimension) {
  EXPECT_EQ(parse_error(cell_with("  %y = tanh %x : [B,0]\n")),
            "t.cell:4:21: expected a positive dimension, found '0'");
  EXPECT_EQ(parse_error(cell_with("  %y = tanh %x : [B,k]\n")),
            "t.cell:4:21: expected a dimension (a number or B), found 'k'");
  EXPECT_EQ(parse_error(cell_with("  %y = tanh %x : [B,-4]\n")),
            "t.cell:4:21: expected a positive dimension, found '-4'");
  EXPECT_EQ(parse_error(cell_with("  %y = tanh %x : [B,4,4]\n")),
            "t.cell:4:23: a shape has at most 2 dimensions");
  EXPECT_EQ(parse_error(cell_with("  %y = tanh %x : []\n")),
            "t.cell:4:19: expected a dimension (a number or B), found ']'");
  EXPECT_EQ(parse_error(cell_with("  %y = tanh %x : [B,4\n")),
            "t.cell:5:3: expected ',', found 'next'");
  EXPECT_EQ(parse_error(cell_with("  %y = tanh %x : [B,99999999999999999999999]\n")),
            "t.cell:4:21: expected a positive dimension, found '99999999999999999999999'");
}

TEST(Errors, UnterminatedString) {
  EXPECT_EQ(parse_error(cell_with("  %y = tanh %x \"abc\n")), "t.cell:4:16: unterminated string");
  EXPECT_EQ(parse_error("cell t f32 {\n  \"abc"), "t.cell:2:3: unterminated string");
}

TEST(Errors, StringWhereNoneBelongs) {
  EXPECT_EQ(parse_error(cell_with("  %y = tanh %x\n  \"x\"\n")),
            "t.cell:5:3: expected a statement (%name = op ..., output, or next), found string "
            "\"x\"");
  EXPECT_THAT(parse_error(cell_with("  %y = slice %x {start=\"0\", len=1}\n")),
              StartsWith("t.cell:4:24: expected a number, found string \"0\""));
}

TEST(Errors, UnexpectedCharacter) {
  EXPECT_EQ(parse_error(cell_with("  %y = tanh %x @\n")), "t.cell:4:16: unexpected character '@'");
  EXPECT_EQ(parse_error("cell t f32 {\n\x01}"), "t.cell:2:1: unexpected character '\\x01'");
  EXPECT_EQ(parse_error(cell_with("  % = tanh %x\n")),
            "t.cell:4:3: expected a value name after '%'");
}

TEST(Errors, MissingClosingBrace) {
  EXPECT_EQ(parse_error("cell t f32 {\n  %x = input : [B,4]\n  output o = %x\n"),
            "t.cell:4:1: expected '}' to close the cell, found end of input");
  EXPECT_EQ(parse_error("cell t f32 {\n  %x = input : [B,4]\n  output o = %x"),
            "t.cell:3:16: expected '}' to close the cell, found end of input");
}

TEST(Errors, TrailingGarbage) {
  EXPECT_EQ(parse_error("cell t f32 {\n  %x = input : [B,4]\n  output o = %x\n}\nextra\n"),
            "t.cell:5:1: expected end of input after the cell, found 'extra'");
  EXPECT_EQ(parse_error("cell t f32 {\n  %x = input : [B,4]\n  output o = %x\n} }"),
            "t.cell:4:3: expected end of input after the cell, found '}'");
}

TEST(Errors, DuplicateDefinition) {
  EXPECT_EQ(parse_error(cell_with("  %y = tanh %x\n  %y = exp %x\n")),
            "t.cell:5:3: %y is defined twice");
  EXPECT_EQ(parse_error(cell_with("  %x = input : [B,4]\n")), "t.cell:4:3: %x is defined twice");
  EXPECT_EQ(parse_error(cell_with("  output o = %x\n  output o = %x\n")),
            "t.cell:5:3: output 'o': declared twice");
  EXPECT_THAT(parse_error(cell_with("  next h = %h\n")),
              AllOf(StartsWith("t.cell:5:3: "), HasSubstr("state %h is updated twice")));
}

TEST(Errors, UnknownAttribute) {
  EXPECT_EQ(parse_error(cell_with("  %y = slice %x {start=0, size=2}\n")),
            "t.cell:4:27: slice has no attribute 'size'");
  EXPECT_EQ(parse_error(cell_with("  %y = tanh %x {n=2}\n")),
            "t.cell:4:17: tanh has no attribute 'n'");
  // A leaf's name comes from its result, never from an attribute.
  EXPECT_EQ(parse_error(cell_with("  %y = input {name=\"y\"} : [B,4]\n")),
            "t.cell:4:15: input has no attribute 'name'");
}

TEST(Errors, MissingAttribute) {
  EXPECT_EQ(parse_error(cell_with("  %y = slice %x {start=0}\n")),
            "t.cell:4:8: slice needs attribute 'len'");
  EXPECT_EQ(parse_error(cell_with("  %y = expand %x\n")), "t.cell:4:8: expand needs attribute 'n'");
  EXPECT_EQ(parse_error(cell_with("  %c = constant : [B,4]\n")),
            "t.cell:4:8: constant needs attribute 'value'");
}

TEST(Errors, BadAttributeValues) {
  EXPECT_EQ(parse_error(cell_with("  %y = slice %x {start=0, start=1, len=1}\n")),
            "t.cell:4:27: attribute 'start' is given twice");
  EXPECT_EQ(parse_error(cell_with("  %y = slice %x {start=1.5, len=1}\n")),
            "t.cell:4:24: expected an integer, found '1.5'");
  EXPECT_EQ(parse_error(cell_with("  %c = constant {value=1e} : [B,4]\n")),
            "t.cell:4:24: expected a number, found '1e'");
  EXPECT_EQ(parse_error(cell_with("  %c = constant {value=+-1} : [B,4]\n")),
            "t.cell:4:24: expected a number, found '+-1'");
  EXPECT_EQ(parse_error(cell_with("  %c = constant {value=1e999} : [B,4]\n")),
            "t.cell:4:24: number '1e999' is out of range");
  EXPECT_EQ(parse_error(cell_with("  %c = constant {value=x} : [B,4]\n")),
            "t.cell:4:24: expected a number, found 'x'");
  EXPECT_EQ(parse_error(cell_with("  %y = slice %x {start=0, len=1,}\n")),
            "t.cell:4:33: expected an attribute name, found '}'");
  EXPECT_EQ(parse_error(cell_with("  %y = slice %x {start 0, len=1}\n")),
            "t.cell:4:24: expected '=', found '0'");
  EXPECT_THAT(parse_error(cell_with("  %s = sum %x\n  %y = expand %s {n=0}\n")),
              AllOf(StartsWith("t.cell:5:8: expand:"), HasSubstr("n=0 is out of range")));
}

TEST(Errors, BadHeader) {
  EXPECT_EQ(parse_error(""), "t.cell:1:1: expected 'cell', found end of input");
  EXPECT_EQ(parse_error("# only a comment\n"), "t.cell:2:1: expected 'cell', found end of input");
  EXPECT_EQ(parse_error("graph t f32 {}"), "t.cell:1:1: expected 'cell', found 'graph'");
  EXPECT_EQ(parse_error("cell t f16 {}"), "t.cell:1:8: expected a dtype (f32 or f64), found 'f16'");
  EXPECT_EQ(parse_error("cell f32 {}"), "t.cell:1:10: expected a dtype (f32 or f64), found '{'");
  EXPECT_EQ(parse_error("cell t f32 ["), "t.cell:1:12: expected '{', found '['");
}

TEST(Errors, BadStatements) {
  EXPECT_EQ(parse_error(cell_with("  tanh %x\n")),
            "t.cell:4:3: expected a statement (%name = op ..., output, or next), found 'tanh'");
  EXPECT_EQ(parse_error(cell_with("  %y = %x\n")), "t.cell:4:8: expected an op name, found '%x'");
  EXPECT_EQ(parse_error(cell_with("  %y = add %x, 3\n")),
            "t.cell:4:16: expected an operand (%name), found '3'");
  EXPECT_EQ(parse_error(cell_with("  output = %x\n")), "t.cell:4:10: expected a name, found '='");
  EXPECT_EQ(parse_error(cell_with("  next q = %x\n")),
            "t.cell:4:8: next q: there is no state named q");
  EXPECT_EQ(parse_error(cell_with("  next x = %x\n")),
            "t.cell:4:8: next x: there is no state named x");
}

TEST(Errors, OutputAndNextChecksInText) {
  EXPECT_THAT(parse_error(cell_with("  %W = param : [3,4]\n  output w = %W\n")),
              AllOf(StartsWith("t.cell:5:3: "), HasSubstr("output 'w': %W [3,4] is not batched")));
  EXPECT_EQ(parse_error("cell t f32 {\n  %x = input : [B,4]\n  %h = state : [B,3]\n"
                        "  next h = %x\n}\n"),
            "t.cell:4:3: next: state %h [B,3] cannot take %x [B,4]: shape mismatch");
  EXPECT_THAT(parse_error("cell t f32 {\n  %x = input : [B,4]\n}\n"),
              AllOf(StartsWith("t.cell:3:1: "), HasSubstr("neither outputs nor states")));
  EXPECT_THAT(parse_error("cell t f32 {\n  %0 = input : [B,4]\n  output o = %0\n}\n"),
              AllOf(StartsWith("t.cell:2:8: "), HasSubstr("'0' is not a valid name")));
}

// ---------------------------------------------------------------------------------------------
// Builder-level errors.

TEST(BuilderErrors, OutputNotBatched) {
  CellBuilder b("c");
  b.input("x", 2);
  Val W = b.param("W", {2, 2});
  EXPECT_EQ(error_of([&] { b.output("w", W); }),
            "output 'w': %W [2,2] is not batched; per-step outputs must be [B,n]");
  Val s = sum(b.param("v", {3}));
  EXPECT_THAT(error_of([&] { b.output("s", s); }), HasSubstr("[1] is not batched"));
}

TEST(BuilderErrors, NextOfANonState) {
  CellBuilder b("c");
  Val x = b.input("x", 2);
  b.state("h", 2);
  EXPECT_EQ(error_of([&] { b.next(x, x); }), "next: %x is not a state");
  EXPECT_EQ(error_of([&] { b.next(tanh(x), x); }), "next: %0 is not a state");
}

TEST(BuilderErrors, NextTwice) {
  CellBuilder b("c");
  Val x = b.input("x", 2);
  Val h = b.state("h", 2);
  b.next(h, tanh(x));
  EXPECT_EQ(error_of([&] { b.next(h, x); }), "next: state %h is updated twice");
}

TEST(BuilderErrors, NextOfTheWrongShape) {
  CellBuilder b("c");
  Val x = b.input("x", 5);
  Val h = b.state("h", 2);
  EXPECT_EQ(error_of([&] { b.next(h, x); }),
            "next: state %h [B,2] cannot take %x [B,5]: shape mismatch");
}

TEST(BuilderErrors, DuplicateLeafName) {
  CellBuilder b("c");
  b.input("x", 2);
  EXPECT_EQ(error_of([&] { b.input("x", 2); }), "input %x: the name is already declared");
  EXPECT_EQ(error_of([&] { b.state("x", 2); }), "state %x: the name is already declared");
  EXPECT_EQ(error_of([&] { b.param("x", {2}); }), "param %x: the name is already declared");
  Val h = b.state("h", 2);
  b.output("o", h);
  EXPECT_EQ(error_of([&] { b.output("o", h); }), "output 'o': declared twice");
}

TEST(BuilderErrors, InvalidNames) {
  EXPECT_EQ(error_of([] { CellBuilder b("my cell"); }), "cell name 'my cell' is not a valid name");
  EXPECT_EQ(error_of([] { CellBuilder b(""); }), "cell name '' is not a valid name");
  CellBuilder b("c");
  EXPECT_EQ(error_of([&] { b.input("1x", 2); }),
            "input: '1x' is not a valid name (letters, digits, _ and .)");
  EXPECT_EQ(error_of([&] { b.state("h-1", 2); }),
            "state: 'h-1' is not a valid name (letters, digits, _ and .)");
  EXPECT_EQ(error_of([&] { b.param("", {2}); }),
            "param: '' is not a valid name (letters, digits, _ and .)");
  EXPECT_THAT(error_of([&] { b.param(std::string(300, 'a'), {2}); }),
              HasSubstr("is not a valid name"));
  Val x = b.input("x", 2);
  EXPECT_EQ(error_of([&] { b.output("bad name", x); }), "output 'bad name': not a valid name");
  EXPECT_EQ(error_of([&] { b.output("", x); }), "output '': not a valid name");
}

TEST(BuilderErrors, CellThatComputesNothing) {
  CellBuilder b("c");
  b.input("x", 2);
  EXPECT_THAT(error_of([&] { (void)std::move(b).finish(); }),
              HasSubstr("neither outputs nor states"));
}

TEST(BuilderErrors, ValuesOfDifferentCells) {
  CellBuilder a("a"), b("b");
  Val x = a.input("x", 2);
  Val y = b.input("y", 2);
  EXPECT_EQ(error_of([&] { (void)(x + y); }), "operands come from different cells");
  EXPECT_EQ(error_of([&] { cat({x, y}); }), "operands come from different cells");
  EXPECT_EQ(error_of([&] { b.output("o", x); }), "output 'o': value of another cell");
  Val h = b.state("h", 2);
  EXPECT_EQ(error_of([&] { b.next(h, x); }), "next: value of another cell");
}

TEST(BuilderErrors, EmptyValue) {
  CellBuilder b("c");
  Val x = b.input("x", 2);
  Val empty;
  EXPECT_EQ(error_of([&] { (void)tanh(empty); }), "use of an empty cellfuse::Val");
  EXPECT_EQ(error_of([&] { (void)(x * empty); }), "use of an empty cellfuse::Val");
  EXPECT_EQ(error_of([&] { b.output("o", empty); }), "use of an empty cellfuse::Val");
  EXPECT_EQ(error_of([&] { cat({}); }), "cat: needs at least one operand");
}

TEST(BuilderErrors, ChunkSplitAndClamp) {
  CellBuilder b("c");
  Val x = b.input("x", 10);
  EXPECT_EQ(error_of([&] { chunk(x, 3); }),
            "chunk: %x [B,10] has 10 features, which do not split into 3 equal chunks");
  EXPECT_THAT(error_of([&] { chunk(x, 0); }), HasSubstr("do not split into 0"));
  EXPECT_EQ(error_of([&] {
              split(x, {3, 3});
            }),
            "split: sizes add up to 6 but %x [B,10] has 10 features");
  EXPECT_THAT(error_of([&] { clamp(x, 1.0, -1.0); }), HasSubstr("clamp: lo=1"));
  EXPECT_THAT(error_of([&] { slice(x, 8, 4); }),
              AllOf(StartsWith("slice:"), HasSubstr("start=8 len=4"), HasSubstr("%x [B,10]")));
  EXPECT_THAT(error_of([&] { expand(x, 3); }),
              AllOf(StartsWith("expand:"), HasSubstr("only a single column")));
  EXPECT_THAT(error_of([&] { broadcast(x); }),
              AllOf(StartsWith("broadcast:"), HasSubstr("only a vector")));
}

TEST(CellErrors, RolesGivenValuesFromNowhere) {
  // The Cell API under the builder: a bad value id is a user error, not a crash.
  Cell cell;
  ValueId h = cell.add_state("h", 2);
  EXPECT_EQ(error_of([&] { cell.set_next(h, ValueId{42}); }),
            "next: state %h: the new value is not a value of this cell");
  EXPECT_EQ(error_of([&] { cell.set_next(ValueId{42}, h); }), "next: %<invalid> is not a state");
  EXPECT_EQ(error_of([&] { cell.add_output("o", ValueId{}); }),
            "output 'o': not a value of this cell");
  EXPECT_THAT(error_of([&] {
                cell.add_param("W", Shape{3, {1, 2}});
              }),
              HasSubstr("must have rank 1 or 2"));
  EXPECT_THAT(error_of([&] { cell.add_param("W", Shape{}); }), HasSubstr("must have rank 1 or 2"));
}

TEST(BuilderErrors, TooWideCat) {
  CellBuilder b("c");
  Val x = b.input("x", 1 << 23);
  EXPECT_THAT(error_of([&] {
                cat({x, x, x});
              }),
              AllOf(StartsWith("cat:"), HasSubstr("25165824 features")));
}

}  // namespace
}  // namespace cellfuse
