#include "compiler/kernel/kernel.h"

#include <limits>

#include "compiler/ir/error.h"
#include "compiler/ir/text.h"

namespace cellfuse::kernel {
namespace {

const char* role_name(BufferRole role) {
  switch (role) {
    case BufferRole::Input: return "in";
    case BufferRole::Param: return "param";
    case BufferRole::Output: return "out";
    case BufferRole::Scratch: return "scratch";
  }
  return "?";
}

std::string col(std::int64_t offset, bool uniform) {
  if (uniform) return std::to_string(offset);
  return offset ? "j+" + std::to_string(offset) : "j";
}

}  // namespace

double reduction_identity(OpKind combine) {
  switch (combine) {
    case OpKind::add: return 0.0;
    case OpKind::max: return -std::numeric_limits<double>::infinity();
    default: throw InternalError("not a reduction combine: " + std::string(op_name(combine)));
  }
}

std::string print_kernel(const Kernel& k) {
  std::string out = "kernel " + k.name + " " + std::string(dtype_name(k.dtype)) +
                    (k.rows_hint > 0 ? " rows=" + std::to_string(k.rows_hint) : std::string()) + "\n";
  for (std::size_t b = 0; b < k.buffers.size(); ++b) {
    const Buffer& buf = k.buffers[b];
    out += "  b" + std::to_string(b) + " " + role_name(buf.role) + " " + buf.name + " [" +
           (buf.batched ? std::string("rows") : std::to_string(buf.rows)) + "," +
           std::to_string(buf.cols) + "]" + (buf.transposed ? " transposed" : "") +
           (buf.panel > 0 ? " panel=" + std::to_string(buf.panel) : std::string()) + "\n";
  }
  for (const Statement& s : k.body) {
    if (s.kind == Statement::Kind::MatVec) {
      const MatVec& m = s.matvec;
      out += "  matvec b" + std::to_string(m.out) + "[r, " + std::to_string(m.out_offset) + "+n] = b" +
             std::to_string(m.x) + "[r, " + std::to_string(m.x_offset) + "+k] * b" +
             std::to_string(m.weight) + "[k, n]" +
             (m.bias >= 0 ? " + b" + std::to_string(m.bias) + "[n]" : "") + "  (k<" +
             std::to_string(m.k) + ", n<" + std::to_string(m.n) + ")\n";
      continue;
    }
    const Loop& l = s.loop;
    out += "  loop j<" + std::to_string(l.extent) + "\n";
    for (std::size_t i = 0; i < l.insts.size(); ++i) {
      const Inst& in = l.insts[i];
      out += "    %" + std::to_string(i) + " = ";
      switch (in.kind) {
        case Inst::Kind::Load:
          out += "load b" + std::to_string(in.buffer) + "[" + col(in.offset, in.uniform) + "]";
          break;
        case Inst::Kind::Const: out += "const " + format_number(in.value); break;
        case Inst::Kind::Compute:
          out += std::string(op_name(in.op));
          for (std::size_t a = 0; a < in.args.size(); ++a)
            out += (a ? ", %" : " %") + std::to_string(in.args[a]);
          break;
      }
      out += "\n";
    }
    for (const Store& st : l.stores)
      out += "    store b" + std::to_string(st.buffer) + "[" + col(st.offset, false) + "] = %" +
             std::to_string(st.value) + "\n";
    for (const Reduction& r : l.reductions) {
      out += "    reduce b" + std::to_string(r.buffer) + "[" + std::to_string(r.column) + "] = ";
      if (r.combine == OpKind::add)
        out += "sum(%" + std::to_string(r.value) + ") * " + format_number(r.scale) + "\n";
      else
        out += std::string(op_name(r.combine)) + "(%" + std::to_string(r.value) + ")\n";
    }
  }
  return out;
}

void verify_kernel(const Kernel& k) {
  auto fail = [&](const std::string& why) {
    throw InternalError("kernel " + k.name + ": " + why + "\n" + print_kernel(k));
  };
  auto buffer = [&](int b) -> const Buffer& {
    if (b < 0 || b >= static_cast<int>(k.buffers.size())) fail("bad buffer b" + std::to_string(b));
    return k.buffers[b];
  };
  auto writable = [&](int b) {
    BufferRole r = buffer(b).role;
    if (r != BufferRole::Output && r != BufferRole::Scratch) fail("writes a read-only buffer");
  };
  for (const Statement& s : k.body) {
    if (s.kind == Statement::Kind::MatVec) {
      const MatVec& m = s.matvec;
      if (buffer(m.x).cols < m.x_offset + m.k) fail("matvec reads past its operand");
      if (buffer(m.weight).rows != m.k || buffer(m.weight).cols != m.n) fail("matvec weight shape");
      if (m.bias >= 0 && buffer(m.bias).cols != m.n) fail("matvec bias shape");
      writable(m.out);
      if (buffer(m.out).cols < m.out_offset + m.n) fail("matvec writes past its output");
      continue;
    }
    const Loop& l = s.loop;
    if (l.extent < 1) fail("empty loop");
    for (std::size_t i = 0; i < l.insts.size(); ++i) {
      const Inst& in = l.insts[i];
      if (in.kind == Inst::Kind::Load) {
        std::int64_t last = in.uniform ? in.offset : in.offset + l.extent - 1;
        if (in.offset < 0 || last >= buffer(in.buffer).cols) fail("load out of bounds");
      }
      if (in.kind == Inst::Kind::Compute) {
        if (!is_pointwise(in.op)) fail("a non-pointwise op in a loop");
        for (int a : in.args)
          if (a < 0 || a >= static_cast<int>(i)) fail("an instruction uses a later one");
      }
    }
    auto check_value = [&](int v) {
      if (v < 0 || v >= static_cast<int>(l.insts.size())) fail("bad instruction reference");
    };
    for (const Store& st : l.stores) {
      writable(st.buffer);
      check_value(st.value);
      if (st.offset < 0 || st.offset + l.extent > buffer(st.buffer).cols) fail("store out of bounds");
    }
    for (const Reduction& r : l.reductions) {
      writable(r.buffer);
      check_value(r.value);
      if (r.column < 0 || r.column >= buffer(r.buffer).cols) fail("reduction out of bounds");
      if (r.combine != OpKind::add && r.combine != OpKind::max) fail("a reduction combines with neither add nor max");
    }
  }
}

}  // namespace cellfuse::kernel
