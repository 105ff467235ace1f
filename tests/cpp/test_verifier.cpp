// The verifier on hand-broken cells, and the Graph underneath it: the op table generated from
// ops.def, hash-consing, shapes and the cell hash.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>
#include <string>

#include "compiler/ir/error.h"
#include "compiler/ir/text.h"
#include "compiler/ir/verifier.h"
#include "frontend/builder.h"
#include "frontend/cells.h"

namespace cellfuse {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::string verify_error(const Cell& cell) {
  try {
    verify(cell);
    ADD_FAILURE() << "verified without an error:\n" << print_cell(cell);
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a cellfuse::Error: " << e.what();
  }
  return "";
}

// An Elman-like cell built by hand, node by node, with its role vectors filled in directly: the
// way a pass builds one, and the way to break one on purpose.
struct HandCell {
  Cell cell{DType::f32};
  ValueId x, y, h, W, v, lin, act, small;

  HandCell() {
    Graph& g = cell.graph;
    cell.name = "hand";
    x = g.add_distinct(OpKind::input, {}, {std::string("x")}, Shape::batched(4));
    y = g.add_distinct(OpKind::input, {}, {std::string("y")}, Shape::batched(2));
    h = g.add_distinct(OpKind::state, {}, {std::string("h")}, Shape::batched(3));
    W = g.add_distinct(OpKind::param, {}, {std::string("W")}, Shape::matrix(3, 4));
    v = g.add_distinct(OpKind::param, {}, {std::string("v")}, Shape::vector(3));
    lin = g.add_distinct(OpKind::linear, {x, W, v});
    act = g.add_distinct(OpKind::tanh, {lin});
    small = g.add_distinct(OpKind::tanh, {y});
    cell.inputs = {x, y};
    cell.states = {h};
    cell.params = {W, v};
    cell.outputs = {{"out", act}};
    cell.next_states = {act};
  }
};

TEST(Verifier, AcceptsTheHandBuiltCell) {
  HandCell c;
  EXPECT_NO_THROW(verify(c.cell));
  EXPECT_TRUE(structurally_equal(parse_cell(print_cell(c.cell)), c.cell));
}

TEST(Verifier, AcceptsEveryStandardCell) {
  for (const char* spec :
       {"elman:3,5", "elman_proj:3,5,2", "lstm:1,1", "gru:7,33", "lnlstm:2,3", "peephole:4,4"})
    for (DType dtype : {DType::f32, DType::f64})
      EXPECT_NO_THROW(verify(cells::by_spec(spec, dtype)));
}

TEST(Verifier, MissingNextState) {
  HandCell c;
  c.cell.next_states[0] = ValueId{};
  EXPECT_EQ(verify_error(c.cell), "state %h [B,3] is never updated: give it a `next h = ...`");
}

TEST(Verifier, NextStateListOfTheWrongLength) {
  HandCell c;
  c.cell.next_states.clear();
  EXPECT_EQ(verify_error(c.cell), "the cell has 1 states but 0 next values");
  HandCell d;
  d.cell.next_states.push_back(d.act);
  EXPECT_EQ(verify_error(d.cell), "the cell has 1 states but 2 next values");
}

TEST(Verifier, NextStateOfTheWrongShape) {
  HandCell c;
  c.cell.next_states[0] = c.small;
  EXPECT_EQ(verify_error(c.cell), "state %h [B,3] is updated with %2 [B,2]: shape mismatch");
  HandCell d;
  d.cell.next_states[0] = d.v;  // [3], not [B,3]
  EXPECT_EQ(verify_error(d.cell), "state %h [B,3] is updated with %v [3]: shape mismatch");
}

TEST(Verifier, NextStateOutsideTheGraph) {
  HandCell c;
  c.cell.next_states[0] = ValueId{1000};
  EXPECT_EQ(verify_error(c.cell), "next value of %h is outside the graph");
}

TEST(Verifier, OutputNotBatched) {
  HandCell c;
  c.cell.outputs.push_back({"weights", c.W});
  EXPECT_EQ(verify_error(c.cell),
            "output 'weights': %W [3,4] is not batched; per-step outputs must be [B,n]");
}

TEST(Verifier, BadOutputs) {
  HandCell c;
  c.cell.outputs.push_back({"out", c.small});
  EXPECT_EQ(verify_error(c.cell), "output 'out' is declared twice");
  HandCell d;
  d.cell.outputs.push_back({"far", ValueId{500}});
  EXPECT_EQ(verify_error(d.cell), "output 'far' refers to a value outside the graph");
  HandCell e;
  e.cell.outputs.push_back({"bad name", e.small});
  EXPECT_EQ(verify_error(e.cell), "output 'bad name': not a valid name");
}

TEST(Verifier, LeafMissingFromItsRoleList) {
  HandCell c;
  c.cell.params.pop_back();
  EXPECT_EQ(verify_error(c.cell), "%v [3] is a param leaf missing from the cell's role lists");
  HandCell d;
  d.cell.inputs.erase(d.cell.inputs.begin());
  EXPECT_EQ(verify_error(d.cell), "%x [B,4] is a input leaf missing from the cell's role lists");
}

TEST(Verifier, LeafMissingWhileAnotherIsListedTwice) {
  // The counts match (two inputs listed, two in the graph) but %y has no role.
  HandCell c;
  c.cell.inputs = {c.x, c.x};
  EXPECT_EQ(verify_error(c.cell), "%x is listed twice as an input");
}

TEST(Verifier, RoleListingANonLeaf) {
  HandCell c;
  c.cell.inputs.push_back(c.act);
  EXPECT_EQ(verify_error(c.cell), "%1 [B,3] is listed as an input but is a tanh");
  HandCell d;
  d.cell.params.push_back(d.lin);
  EXPECT_EQ(verify_error(d.cell), "%0 [B,3] is listed as a param but is a linear");
}

TEST(Verifier, RoleListingALeafOfAnotherKind) {
  HandCell c;
  c.cell.states = {c.x};
  EXPECT_EQ(verify_error(c.cell), "%x [B,4] is listed as a state but is an input");
  HandCell d;
  d.cell.params.push_back(d.h);
  EXPECT_EQ(verify_error(d.cell), "%h [B,3] is listed as a param but is a state");
}

TEST(Verifier, RoleOutsideTheGraph) {
  HandCell c;
  c.cell.params.push_back(ValueId{99});
  EXPECT_EQ(verify_error(c.cell), "the param list refers to a value outside the graph");
  HandCell d;
  d.cell.inputs.push_back(ValueId{});
  EXPECT_EQ(verify_error(d.cell), "the input list refers to a value outside the graph");
}

TEST(Verifier, CellThatComputesNothing) {
  Cell cell;
  ValueId x = cell.graph.add_distinct(OpKind::input, {}, {std::string("x")}, Shape::batched(2));
  cell.inputs = {x};
  EXPECT_EQ(verify_error(cell), "the cell has neither outputs nor states: it computes nothing");
}

TEST(Verifier, BadCellName) {
  HandCell c;
  c.cell.name = "two words";
  EXPECT_EQ(verify_error(c.cell), "cell name 'two words' is not a valid name");
}

TEST(Verifier, BrokenCellsStillPrint) {
  // print_cell is how one looks at a broken cell: it must not throw on one.
  HandCell c;
  c.cell.outputs.push_back({"far", ValueId{500}});
  c.cell.next_states.clear();
  std::string text;
  EXPECT_NO_THROW(text = print_cell(c.cell));
  EXPECT_THAT(text, HasSubstr("output far = %<invalid>"));
}

// ---------------------------------------------------------------------------------------------
// The op table.

constexpr int kDeclaredOps = 0
#define CELLFUSE_OP(id, ...) +1
#include "compiler/ir/ops.def"
#undef CELLFUSE_OP
    ;

TEST(OpTable, EveryOpOfOpsDefIsInTheTable) {
  EXPECT_EQ(op_count(), kDeclaredOps);
  // The enum, the names and the arities come from the same line of ops.def.
#define CELLFUSE_OP(id, lo, hi, kind, attrs, fusion_cost, torch_names, grad, ...) \
  EXPECT_EQ(op_name(OpKind::id), #id);                                           \
  EXPECT_EQ(op_info(OpKind::id).min_arity, lo) << #id;                           \
  EXPECT_EQ(op_info(OpKind::id).max_arity, hi) << #id;                           \
  EXPECT_EQ(op_info(OpKind::id).op_class, OpClass::kind) << #id;                 \
  EXPECT_EQ(op_info(OpKind::id).cost, fusion_cost) << #id;                       \
  EXPECT_EQ(std::string_view(op_info(OpKind::id).grad_rule), grad) << #id;
#include "compiler/ir/ops.def"
#undef CELLFUSE_OP
}

TEST(OpTable, NamesParseBackAndAritiesAreConsistent) {
  std::set<std::string_view> names;
  for (int i = 0; i < op_count(); ++i) {
    OpKind op = static_cast<OpKind>(i);
    const OpInfo& info = op_info(op);
    SCOPED_TRACE(std::string(info.name));
    EXPECT_FALSE(info.name.empty());
    EXPECT_TRUE(is_identifier(info.name));
    EXPECT_TRUE(names.insert(info.name).second) << "duplicate name";
    ASSERT_TRUE(parse_op(info.name).has_value());
    EXPECT_EQ(*parse_op(info.name), op);
    EXPECT_GE(info.min_arity, 0);
    EXPECT_TRUE(info.max_arity == -1 || info.max_arity >= info.min_arity);
    EXPECT_FALSE(info.grad_rule.empty());
    switch (info.op_class) {
      case OpClass::Leaf:
        EXPECT_EQ(info.max_arity, 0);
        EXPECT_EQ(info.attrs.size(), 1u);  // the name, or a constant's value
        break;
      case OpClass::Pointwise:
        EXPECT_GE(info.min_arity, 1);
        EXPECT_LE(info.max_arity, 3);
        EXPECT_EQ(info.min_arity, info.max_arity);
        EXPECT_TRUE(info.attrs.empty());
        EXPECT_TRUE(is_pointwise(op));
        break;
      case OpClass::Reduction:
        EXPECT_EQ(info.max_arity, 1);
        break;
      default:
        EXPECT_GE(info.min_arity, 1);
        break;
    }
    EXPECT_EQ(is_leaf(op), info.op_class == OpClass::Leaf);
    for (const AttrSpec& a : info.attrs) EXPECT_TRUE(is_identifier(a.name));
  }
  EXPECT_FALSE(parse_op("frobnicate").has_value());
  EXPECT_FALSE(parse_op("").has_value());
  EXPECT_FALSE(parse_op("Add").has_value());
}

// The tracer maps each torch name to one op (cellfuse._C.op_table() hands them to Python); fusion's
// cost is positive exactly for what a loop computes inline.
TEST(OpTable, TorchNamesAndCosts) {
  std::set<std::string_view> torch_names;
  for (int i = 0; i < op_count(); ++i) {
    const OpInfo& info = op_info(static_cast<OpKind>(i));
    SCOPED_TRACE(std::string(info.name));
    for (std::string_view name : info.torch_names) {
      EXPECT_TRUE(is_identifier(name)) << name;
      EXPECT_TRUE(torch_names.insert(name).second) << name << " maps to two ops";
    }
    EXPECT_EQ(info.cost > 0, info.op_class == OpClass::Pointwise);
  }
  ASSERT_EQ(op_info(OpKind::erf).torch_names.size(), 2u);
  EXPECT_EQ(op_info(OpKind::erf).torch_names[1], "special_erf");
  EXPECT_EQ(op_info(OpKind::amax).torch_names.at(0), "amax");
  EXPECT_TRUE(is_unary_function(OpKind::amax));
  EXPECT_TRUE(is_unary_function(OpKind::sigmoid));
  EXPECT_FALSE(is_unary_function(OpKind::expand));  // an attribute
  EXPECT_FALSE(is_unary_function(OpKind::add));
}

TEST(OpTable, AttributesAndTraits) {
  const auto& slice_attrs = op_info(OpKind::slice).attrs;
  ASSERT_EQ(slice_attrs.size(), 2u);
  EXPECT_EQ(slice_attrs[0].name, "start");
  EXPECT_EQ(slice_attrs[0].kind, AttrKind::Int);
  EXPECT_EQ(slice_attrs[1].name, "len");
  EXPECT_EQ(op_info(OpKind::constant).attrs[0].kind, AttrKind::Float);
  EXPECT_EQ(op_info(OpKind::input).attrs[0].kind, AttrKind::String);
  EXPECT_EQ(op_info(OpKind::cat).max_arity, -1);
  for (OpKind op : {OpKind::add, OpKind::mul, OpKind::min, OpKind::max})
    EXPECT_TRUE(is_commutative(op)) << op_name(op);
  for (OpKind op :
       {OpKind::sub, OpKind::div, OpKind::gt, OpKind::matmul, OpKind::cat, OpKind::where})
    EXPECT_FALSE(is_commutative(op)) << op_name(op);
}

// ---------------------------------------------------------------------------------------------
// The graph.

TEST(Graph, BuilderHashConsesIdenticalNodes) {
  CellBuilder b("c");
  Val x = b.input("x", 4);
  Val W = b.param("W", {4, 4});
  Val a = tanh(linear(x, W));
  std::size_t size = b.cell().graph.size();
  Val again = tanh(linear(x, W));
  EXPECT_EQ(a.id(), again.id());
  EXPECT_EQ(b.cell().graph.size(), size);  // nothing new
  // Equal constants are one node; different values or shapes are not.
  Val one = x * 1.0;
  Val one_again = x * 1.0;
  EXPECT_EQ(one.id(), one_again.id());
  EXPECT_NE((x * 2.0).id(), one.id());
  // Different attributes make different nodes.
  EXPECT_NE(slice(x, 0, 2).id(), slice(x, 2, 2).id());
  EXPECT_EQ(slice(x, 0, 2).id(), slice(x, 0, 2).id());
  // Operand order matters to the builder (CSE merges commutative pairs later).
  Val y = b.input("y", 4);
  EXPECT_NE((x + y).id(), (y + x).id());
}

TEST(Graph, AddSharesAndAddDistinctDoesNot) {
  Graph g(DType::f64);
  ValueId x = g.add_distinct(OpKind::input, {}, {std::string("x")}, Shape::batched(3));
  ValueId a = g.add(OpKind::exp, {x});
  ValueId b = g.add(OpKind::exp, {x});
  ValueId c = g.add_distinct(OpKind::exp, {x});
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(g.size(), 3u);
  EXPECT_TRUE(same_node(g.node(a), g.node(c)));
  EXPECT_EQ(node_hash(g.node(a)), node_hash(g.node(c)));
  // Leaves are never shared: a second leaf with a used name is an error.
  EXPECT_THROW(g.add(OpKind::input, {}, {std::string("x")}, Shape::batched(3)), Error);
  EXPECT_EQ(g.find_leaf("x"), x);
  EXPECT_FALSE(g.find_leaf("nope").has_value());
}

TEST(Graph, NanConstantsAreOneNode) {
  Graph g;
  double nan = std::numeric_limits<double>::quiet_NaN();
  ValueId a = g.add(OpKind::constant, {}, {nan}, Shape::batched(2));
  ValueId b = g.add(OpKind::constant, {}, {-nan}, Shape::batched(2));
  EXPECT_EQ(a, b);
  EXPECT_TRUE(std::isnan(g.node(a).float_attr("value")));
  // +0 and -0 differ in their bits, so they are different constants.
  ValueId z = g.add(OpKind::constant, {}, {0.0}, Shape::batched(2));
  ValueId nz = g.add(OpKind::constant, {}, {-0.0}, Shape::batched(2));
  EXPECT_NE(z, nz);
  // An integer literal is a fine constant value.
  ValueId i = g.add(OpKind::constant, {}, {std::int64_t{3}}, Shape::batched(2));
  EXPECT_EQ(g.node(i).float_attr("value"), 3.0);
}

TEST(Graph, ShapesAreInferred) {
  Graph g;
  ValueId x = g.add_distinct(OpKind::input, {}, {std::string("x")}, Shape::batched(6));
  ValueId W = g.add_distinct(OpKind::param, {}, {std::string("W")}, Shape::matrix(5, 6));
  ValueId M = g.add_distinct(OpKind::param, {}, {std::string("M")}, Shape::matrix(6, 2));
  ValueId v = g.add_distinct(OpKind::param, {}, {std::string("v")}, Shape::vector(5));
  EXPECT_EQ(g.node(g.add(OpKind::linear, {x, W})).shape, Shape::batched(5));
  EXPECT_EQ(g.node(g.add(OpKind::linear, {x, W, v})).shape, Shape::batched(5));
  EXPECT_EQ(g.node(g.add(OpKind::matmul, {x, M})).shape, Shape::batched(2));
  EXPECT_EQ(g.node(g.add(OpKind::broadcast, {v})).shape, Shape::batched(5));
  ValueId s = g.add(OpKind::sum, {x});
  EXPECT_EQ(g.node(s).shape, Shape::batched(1));
  EXPECT_EQ(g.node(g.add(OpKind::mean, {v})).shape, Shape::vector(1));
  EXPECT_EQ(g.node(g.add(OpKind::expand, {s}, {std::int64_t{7}})).shape, Shape::batched(7));
  EXPECT_EQ(g.node(g.add(OpKind::cat, {x, x, s})).shape, Shape::batched(13));
  EXPECT_EQ(g.node(g.add(OpKind::slice, {x}, {std::int64_t{1}, std::int64_t{4}})).shape,
            Shape::batched(4));
  EXPECT_EQ(g.node(g.add(OpKind::where, {x, x, x})).shape, Shape::batched(6));
  EXPECT_EQ(g.node(g.add(OpKind::mul, {W, W})).shape, Shape::matrix(5, 6));
}

TEST(Graph, ShapeHelpers) {
  EXPECT_EQ(to_string(Shape::batched(7)), "[B,7]");
  EXPECT_EQ(to_string(Shape::matrix(3, 4)), "[3,4]");
  EXPECT_EQ(to_string(Shape::vector(5)), "[5]");
  EXPECT_EQ(Shape::batched(7).elements(3), 21);
  EXPECT_EQ(Shape::matrix(3, 4).elements(100), 12);
  EXPECT_EQ(Shape::vector(5).elements(100), 5);
  EXPECT_TRUE(Shape::batched(1).is_batched());
  EXPECT_FALSE(Shape::matrix(1, 1).is_batched());
  EXPECT_EQ(Shape::batched(7).with_features(2), Shape::batched(2));
  EXPECT_EQ(dtype_name(DType::f64), "f64");
  EXPECT_EQ(parse_dtype("f32"), DType::f32);
  EXPECT_FALSE(parse_dtype("f16").has_value());
  EXPECT_EQ(dtype_size(DType::f32), 4u);
  EXPECT_EQ(dtype_size(DType::f64), 8u);
}

TEST(Graph, VectorShapesAreNormalized) {
  // A hand-made vector shape with junk in its unused dimension is the same shape as any other.
  Graph g;
  Shape junk{1, {4, 9}};
  ValueId v = g.add_distinct(OpKind::param, {}, {std::string("v")}, junk);
  EXPECT_EQ(g.node(v).shape, Shape::vector(4));
  ValueId x = g.add_distinct(OpKind::input, {}, {std::string("x")}, Shape::batched(4));
  ValueId W = g.add_distinct(OpKind::param, {}, {std::string("W")}, Shape::matrix(4, 4));
  EXPECT_NO_THROW(g.add(OpKind::linear, {x, W, v}));
}

TEST(Graph, IdentifierRules) {
  EXPECT_TRUE(is_identifier("x"));
  EXPECT_TRUE(is_identifier("W_ih"));
  EXPECT_TRUE(is_identifier("layer1.weight"));
  EXPECT_TRUE(is_identifier("_"));
  EXPECT_FALSE(is_identifier(""));
  EXPECT_FALSE(is_identifier("1x"));
  EXPECT_FALSE(is_identifier(".x"));
  EXPECT_FALSE(is_identifier("a b"));
  EXPECT_FALSE(is_identifier("a-b"));
  EXPECT_FALSE(is_identifier("%a"));
  EXPECT_FALSE(is_identifier(std::string(257, 'a')));
}

TEST(Graph, MessagesNameValuesAsThePrinterDoes) {
  Cell cell = cells::elman(3, 2);
  const Graph& g = cell.graph;
  // Every value's name in messages is its name in the printed text.
  std::string text = print_cell(cell);
  for (std::uint32_t i = 0; i < g.size(); ++i) {
    std::string line = "  " + g.ref(ValueId{i}) + " = " + std::string(op_name(g.nodes()[i].op));
    EXPECT_THAT(text, HasSubstr(line)) << i;
  }
  EXPECT_EQ(g.describe(cell.states[0]), "%h [B,2]");
  EXPECT_EQ(g.describe(ValueId{}), "%<invalid>");
}

TEST(Graph, CellHashIsStableAndTellsCellsApart) {
  EXPECT_EQ(cell_hash(cells::lstm(7, 33)), cell_hash(cells::lstm(7, 33)));
  EXPECT_EQ(cell_hash(cells::gru(3, 5, DType::f64)), cell_hash(cells::gru(3, 5, DType::f64)));
  Cell lstm = cells::lstm(7, 33);
  EXPECT_EQ(cell_hash(parse_cell(print_cell(lstm))), cell_hash(lstm));

  std::set<std::uint64_t> hashes;
  for (const char* spec : {"elman:3,5", "elman:5,3", "elman_proj:3,5,2", "lstm:3,5", "lstm:3,6",
                           "gru:3,5", "lnlstm:3,5", "peephole:3,5"})
    for (DType dtype : {DType::f32, DType::f64})
      EXPECT_TRUE(hashes.insert(cell_hash(cells::by_spec(spec, dtype))).second)
          << spec << " " << dtype_name(dtype);

  // An output's name is part of the interface, and so is each role list's order.
  Cell renamed = lstm;
  renamed.outputs[0].name = "y";
  EXPECT_NE(cell_hash(renamed), cell_hash(lstm));
  Cell swapped = lstm;
  std::swap(swapped.params[0], swapped.params[1]);
  ASSERT_NO_THROW(verify(swapped));
  EXPECT_NE(cell_hash(swapped), cell_hash(lstm));
  Cell swapped_states = lstm;
  std::swap(swapped_states.states[0], swapped_states.states[1]);
  std::swap(swapped_states.next_states[0], swapped_states.next_states[1]);
  ASSERT_NO_THROW(verify(swapped_states));
  EXPECT_NE(cell_hash(swapped_states), cell_hash(lstm));
}

TEST(Graph, CellHashSeesConstantBits) {
  auto with_constant = [](double v, DType dtype = DType::f64) {
    Cell cell(dtype);
    ValueId x = cell.add_input("x", 2);
    cell.add_output("o", cell.graph.add(OpKind::mul, {x, cell.graph.add(OpKind::constant, {}, {v},
                                                                        Shape::batched(2))}));
    return cell;
  };
  EXPECT_NE(cell_hash(with_constant(0.0)), cell_hash(with_constant(-0.0)));
  EXPECT_NE(cell_hash(with_constant(1.0)), cell_hash(with_constant(1.0000000000000002)));
  EXPECT_EQ(cell_hash(with_constant(0.5)), cell_hash(with_constant(0.5)));
  // In f32 both are the float 1.0f: one cell.
  EXPECT_EQ(cell_hash(with_constant(1.0, DType::f32)),
            cell_hash(with_constant(1.0000000000000002, DType::f32)));
  EXPECT_NE(cell_hash(with_constant(1.0, DType::f32)), cell_hash(with_constant(1.0)));
}

}  // namespace
}  // namespace cellfuse
