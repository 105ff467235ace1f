#include "compiler/kernel/lower_kernel.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include "compiler/ir/error.h"
#include "compiler/passes/fusion.h"

namespace cellfuse::kernel {
namespace {

class Lowering {
 public:
  explicit Lowering(const KernelContext& ctx)
      : ctx_(ctx), g_(ctx.stage->graph), in_group_(g_.size(), false),
        materialized_(g_.size(), false), invariant_(invariant_values(*ctx.stage)) {
    for (ValueId v : ctx.nodes) in_group_[v.index] = true;
    out_.kernel.name = ctx.name;
    out_.kernel.dtype = g_.dtype();
  }

  LoweredKernel run() {
    decide_memory();
    for (ValueId v : ctx_.nodes)
      if (materialized_[v.index]) define(v);
    merge_loops(out_.kernel);
    verify_kernel(out_.kernel);
    return std::move(out_);
  }

 private:
  // Which group values get memory of their own: what is read after the kernel, what a matrix
  // product or a reduction produces, what a matrix product reads, and values used more than
  // once that are costly to recompute.
  void decide_memory() {
    std::vector<int> uses(g_.size(), 0);
    std::vector<bool> product_operand(g_.size(), false);
    for (ValueId v : ctx_.nodes) {
      const Node& n = g_.node(v);
      for (ValueId in : n.inputs) uses[in.index]++;
      if (op_info(n.op).op_class == OpClass::Contraction) product_operand[n.inputs[0].index] = true;
    }
    std::vector<int> cost(g_.size(), 0);
    for (ValueId v : ctx_.nodes) {
      const Node& n = g_.node(v);
      OpClass cls = op_info(n.op).op_class;
      cost[v.index] = op_info(n.op).cost;
      for (ValueId in : n.inputs)
        if (in_group_[in.index] && !materialized_[in.index]) cost[v.index] += cost[in.index];
      std::string why;
      if (ctx_.needed_after[v.index]) {
        materialized_[v.index] = true;  // an output buffer
        continue;
      }
      if (cls == OpClass::Contraction) why = "the result of a fused matrix product";
      else if (cls == OpClass::Reduction) why = "a reduction, computed by a loop of its own";
      else if (product_operand[v.index]) why = "the operand of a fused matrix product";
      else if (uses[v.index] >= 2 && cost[v.index] >= 8)
        why = "used " + std::to_string(uses[v.index]) + " times and costly to recompute";
      if (!why.empty()) {
        materialized_[v.index] = true;
        out_.notes.push_back("scratch: " + g_.describe(v) + " is " + why);
      }
    }
  }

  int add_buffer(ValueId v, BufferRole role, bool transposed = false) {
    const Shape& s = g_.node(v).shape;
    Buffer b;
    b.name = g_.ref(v) + (transposed ? "^T" : "");
    b.role = role;
    b.batched = s.is_batched();
    b.rows = s.rank == 2 && !b.batched ? s.dims[0] : 1;
    b.cols = s.features();
    if (transposed) std::swap(b.rows, b.cols);
    b.transposed = transposed;
    out_.kernel.buffers.push_back(b);
    out_.values.push_back(role == BufferRole::Scratch ? ValueId{} : v);
    return static_cast<int>(out_.kernel.buffers.size()) - 1;
  }

  // The buffer holding `v` (as read by the kernel), made on first use.
  int buffer_of(ValueId v, bool transposed = false) {
    auto key = std::make_pair(v.index, transposed);
    if (auto it = buffers_.find(key); it != buffers_.end()) return it->second;
    const Node& n = g_.node(v);
    BufferRole role;
    if (in_group_[v.index] && materialized_[v.index])
      role = ctx_.needed_after[v.index] ? BufferRole::Output : BufferRole::Scratch;
    else if (n.op == OpKind::param)
      role = BufferRole::Param;
    else if (ctx_.available[v.index])
      role = BufferRole::Input;
    else
      throw Error(std::string(op_name(n.op)) + " " + g_.describe(v) +
                  ": this value is needed in memory by a compiled kernel but is computed from "
                  "parameters alone; the compiled backends do not support that yet");
    int b = add_buffer(v, role, transposed);
    buffers_[key] = b;
    return b;
  }

  bool in_memory(ValueId v) const {
    return (in_group_[v.index] && materialized_[v.index] && defined_.count(v.index)) ||
           (!in_group_[v.index] && ctx_.available[v.index]) || g_.node(v).op == OpKind::param;
  }

  // Statements that compute `v` into its buffer.
  void define(ValueId v) {
    const Node& n = g_.node(v);
    switch (op_info(n.op).op_class) {
      case OpClass::Contraction: define_product(v, n); break;
      case OpClass::Reduction: {
        ValueId in = n.inputs[0];
        std::int64_t extent = g_.node(in).shape.features();
        double scale = n.op == OpKind::mean ? 1.0 / static_cast<double>(extent) : 1.0;
        const OpKind combine = n.op == OpKind::amax ? OpKind::max : OpKind::add;
        const std::string partials = combine == OpKind::add ? "partial sums" : "partial maxima";
        // An element loop reads every column j of one concatenation piece at offset + j (emit
        // picks the piece holding the loop's first column), so a reduction over an inline
        // expression that changes pieces part-way (a cat, or a slice straddling one) must be
        // split at the piece boundaries like any other loop: each piece is summed by a loop of
        // its own into one column of a scratch row, and a last loop sums that row. Without the
        // split the loop ran past its first piece: out of bounds, or silently the wrong columns.
        std::vector<std::int64_t> points = loop_pieces(in, extent, false);
        int target = buffer_of(v);
        if (points.size() > 2) {
          Buffer partial = out_.kernel.buffers[static_cast<std::size_t>(target)];
          partial.name = partials + " of " + g_.ref(v);
          partial.role = BufferRole::Scratch;
          partial.cols = static_cast<std::int64_t>(points.size()) - 1;
          out_.kernel.buffers.push_back(partial);
          out_.values.push_back(ValueId{});
          target = static_cast<int>(out_.kernel.buffers.size()) - 1;
          out_.notes.push_back("scratch: " + partials + " of " + g_.describe(v) + ", one per concatenation piece (" +
                               std::to_string(partial.cols) + ") its input reads");
        }
        for (std::size_t s = 0; s + 1 < points.size(); ++s) {
          Loop loop{points[s + 1] - points[s], {}, {}, {}};
          Memo memo;
          int value = emit(loop, memo, in, points[s], false);
          loop.reductions.push_back({target, static_cast<std::int64_t>(s), value, scale, combine});
          push(std::move(loop));
        }
        if (points.size() > 2) {
          Loop loop{static_cast<std::int64_t>(points.size()) - 1, {}, {}, {}};
          Inst load;
          load.kind = Inst::Kind::Load;
          load.buffer = target;
          loop.reductions.push_back({buffer_of(v), 0, add_inst(loop, load), 1.0, combine});
          push(std::move(loop));
        }
        break;
      }
      default: {
        std::vector<std::int64_t> points = loop_pieces(v, n.shape.features(), true);
        for (std::size_t s = 0; s + 1 < points.size(); ++s) {
          Loop loop{points[s + 1] - points[s], {}, {}, {}};
          Memo memo;
          int value = emit(loop, memo, v, points[s], false, true);
          loop.stores.push_back({buffer_of(v), points[s], value});
          push(std::move(loop));
        }
      }
    }
    defined_.insert(v.index);
  }

  void define_product(ValueId v, const Node& n) {
    ValueId x = n.inputs[0], w = n.inputs[1];
    if (g_.node(w).op != OpKind::param)
      throw Error(std::string(op_name(n.op)) + " " + g_.describe(v) + ": the weight " +
                  g_.describe(w) + " must be a parameter for the compiled backends");
    if (!in_memory(x)) throw InternalError("matrix product operand not in memory");
    MatVec m;
    m.x = buffer_of(x);
    m.x_offset = 0;
    m.k = g_.node(x).shape.features();
    m.weight = buffer_of(w, n.op == OpKind::linear);
    if (n.inputs.size() == 3) m.bias = buffer_of(n.inputs[2]);
    m.out = buffer_of(v);
    m.out_offset = 0;
    m.n = n.shape.features();
    Statement s{Statement::Kind::MatVec, {}, m};
    out_.kernel.body.push_back(std::move(s));
  }

  void push(Loop loop) {
    Statement s{Statement::Kind::Loop, std::move(loop), {}};
    out_.kernel.body.push_back(std::move(s));
  }

  bool inline_here(ValueId v, bool top) const {
    return top || !in_memory(v);
  }

  // Where the loops computing `v`'s columns [0, extent) start and end: 0, every cut, extent.
  std::vector<std::int64_t> loop_pieces(ValueId v, std::int64_t extent, bool top) {
    std::set<std::int64_t> cuts{0, extent};
    find_cuts(v, 0, extent, cuts, top);
    return {cuts.begin(), cuts.end()};
  }

  // Loop positions where a concatenation inside `v`'s inline expression switches from one piece
  // to the next. `v` is read at columns [offset, offset + extent); cuts are reported relative to
  // the loop's start, which is `shift` loop positions before this read's start.
  void find_cuts(ValueId v, std::int64_t offset, std::int64_t extent, std::set<std::int64_t>& cuts,
                 bool top = false, std::int64_t shift = 0) {
    if (!inline_here(v, top)) return;
    const Node& n = g_.node(v);
    switch (n.op) {
      case OpKind::slice:
        find_cuts(n.inputs[0], offset + n.int_attr("start"), extent, cuts, false, shift);
        return;
      case OpKind::expand: return;  // a uniform value: no columns
      case OpKind::cat: {
        std::int64_t start = 0;
        for (ValueId part : n.inputs) {
          std::int64_t width = g_.node(part).shape.features();
          std::int64_t lo = std::max(start, offset), hi = std::min(start + width, offset + extent);
          if (lo < hi) {
            cuts.insert(shift + lo - offset);
            cuts.insert(shift + hi - offset);
            find_cuts(part, lo - start, hi - lo, cuts, false, shift + lo - offset);
          }
          start += width;
        }
        return;
      }
      default:
        if (op_info(n.op).op_class == OpClass::Pointwise || n.op == OpKind::broadcast)
          for (ValueId in : n.inputs) find_cuts(in, offset, extent, cuts, false, shift);
    }
  }

  using Memo = std::map<std::tuple<std::uint32_t, std::int64_t, bool>, int>;

  int add_inst(Loop& loop, Inst inst) {
    loop.insts.push_back(std::move(inst));
    return static_cast<int>(loop.insts.size()) - 1;
  }

  // The instruction computing `v` at column offset + j (or at column `offset` for every j when
  // uniform). `top` forces `v` itself to be expanded even when it has memory (it is being
  // defined by this loop).
  int emit(Loop& loop, Memo& memo, ValueId v, std::int64_t offset, bool uniform, bool top = false) {
    auto key = std::make_tuple(v.index, offset, uniform);
    if (!top)
      if (auto it = memo.find(key); it != memo.end()) return it->second;
    const Node& n = g_.node(v);
    int result;
    if (!inline_here(v, top) || n.op == OpKind::input || n.op == OpKind::state) {
      Inst load;
      load.kind = Inst::Kind::Load;
      load.buffer = buffer_of(v);
      load.offset = offset;
      load.uniform = uniform;
      result = add_inst(loop, load);
    } else {
      switch (n.op) {
        case OpKind::constant: {
          Inst c;
          c.kind = Inst::Kind::Const;
          c.value = n.float_attr("value");
          result = add_inst(loop, c);
          break;
        }
        case OpKind::slice: result = emit(loop, memo, n.inputs[0], offset + n.int_attr("start"), uniform); break;
        case OpKind::broadcast: result = emit(loop, memo, n.inputs[0], offset, uniform); break;
        case OpKind::expand: result = emit(loop, memo, n.inputs[0], 0, true); break;
        case OpKind::cat: {
          std::int64_t start = 0;
          result = -1;
          for (ValueId part : n.inputs) {
            std::int64_t width = g_.node(part).shape.features();
            if (offset >= start && offset < start + width) {
              result = emit(loop, memo, part, offset - start, uniform);
              break;
            }
            start += width;
          }
          if (result < 0) throw InternalError("cat piece not found");
          break;
        }
        default: {
          if (!is_pointwise(n.op))
            throw InternalError(std::string(op_name(n.op)) + " reached inline emission");
          Inst c;
          c.kind = Inst::Kind::Compute;
          c.op = n.op;
          for (ValueId in : n.inputs) c.args.push_back(emit(loop, memo, in, offset, uniform));
          result = add_inst(loop, c);
        }
      }
    }
    memo[key] = result;
    return result;
  }

  const KernelContext& ctx_;
  const Graph& g_;
  std::vector<bool> in_group_, materialized_, invariant_;
  std::set<std::uint32_t> defined_;
  std::map<std::pair<std::uint32_t, bool>, int> buffers_;
  LoweredKernel out_;
};

// Instructions of `loop` that a store or reduction needs, in order; everything else is dropped.
void drop_dead_instructions(Loop& loop) {
  std::vector<bool> live(loop.insts.size(), false);
  for (const auto& s : loop.stores) live[s.value] = true;
  for (const auto& r : loop.reductions) live[r.value] = true;
  for (std::size_t i = loop.insts.size(); i-- > 0;)
    if (live[i])
      for (int a : loop.insts[i].args) live[a] = true;
  std::vector<int> remap(loop.insts.size(), -1);
  std::vector<Inst> kept;
  for (std::size_t i = 0; i < loop.insts.size(); ++i) {
    if (!live[i]) continue;
    Inst inst = loop.insts[i];
    for (int& a : inst.args) a = remap[a];
    remap[i] = static_cast<int>(kept.size());
    kept.push_back(std::move(inst));
  }
  loop.insts = std::move(kept);
  for (auto& s : loop.stores) s.value = remap[s.value];
  for (auto& r : loop.reductions) r.value = remap[r.value];
}

// Can `later` run inside `earlier`'s loop? Only if it reads what `earlier` writes at the very
// column `earlier` writes it in the same iteration.
bool can_merge(const Loop& earlier, const Loop& later) {
  if (earlier.extent != later.extent) return false;
  for (const Inst& in : later.insts) {
    if (in.kind != Inst::Kind::Load) continue;
    for (const auto& r : earlier.reductions)
      if (r.buffer == in.buffer) return false;
    for (const auto& s : earlier.stores)
      if (s.buffer == in.buffer && (in.uniform || in.offset != s.offset)) {
        // A read of another column range of the same buffer is fine if it does not overlap.
        std::int64_t lo = in.uniform ? in.offset : in.offset, hi = in.uniform ? in.offset + 1 : in.offset + earlier.extent;
        if (lo < s.offset + earlier.extent && s.offset < hi) return false;
      }
  }
  return true;
}

void merge_into(Loop& earlier, const Loop& later) {
  std::vector<int> remap(later.insts.size());
  for (std::size_t i = 0; i < later.insts.size(); ++i) {
    Inst inst = later.insts[i];
    if (inst.kind == Inst::Kind::Load && !inst.uniform) {
      bool forwarded = false;
      for (const auto& s : earlier.stores)
        if (s.buffer == inst.buffer && s.offset == inst.offset) {
          remap[i] = s.value;
          forwarded = true;
          break;
        }
      if (forwarded) continue;
    }
    for (int& a : inst.args) a = remap[a];
    earlier.insts.push_back(std::move(inst));
    remap[i] = static_cast<int>(earlier.insts.size()) - 1;
  }
  for (Store s : later.stores) {
    s.value = remap[s.value];
    earlier.stores.push_back(s);
  }
  for (Reduction r : later.reductions) {
    r.value = remap[r.value];
    earlier.reductions.push_back(r);
  }
}

}  // namespace

void merge_loops(Kernel& kernel) {
  std::vector<Statement> merged;
  for (Statement& s : kernel.body) {
    if (!merged.empty() && s.kind == Statement::Kind::Loop &&
        merged.back().kind == Statement::Kind::Loop && can_merge(merged.back().loop, s.loop)) {
      merge_into(merged.back().loop, s.loop);
      continue;
    }
    merged.push_back(std::move(s));
  }
  kernel.body = std::move(merged);
  // Scratch stores that no statement reads any more (every read was forwarded) are dead.
  std::set<int> read;
  for (const Statement& s : kernel.body) {
    if (s.kind == Statement::Kind::MatVec) {
      read.insert(s.matvec.x);
      continue;
    }
    for (const Inst& in : s.loop.insts)
      if (in.kind == Inst::Kind::Load) read.insert(in.buffer);
  }
  for (Statement& s : kernel.body) {
    if (s.kind != Statement::Kind::Loop) continue;
    auto& stores = s.loop.stores;
    stores.erase(std::remove_if(stores.begin(), stores.end(),
                                [&](const Store& st) {
                                  return kernel.buffers[st.buffer].role == BufferRole::Scratch &&
                                         !read.count(st.buffer);
                                }),
                 stores.end());
    drop_dead_instructions(s.loop);
  }
  kernel.body.erase(std::remove_if(kernel.body.begin(), kernel.body.end(),
                                   [](const Statement& s) {
                                     return s.kind == Statement::Kind::Loop && s.loop.stores.empty() &&
                                            s.loop.reductions.empty();
                                   }),
                    kernel.body.end());
}

LoweredKernel lower_kernel(const KernelContext& context) { return Lowering(context).run(); }

}  // namespace cellfuse::kernel
