// Parses the text form (see text.h). A hand-written lexer and recursive-descent parser: every
// error carries line:column and says what was expected and what was found.
#include <charconv>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "compiler/ir/error.h"
#include "compiler/ir/text.h"
#include "compiler/ir/verifier.h"

namespace cellfuse {
namespace {

enum class Tok { End, Ident, Value, Number, String, Punct };

struct Token {
  Tok kind = Tok::End;
  std::string text;  // identifier, value name without '%', number text, string contents, punct
  int line = 1, column = 1;
};

std::string describe(const Token& t) {
  switch (t.kind) {
    case Tok::End: return "end of input";
    case Tok::Value: return "'%" + t.text + "'";
    case Tok::String: return "string \"" + t.text + "\"";
    default: return "'" + t.text + "'";
  }
}

class Lexer {
 public:
  Lexer(std::string_view text, std::string_view source) : text_(text), source_(source) {}

  Token next() {
    skip_space_and_comments();
    Token t;
    t.line = line_;
    t.column = column_;
    if (pos_ >= text_.size()) return t;
    char c = text_[pos_];
    if (is_name_start(c)) {
      t.kind = Tok::Ident;
      t.text = take_while(is_name_char);
    } else if (c == '%') {
      advance();
      t.kind = Tok::Value;
      t.text = take_while(is_name_char);
      if (t.text.empty()) fail(t, "expected a value name after '%'");
    } else if (c == '-' || c == '+' || c == '.' || (c >= '0' && c <= '9')) {
      t.kind = Tok::Number;
      t.text = take_while([](char ch) {
        return (ch >= '0' && ch <= '9') || ch == '.' || ch == 'e' || ch == 'E' || ch == '-' ||
               ch == '+' || ch == 'i' || ch == 'n' || ch == 'f' || ch == 'a';
      });
    } else if (c == '"') {
      t.kind = Tok::String;
      t.text = take_string(t);
    } else if (std::string_view("={}[],:").find(c) != std::string_view::npos) {
      t.kind = Tok::Punct;
      t.text = std::string(1, c);
      advance();
    } else {
      std::string shown = (c >= 32 && c < 127) ? std::string(1, c) : "\\x" + hex(c);
      fail(t, "unexpected character '" + shown + "'");
    }
    return t;
  }

  [[noreturn]] void fail(const Token& at, const std::string& message) const {
    throw Error(std::string(source_) + ":" + std::to_string(at.line) + ":" +
                std::to_string(at.column) + ": " + message);
  }

 private:
  static bool is_name_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  }
  static bool is_name_char(char c) { return is_name_start(c) || (c >= '0' && c <= '9') || c == '.'; }
  static std::string hex(char c) {
    const char* digits = "0123456789abcdef";
    auto u = static_cast<unsigned char>(c);
    return {digits[u >> 4], digits[u & 15]};
  }

  void advance() {
    if (text_[pos_] == '\n') {
      ++line_;
      column_ = 1;
    } else {
      ++column_;
    }
    ++pos_;
  }

  void skip_space_and_comments() {
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (c == '#') {
        while (pos_ < text_.size() && text_[pos_] != '\n') advance();
      } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        advance();
      } else {
        break;
      }
    }
  }

  template <class Pred>
  std::string take_while(Pred pred) {
    std::size_t start = pos_;
    while (pos_ < text_.size() && pred(text_[pos_])) advance();
    return std::string(text_.substr(start, pos_ - start));
  }

  std::string take_string(const Token& at) {
    advance();  // opening quote
    std::string out;
    while (true) {
      if (pos_ >= text_.size() || text_[pos_] == '\n') fail(at, "unterminated string");
      char c = text_[pos_];
      advance();
      if (c == '"') return out;
      if (c == '\\') {
        if (pos_ >= text_.size()) fail(at, "unterminated string");
        c = text_[pos_];
        advance();
      }
      out += c;
    }
  }

  std::string_view text_, source_;
  std::size_t pos_ = 0;
  int line_ = 1, column_ = 1;
};

class Parser {
 public:
  Parser(std::string_view text, std::string_view source) : lex_(text, source) { tok_ = lex_.next(); }

  Cell parse() {
    expect_word("cell");
    Token name = expect(Tok::Ident, "a cell name");
    Token dtype_tok = expect(Tok::Ident, "a dtype (f32 or f64)");
    auto dtype = parse_dtype(dtype_tok.text);
    if (!dtype) lex_.fail(dtype_tok, "expected a dtype (f32 or f64), found " + describe(dtype_tok));
    Cell cell(*dtype);
    cell.name = name.text;
    expect_punct("{");
    while (!is_punct("}")) {
      if (tok_.kind == Tok::End) lex_.fail(tok_, "expected '}' to close the cell, found end of input");
      statement(cell);
    }
    Token close = tok_;
    advance();
    if (tok_.kind != Tok::End) lex_.fail(tok_, "expected end of input after the cell, found " + describe(tok_));
    try {
      verify(cell);
    } catch (const Error& e) {
      lex_.fail(close, e.what());
    }
    return cell;
  }

 private:
  void advance() { tok_ = lex_.next(); }
  bool is_punct(std::string_view p) const { return tok_.kind == Tok::Punct && tok_.text == p; }

  Token expect(Tok kind, const std::string& what) {
    if (tok_.kind != kind) lex_.fail(tok_, "expected " + what + ", found " + describe(tok_));
    Token t = tok_;
    advance();
    return t;
  }
  void expect_punct(std::string_view p) {
    if (!is_punct(p))
      lex_.fail(tok_, "expected '" + std::string(p) + "', found " + describe(tok_));
    advance();
  }
  void expect_word(std::string_view w) {
    if (tok_.kind != Tok::Ident || tok_.text != w)
      lex_.fail(tok_, "expected '" + std::string(w) + "', found " + describe(tok_));
    advance();
  }

  ValueId lookup(const Token& t) {
    auto it = values_.find(t.text);
    if (it == values_.end()) lex_.fail(t, "%" + t.text + " is used before it is defined");
    return it->second;
  }

  void statement(Cell& cell) {
    if (tok_.kind == Tok::Ident && (tok_.text == "output" || tok_.text == "next")) {
      Token word = tok_;
      advance();
      Token name = expect(Tok::Ident, "a name");
      expect_punct("=");
      Token value_tok = expect(Tok::Value, "a value (%name)");
      ValueId value = lookup(value_tok);
      if (word.text == "output") {
        try {
          cell.add_output(name.text, value);
        } catch (const Error& e) {
          lex_.fail(word, e.what());
        }
        return;
      }
      auto state = cell.graph.find_leaf(name.text);
      if (!state || cell.state_index(*state) < 0)
        lex_.fail(name, "next " + name.text + ": there is no state named " + name.text);
      try {
        cell.set_next(*state, value);
      } catch (const Error& e) {
        lex_.fail(word, e.what());
      }
      return;
    }
    Token result = expect(Tok::Value, "a statement (%name = op ..., output, or next)");
    if (values_.count(result.text)) lex_.fail(result, "%" + result.text + " is defined twice");
    expect_punct("=");
    Token op_tok = expect(Tok::Ident, "an op name");
    auto op = parse_op(op_tok.text);
    if (!op) lex_.fail(op_tok, "unknown op '" + op_tok.text + "'");

    std::vector<ValueId> operands;
    if (tok_.kind == Tok::Value) {
      operands.push_back(lookup(tok_));
      advance();
      while (is_punct(",")) {
        advance();
        if (tok_.kind != Tok::Value) lex_.fail(tok_, "expected an operand (%name), found " + describe(tok_));
        operands.push_back(lookup(tok_));
        advance();
      }
    }
    std::vector<AttrValue> attrs = parse_attrs(*op, op_tok);
    std::optional<Shape> shape;
    if (is_punct(":")) {
      advance();
      shape = parse_shape();
    }
    if (is_leaf(*op) && *op != OpKind::constant) attrs.insert(attrs.begin(), result.text);

    try {
      ValueId id = cell.graph.add_distinct(*op, std::move(operands), std::move(attrs), shape);
      if (*op == OpKind::input) cell.inputs.push_back(id);
      if (*op == OpKind::state) {
        cell.states.push_back(id);
        cell.next_states.push_back(ValueId{});
      }
      if (*op == OpKind::param) cell.params.push_back(id);
      cell.graph.set_debug_name(id, result.text);
      values_[result.text] = id;
    } catch (const Error& e) {
      lex_.fail(op_tok, e.what());
    }
  }

  // {name=value, ...} in any order; every attribute the op declares must be given once.
  std::vector<AttrValue> parse_attrs(OpKind op, const Token& op_tok) {
    const auto& specs = op_info(op).attrs;
    bool leaf_named = is_leaf(op) && op != OpKind::constant;  // the name comes from the result
    std::size_t first = leaf_named ? 1 : 0;
    std::vector<std::optional<AttrValue>> got(specs.size());
    if (is_punct("{")) {
      advance();
      while (!is_punct("}")) {
        Token key = expect(Tok::Ident, "an attribute name");
        std::size_t k = first;
        while (k < specs.size() && specs[k].name != key.text) ++k;
        if (k == specs.size())
          lex_.fail(key, std::string(op_name(op)) + " has no attribute '" + key.text + "'");
        if (got[k]) lex_.fail(key, "attribute '" + key.text + "' is given twice");
        expect_punct("=");
        got[k] = parse_literal(specs[k].kind);
        if (is_punct("}")) break;
        expect_punct(",");
        if (is_punct("}")) lex_.fail(tok_, "expected an attribute name, found '}'");
      }
      advance();
    }
    std::vector<AttrValue> attrs;
    for (std::size_t k = first; k < specs.size(); ++k) {
      if (!got[k])
        lex_.fail(op_tok, std::string(op_name(op)) + " needs attribute '" +
                              std::string(specs[k].name) + "'");
      attrs.push_back(*got[k]);
    }
    return attrs;
  }

  AttrValue parse_literal(AttrKind kind) {
    Token t = tok_;
    if (kind == AttrKind::String) {
      expect(Tok::String, "a string");
      return t.text;
    }
    if (t.kind != Tok::Number && !(t.kind == Tok::Ident && (t.text == "inf" || t.text == "nan")))
      lex_.fail(t, "expected a number, found " + describe(t));
    advance();
    const char* begin = t.text.data();
    const char* end = begin + t.text.size();
    // from_chars takes no '+'; allow one, but not before another sign ("+-1").
    if (*begin == '+' && end - begin > 1 && begin[1] == '-')
      lex_.fail(t, "expected a number, found '" + t.text + "'");
    if (kind == AttrKind::Int) {
      std::int64_t v = 0;
      if (*begin == '+') ++begin;
      auto [ptr, ec] = std::from_chars(begin, end, v);
      if (ec != std::errc() || ptr != end) lex_.fail(t, "expected an integer, found '" + t.text + "'");
      return v;
    }
    double v = 0;
    if (*begin == '+') ++begin;
    auto [ptr, ec] = std::from_chars(begin, end, v);
    if (ec == std::errc::result_out_of_range)
      lex_.fail(t, "number '" + t.text + "' is out of range");
    if (ec != std::errc() || ptr != end) lex_.fail(t, "expected a number, found '" + t.text + "'");
    return v;
  }

  Shape parse_shape() {
    Token open = tok_;
    expect_punct("[");
    Shape s;
    while (true) {
      if (s.rank == 2) lex_.fail(tok_, "a shape has at most 2 dimensions");
      if (tok_.kind == Tok::Ident && tok_.text == "B") {
        s.dims[s.rank++] = Shape::kBatch;
        advance();
      } else {
        Token t = expect(Tok::Number, "a dimension (a number or B)");
        std::int64_t v = 0;
        auto [ptr, ec] = std::from_chars(t.text.data(), t.text.data() + t.text.size(), v);
        if (ec != std::errc() || ptr != t.text.data() + t.text.size() || v < 1)
          lex_.fail(t, "expected a positive dimension, found '" + t.text + "'");
        s.dims[s.rank++] = v;
      }
      if (is_punct("]")) break;
      expect_punct(",");
    }
    advance();
    (void)open;
    return s;
  }

  Lexer lex_;
  Token tok_;
  std::unordered_map<std::string, ValueId> values_;
};

}  // namespace

Cell parse_cell(std::string_view text, std::string_view source) {
  return Parser(text, source).parse();
}

Cell load_cell_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open the file");
  std::ostringstream buf;
  buf << in.rdbuf();
  return parse_cell(buf.str(), path);
}

}  // namespace cellfuse
