// The text form (compiler/ir/text.h): every cell prints and parses back to a structurally equal
// cell; hand-written text (free names, comments, attributes in any order, optional shapes) reads
// as the printer would write it; numbers survive bit for bit; .cell files load.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <bit>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "compiler/ir/error.h"
#include "compiler/ir/text.h"
#include "compiler/ir/verifier.h"
#include "compiler/lower.h"
#include "frontend/cells.h"
#include "runtime/random_args.h"
#include "runtime/reference/interpreter.h"

namespace cellfuse {
namespace {

using ::testing::HasSubstr;

std::uint64_t bits(double v) { return std::bit_cast<std::uint64_t>(v); }

// The value of the one constant node of a cell.
double only_constant(const Cell& cell) {
  const Node* found = nullptr;
  for (const Node& n : cell.graph.nodes())
    if (n.op == OpKind::constant) {
      EXPECT_EQ(found, nullptr) << "more than one constant";
      found = &n;
    }
  if (!found) {
    ADD_FAILURE() << "no constant in\n" << print_cell(cell);
    return 0;
  }
  return found->float_attr("value");
}

// ---------------------------------------------------------------------------------------------
// Standard cells round-trip.

struct CellCase {
  std::string spec;
  DType dtype;
};

std::string case_name(const ::testing::TestParamInfo<CellCase>& info) {
  std::string s = info.param.spec + "_" + std::string(dtype_name(info.param.dtype));
  for (char& c : s)
    if (c == ':' || c == ',') c = '_';
  return s;
}

std::vector<CellCase> standard_cases() {
  std::vector<CellCase> out;
  for (const char* spec : {"elman:1,1", "elman:7,33", "elman_proj:1,1,1", "elman_proj:5,7,3",
                           "lstm:1,1", "lstm:7,33", "lstm:33,7", "gru:1,1", "gru:3,5", "lnlstm:1,1",
                           "lnlstm:7,33", "peephole:1,1", "peephole:7,33"})
    for (DType dtype : {DType::f32, DType::f64}) out.push_back({spec, dtype});
  return out;
}

class StandardCellText : public ::testing::TestWithParam<CellCase> {};

TEST_P(StandardCellText, PrintsAndParsesBack) {
  Cell cell = cells::by_spec(GetParam().spec, GetParam().dtype);
  std::string text = print_cell(cell);
  EXPECT_THAT(text, HasSubstr("cell " + cell.name + " " +
                              std::string(dtype_name(GetParam().dtype)) + " {\n"));
  Cell back = parse_cell(text);
  EXPECT_TRUE(structurally_equal(cell, back)) << text << "\n---\n" << print_cell(back);
  EXPECT_EQ(print_cell(back), text);
  EXPECT_EQ(cell_hash(back), cell_hash(cell));
  EXPECT_NO_THROW(verify(back));
}

TEST_P(StandardCellText, OptimizedCellPrintsAndParsesBack) {
  Cell cell = optimize(cells::by_spec(GetParam().spec, GetParam().dtype));
  std::string text = print_cell(cell);
  Cell back = parse_cell(text);
  EXPECT_TRUE(structurally_equal(cell, back)) << text;
  EXPECT_EQ(print_cell(back), text);
}

INSTANTIATE_TEST_SUITE_P(Cells, StandardCellText, ::testing::ValuesIn(standard_cases()), case_name);

TEST(Text, EveryStandardConstructorRoundTrips) {
  // The constructors themselves, not only through by_spec.
  std::vector<Cell> all;
  all.push_back(cells::elman(3, 5));
  all.push_back(cells::elman_proj(3, 5, 2, DType::f64));
  all.push_back(cells::lstm(2, 9));
  all.push_back(cells::gru(9, 2, DType::f64));
  all.push_back(cells::lnlstm(4, 1));
  all.push_back(cells::peephole(1, 4, DType::f64));
  for (const Cell& cell : all) {
    std::string text = print_cell(cell);
    Cell back = parse_cell(text);
    EXPECT_TRUE(structurally_equal(cell, back)) << text;
    EXPECT_EQ(print_cell(parse_cell(print_cell(back))), text);
  }
}

TEST(Text, StructuralEqualityNoticesADifference) {
  // The round-trip tests above rely on structurally_equal; make sure it can say no.
  Cell a = cells::lstm(3, 4);
  EXPECT_FALSE(structurally_equal(a, cells::lstm(3, 5)));
  EXPECT_FALSE(structurally_equal(a, cells::lstm(3, 4, DType::f64)));
  EXPECT_FALSE(structurally_equal(a, cells::peephole(3, 4)));
  Cell renamed = a;
  renamed.name = "other";
  EXPECT_FALSE(structurally_equal(a, renamed));
  Cell renamed_output = a;
  renamed_output.outputs[0].name = "y";
  EXPECT_FALSE(structurally_equal(a, renamed_output));
  EXPECT_NE(print_cell(a), print_cell(renamed_output));
}

// ---------------------------------------------------------------------------------------------
// Hand-written text.

TEST(Text, HandWrittenTextReadsAsThePrinterWritesIt) {
  const char* text = R"(# A hand-written cell: free names, comments everywhere, attributes in any
# order, shapes given or left out.
cell gate_demo f64 {   # trailing comment
  %x = input : [B,3]
  %h = state : [B,2]
  %W = param : [8,3]
  %U = param : [8,2]
  %bias = param : [8]

  %gates = linear %x, %W, %bias          # no shape: inferred
  %hg = linear %h, %U : [B,8]            # shape given and checked
  %sum.all = add %gates, %hg
  %i = slice %sum.all {len=2, start=0}   # attributes in any order
  %f = slice %sum.all {start=2, len=2} : [B,2]
  %i_s = sigmoid %i
  %eps = constant {value=1e-5} : [B,2]
  %f_s = add %f, %eps
  %h_next = mul %i_s, %f_s
  output out = %h_next
  next h = %h_next
}
)";
  const char* expected = R"(cell gate_demo f64 {
  %x = input : [B,3]
  %h = state : [B,2]
  %W = param : [8,3]
  %U = param : [8,2]
  %bias = param : [8]
  %0 = linear %x, %W, %bias : [B,8]
  %1 = linear %h, %U : [B,8]
  %2 = add %0, %1 : [B,8]
  %3 = slice %2 {start=0, len=2} : [B,2]
  %4 = slice %2 {start=2, len=2} : [B,2]
  %5 = sigmoid %3 : [B,2]
  %6 = constant {value=1e-05} : [B,2]
  %7 = add %4, %6 : [B,2]
  %8 = mul %5, %7 : [B,2]
  output out = %8
  next h = %8
}
)";
  Cell cell = parse_cell(text);
  EXPECT_EQ(print_cell(cell), expected);
  EXPECT_TRUE(structurally_equal(cell, parse_cell(expected)));
  EXPECT_EQ(cell.name, "gate_demo");
  EXPECT_EQ(cell.graph.dtype(), DType::f64);
  ASSERT_EQ(cell.inputs.size(), 1u);
  ASSERT_EQ(cell.states.size(), 1u);
  ASSERT_EQ(cell.params.size(), 3u);
  EXPECT_EQ(cell.leaf_name(cell.params[2]), "bias");
  ASSERT_EQ(cell.outputs.size(), 1u);
  EXPECT_EQ(cell.outputs[0].name, "out");
  EXPECT_EQ(cell.next_states[0], cell.outputs[0].value);
  EXPECT_EQ(cell.graph.node(cell.outputs[0].value).shape, Shape::batched(2));
}

TEST(Text, WhitespaceAndLineEndingsDoNotMatter) {
  std::string compact = "cell c f32{%x=input:[B,2]\t%y=tanh %x output o=%y}";
  std::string crlf =
      "cell c f32 {\r\n  %x = input : [ B , 2 ]\r\n  %y = tanh %x\r\n"
      "  output o = %y\r\n}\r\n";
  std::string expected =
      "cell c f32 {\n  %x = input : [B,2]\n  %0 = tanh %x : [B,2]\n"
      "  output o = %0\n}\n";
  EXPECT_EQ(print_cell(parse_cell(compact)), expected);
  EXPECT_EQ(print_cell(parse_cell(crlf)), expected);
}

TEST(Text, EmptyAttributeBracesAreAccepted) {
  Cell cell = parse_cell("cell c f32 { %x = input : [B,2] %y = tanh %x {} output o = %y }");
  EXPECT_EQ(cell.graph.node(cell.outputs[0].value).op, OpKind::tanh);
}

TEST(Text, EveryOpPrintsAndParsesBack) {
  // One cell that uses every op of ops.def at least once.
  const char* text = R"(cell all_ops f32 {
  %x = input : [B,4]
  %h = state : [B,4]
  %W = param : [4,4]
  %M = param : [4,4]
  %v = param : [4]
  %one = constant {value=1} : [B,4]
  %l = linear %x, %W, %v
  %l2 = linear %x, %W
  %m = matmul %h, %M
  %a0 = neg %l
  %a1 = abs %a0
  %a2 = sigmoid %a1
  %a3 = tanh %a2
  %a4 = relu %a3
  %a5 = exp %a4
  %a6 = log %a5
  %a7 = sqrt %a5
  %a8 = rsqrt %a5
  %a9 = softplus %a8
  %a10 = erf %a9
  %a11 = hardsigmoid %a10
  %a12 = softsign %a11
  %a13 = log1p %a12
  %a14 = expm1 %a13
  %b0 = add %a6, %a7
  %b1 = sub %b0, %a14
  %b2 = mul %b1, %l2
  %b3 = div %b2, %one
  %b4 = min %b3, %m
  %b5 = max %b4, %m
  %c0 = gt %b5, %x
  %c1 = ge %b5, %x
  %c2 = lt %c0, %c1
  %c3 = le %c2, %c1
  %w = where %c3, %b5, %x
  %bv = broadcast %v
  %s = sum %w
  %mn = mean %w
  %mx = amax %w
  %sm0 = add %s, %mn
  %sm = add %sm0, %mx
  %e = expand %sm {n=4}
  %cat = cat %w, %bv, %e
  %sl = slice %cat {start=2, len=4}
  %out = add %sl, %bv
  output y = %out
  next h = %out
}
)";
  Cell cell = parse_cell(text);
  std::vector<bool> used(static_cast<std::size_t>(op_count()), false);
  for (const Node& n : cell.graph.nodes()) used[static_cast<std::size_t>(n.op)] = true;
  for (int i = 0; i < op_count(); ++i) {
    EXPECT_TRUE(used[static_cast<std::size_t>(i)])
        << op_name(static_cast<OpKind>(i)) << " is not covered";
  }
  std::string printed = print_cell(cell);
  Cell back = parse_cell(printed);
  EXPECT_TRUE(structurally_equal(cell, back)) << printed;
  EXPECT_EQ(print_cell(back), printed);
  EXPECT_EQ(cell.graph.node(*cell.graph.find_leaf("v")).shape, Shape::vector(4));
}

TEST(Text, CellWithoutStatesAndWithManyOutputs) {
  const char* text =
      "cell c f64 {\n  %x = input : [B,2]\n  %y = input : [B,3]\n"
      "  %0 = tanh %x : [B,2]\n  output a = %0\n  output b = %y\n  output c = %x\n}\n";
  Cell cell = parse_cell(text);
  EXPECT_EQ(cell.outputs.size(), 3u);
  EXPECT_EQ(cell.outputs[1].value, cell.inputs[1]);
  EXPECT_EQ(print_cell(cell), text);
}

// ---------------------------------------------------------------------------------------------
// Numbers.

std::string constant_cell(std::string_view dtype, std::string_view literal) {
  return "cell k " + std::string(dtype) +
         " {\n  %x = input : [B,2]\n  %c = constant {value=" + std::string(literal) +
         "} : [B,2]\n  %y = add %x, %c\n  output o = %y\n}\n";
}

TEST(Text, ConstantsParseToTheRightBits) {
  const double inf = std::numeric_limits<double>::infinity();
  struct Case {
    const char* literal;
    double value;
  };
  const Case cases[] = {{"0.1", 0.1},
                        {"1e-5", 1e-5},
                        {"1E-5", 1e-5},
                        {"1e-05", 1e-5},
                        {"-inf", -inf},
                        {"inf", inf},
                        {"+inf", inf},
                        {"-2.5", -2.5},
                        {"+2", 2.0},
                        {"7", 7.0},
                        {".5", 0.5},
                        {"-0", -0.0},
                        {"0", 0.0},
                        {"5e-324", 5e-324},
                        {"1.7976931348623157e308", std::numeric_limits<double>::max()},
                        {"0.30000000000000004", 0.1 + 0.2}};
  for (const Case& c : cases) {
    Cell cell = parse_cell(constant_cell("f64", c.literal));
    EXPECT_EQ(bits(only_constant(cell)), bits(c.value)) << c.literal;
  }
  for (const char* nan : {"nan", "-nan", "+nan"}) {
    Cell cell = parse_cell(constant_cell("f64", nan));
    EXPECT_TRUE(std::isnan(only_constant(cell))) << nan;
    // Every NaN is the one canonical NaN, so that it prints as `nan` and parses back exactly.
    EXPECT_EQ(bits(only_constant(cell)), bits(std::numeric_limits<double>::quiet_NaN())) << nan;
  }
}

TEST(Text, ConstantsRoundTripBitExactly) {
  const double values[] = {0.1,
                           1e-5,
                           -std::numeric_limits<double>::infinity(),
                           std::numeric_limits<double>::infinity(),
                           std::numeric_limits<double>::quiet_NaN(),
                           -0.0,
                           0.0,
                           1.0 / 3.0,
                           0.1 + 0.2,
                           std::numeric_limits<double>::denorm_min(),
                           std::numeric_limits<double>::min(),
                           std::numeric_limits<double>::max(),
                           -std::numeric_limits<double>::max(),
                           static_cast<double>(0.1f),
                           123456789012345678.0,
                           1e300,
                           -1e-300};
  for (DType dtype : {DType::f32, DType::f64}) {
    for (double v : values) {
      Cell cell(dtype);
      cell.name = "k";
      ValueId x = cell.add_input("x", 3);
      ValueId c = cell.graph.add(OpKind::constant, {}, {v}, Shape::batched(3));
      cell.add_output("o", cell.graph.add(OpKind::mul, {x, c}));
      std::string text = print_cell(cell);
      Cell back = parse_cell(text);
      EXPECT_TRUE(structurally_equal(cell, back)) << text;
      // An f32 cell stores the float it computes with.
      double stored = dtype == DType::f32 ? static_cast<double>(static_cast<float>(v)) : v;
      EXPECT_EQ(bits(only_constant(cell)), bits(stored)) << text;
      EXPECT_EQ(bits(only_constant(back)), bits(stored)) << text;
      EXPECT_EQ(print_cell(back), text);
    }
  }
}

TEST(Text, F32ConstantsAreFloatsAndPrintShort) {
  Cell cell = parse_cell(constant_cell("f32", "0.1"));
  EXPECT_EQ(bits(only_constant(cell)), bits(static_cast<double>(0.1f)));
  EXPECT_THAT(print_cell(cell), HasSubstr("{value=0.1}"));
  // Two spellings of one float are one value.
  EXPECT_TRUE(structurally_equal(parse_cell(constant_cell("f32", "0.100000001")), cell));
  // The same text in f64 keeps the double.
  EXPECT_EQ(bits(only_constant(parse_cell(constant_cell("f64", "0.1")))), bits(0.1));
  // Beyond float range is what the f32 kernel computes with: infinity.
  EXPECT_EQ(only_constant(parse_cell(constant_cell("f32", "1e300"))),
            std::numeric_limits<double>::infinity());
  EXPECT_THAT(print_cell(parse_cell(constant_cell("f32", "1e-5"))), HasSubstr("{value=1e-05}"));
}

TEST(Text, NegativeNanBecomesTheCanonicalNan) {
  // -nan (what 0/0 gives on x86) must print as `nan` and parse back to the same bits.
  double negative_nan = -std::numeric_limits<double>::quiet_NaN();
  ASSERT_TRUE(std::signbit(negative_nan));
  Cell cell(DType::f64);
  ValueId x = cell.add_input("x", 1);
  ValueId c = cell.graph.add(OpKind::constant, {}, {negative_nan}, Shape::batched(1));
  cell.add_output("o", cell.graph.add(OpKind::add, {x, c}));
  EXPECT_EQ(bits(only_constant(cell)), bits(std::numeric_limits<double>::quiet_NaN()));
  Cell back = parse_cell(print_cell(cell));
  EXPECT_TRUE(structurally_equal(cell, back));
  EXPECT_EQ(cell_hash(cell), cell_hash(back));
}

TEST(Text, FormatNumberIsShortAndExact) {
  EXPECT_EQ(format_number(0.1), "0.1");
  EXPECT_EQ(format_number(1e-5), "1e-05");
  EXPECT_EQ(format_number(1.0), "1");
  EXPECT_EQ(format_number(-2.5), "-2.5");
  EXPECT_EQ(format_number(-0.0), "-0");
  EXPECT_EQ(format_number(std::numeric_limits<double>::infinity()), "inf");
  EXPECT_EQ(format_number(-std::numeric_limits<double>::infinity()), "-inf");
  EXPECT_EQ(format_number(std::numeric_limits<double>::quiet_NaN()), "nan");
  EXPECT_EQ(format_number(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(format_number(static_cast<double>(0.1f)), "0.10000000149011612");
  EXPECT_EQ(format_number(static_cast<double>(0.1f), DType::f32), "0.1");
  EXPECT_EQ(format_number(static_cast<double>(1e-5f), DType::f32), "1e-05");
  EXPECT_EQ(format_number(static_cast<double>(0.1f + 0.2f), DType::f32), "0.3");
  EXPECT_EQ(format_number(static_cast<double>(1.0f / 3.0f), DType::f32), "0.33333334");
  EXPECT_EQ(format_number(static_cast<double>(std::numeric_limits<float>::max()), DType::f32),
            "3.4028235e+38");

  // Random bit patterns: what format_number writes reads back to the same bits.
  std::mt19937_64 rng(12345);
  for (int i = 0; i < 20000; ++i) {
    double v = std::bit_cast<double>(rng());
    if (std::isnan(v)) continue;
    std::string s = format_number(v);
    double back = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), back);
    ASSERT_EQ(ec, std::errc()) << s;
    ASSERT_EQ(ptr, s.data() + s.size()) << s;
    ASSERT_EQ(bits(back), bits(v)) << s;
  }
  // The same for floats, read the way the parser reads an f32 constant (via double).
  std::mt19937 rng32(678);
  for (int i = 0; i < 20000; ++i) {
    float f = std::bit_cast<float>(static_cast<std::uint32_t>(rng32()));
    if (std::isnan(f)) continue;
    std::string s = format_number(static_cast<double>(f), DType::f32);
    ASSERT_LE(s.size(), 15u) << s;  // at most 9 significant digits
    double back = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), back);
    ASSERT_EQ(ec, std::errc()) << s;
    ASSERT_EQ(std::bit_cast<std::uint32_t>(static_cast<float>(back)),
              std::bit_cast<std::uint32_t>(f))
        << s;
  }
}

TEST(Text, RandomConstantsRoundTripThroughTheParser) {
  std::mt19937_64 rng(99);
  for (int i = 0; i < 300; ++i) {
    double v = std::bit_cast<double>(rng());
    if (std::isnan(v)) continue;
    std::string literal = format_number(v);
    Cell cell = parse_cell(constant_cell("f64", literal));
    ASSERT_EQ(bits(only_constant(cell)), bits(v)) << literal;
  }
}

// ---------------------------------------------------------------------------------------------
// Files.

std::map<OpKind, int> op_histogram(const Cell& cell) {
  std::map<OpKind, int> h;
  for (const Node& n : cell.graph.nodes()) ++h[n.op];
  return h;
}

std::vector<std::string> leaf_names(const Cell& cell, const std::vector<ValueId>& ids) {
  std::vector<std::string> out;
  for (ValueId id : ids) out.emplace_back(cell.leaf_name(id));
  return out;
}

// The example is the same computation as the built-in cell, written by hand. (Node order may
// differ from the builder's, so compare what does not depend on it.)
void expect_same_computation(const Cell& file, const Cell& builtin) {
  EXPECT_EQ(leaf_names(file, file.inputs), leaf_names(builtin, builtin.inputs));
  EXPECT_EQ(leaf_names(file, file.states), leaf_names(builtin, builtin.states));
  EXPECT_EQ(leaf_names(file, file.params), leaf_names(builtin, builtin.params));
  for (std::size_t i = 0; i < file.params.size() && i < builtin.params.size(); ++i)
    EXPECT_EQ(file.graph.node(file.params[i]).shape, builtin.graph.node(builtin.params[i]).shape);
  ASSERT_EQ(file.outputs.size(), builtin.outputs.size());
  for (std::size_t i = 0; i < file.outputs.size(); ++i) {
    EXPECT_EQ(file.outputs[i].name, builtin.outputs[i].name);
    EXPECT_EQ(file.graph.node(file.outputs[i].value).shape,
              builtin.graph.node(builtin.outputs[i].value).shape);
  }
  EXPECT_EQ(op_histogram(file), op_histogram(builtin));
  EXPECT_EQ(file.graph.size(), builtin.graph.size());
  // And it computes the same values (the reference interpreter, same random arguments).
  ASSERT_EQ(file.graph.dtype(), DType::f32);
  SequenceArgs<float> args = random_sequence_args<float>(builtin, 5, 3, 11);
  SequenceResult<float> a = interpret_sequence(file, args);
  SequenceResult<float> b = interpret_sequence(builtin, args);
  ASSERT_EQ(a.outputs.size(), b.outputs.size());
  for (std::size_t i = 0; i < a.outputs.size(); ++i)
    EXPECT_EQ(a.outputs[i].data, b.outputs[i].data);
  ASSERT_EQ(a.final_states.size(), b.final_states.size());
  for (std::size_t i = 0; i < a.final_states.size(); ++i)
    EXPECT_EQ(a.final_states[i].data, b.final_states[i].data);
}

TEST(Text, LoadsTheLstmExample) {
  Cell cell = load_cell_file(CELLFUSE_SOURCE_DIR "/examples/lstm_small.cell");
  EXPECT_EQ(cell.name, "lstm_small");
  EXPECT_NO_THROW(verify(cell));
  expect_same_computation(cell, cells::lstm(4, 3));
  std::string text = print_cell(cell);
  EXPECT_TRUE(structurally_equal(parse_cell(text), cell));
}

TEST(Text, LoadsTheElmanProjExample) {
  Cell cell = load_cell_file(CELLFUSE_SOURCE_DIR "/examples/elman_proj.cell");
  EXPECT_EQ(cell.name, "elman_proj");
  expect_same_computation(cell, cells::elman_proj(4, 3, 2));
  EXPECT_TRUE(structurally_equal(parse_cell(print_cell(cell)), cell));
}

TEST(Text, EveryExampleFileLoads) {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(CELLFUSE_SOURCE_DIR "/examples")) {
    if (entry.path().extension() != ".cell") continue;
    ++count;
    Cell cell = load_cell_file(entry.path().string());
    EXPECT_NO_THROW(verify(cell)) << entry.path();
    EXPECT_TRUE(structurally_equal(parse_cell(print_cell(cell)), cell)) << entry.path();
  }
  EXPECT_GE(count, 2);
}

TEST(Text, LoadErrorsNameTheFile) {
  try {
    load_cell_file("/nonexistent/dir/missing.cell");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("/nonexistent/dir/missing.cell"));
    EXPECT_THAT(e.what(), HasSubstr("cannot open"));
  }

  auto path = std::filesystem::temp_directory_path() /
              ("cellfuse_test_text_" + std::to_string(std::random_device{}()) + "_bad.cell");
  {
    std::ofstream out(path);
    out << "cell bad f32 {\n  %x = input : [B,2]\n  %y = tanhh %x\n  output o = %y\n}\n";
  }
  try {
    load_cell_file(path.string());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path.string() + ":3:8: unknown op 'tanhh'"));
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace cellfuse
