#pragma once
// The emitter of the loop-stage kernels that run every step in one launch (cuda_persistent.h):
// the grid-wide persistent kernel (cuda_persistent.cpp) and the block-resident one
// (cuda_resident.cpp) share where values live, the statements of a step and the barrier
// analysis between them; they differ in where products' weights and the step's values live and
// in the barrier. Internal to compiler/codegen/cuda.
#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "compiler/codegen/cuda/cuda_emitter.h"
#include "compiler/codegen/cuda/cuda_persistent.h"
#include "compiler/codegen/cuda/cuda_text.h"

namespace cellfuse::cuda_codegen::loop_detail {

// The grid barrier and the dynamic shared memory macro (cuda_persistent.cpp), once per
// translation unit whichever loop kernels it holds.
extern const char* const kLoopPrelude;

class PersistentEmitter : SourceText {
 public:
  // `spill` (Block only): the step's temporaries and scratch in global memory (cf_ws) instead of
  // shared memory, and the inputs read where they are, for stages whose temporaries at this
  // batch would not fit beside the weights.
  PersistentEmitter(const Cell& stage, std::int64_t batch, const std::string& name, int threads, LoopScope scope,
                    bool spill = false)
      : c_(stage), g_(stage.graph), B_(batch), block_(scope == LoopScope::Block), spill_(spill), asked_threads_(threads) {
    out_.batch = batch;
    out_.scope = scope;
    out_.threads = threads;
    out_.dtype = g_.dtype();
    T_ = out_.dtype == DType::f32 ? "float" : "double";
    name_ = name;
  }

  PersistentLoop run() {
    out_.program = compile_stage(c_, /*fuse_small_products=*/true, name_);
    if (!fits()) return std::move(out_);
    if (block_ && out_.threads <= 0) out_.threads = block_threads();
    place();
    emit();
    if (block_ && !spill_ && out_.shared_bytes(1) > kMaxBlockSharedBytes)
      return PersistentEmitter(c_, B_, name_, asked_threads_, LoopScope::Block, /*spill=*/true).run();
    if (block_ && out_.shared_bytes(1) > kMaxBlockSharedBytes) {
      out_.reason = "the resident loop needs " + str(out_.shared_bytes(1)) + " bytes of shared memory, more than a block has (" +
                    str(kMaxBlockSharedBytes) + ")";
      out_.source.clear();
      return std::move(out_);
    }
    out_.name = name_;
    return std::move(out_);
  }

 private:
  bool fail(const std::string& why) {
    out_.reason = why;
    return false;
  }

  bool fits() {
    for (const auto& step : out_.program.steps)
      if (step.kind == ProgramStep::Kind::Gemm)
        return fail("a product of the loop stage cannot be fused into a kernel (" + g_.describe(step.gemm.out) + ")");
    std::set<std::uint32_t> seen;
    for (std::size_t o = 0; o < c_.outputs.size(); ++o) {
      ValueId v = c_.outputs[o].value;
      // One block copies a state or input that is also an output (the tape of a training forward
      // keeps every step's starting state) during the step; the grid kernel computes outputs only.
      if (is_leaf(g_.node(v).op) && !(block_ && is_state_or_input(v)))
        return fail("a loop output is a leaf (" + g_.describe(v) + "), not computed by a kernel");
      // One block copies each output out of shared memory after the step: one value can go to
      // several outputs (a backward step's gradient often does). The grid kernel writes outputs
      // in place, once.
      if (!seen.insert(v.index).second && !block_) return fail("two loop outputs are the same value");
    }
    for (ValueId v : c_.next_states)
      if (is_leaf(g_.node(v).op)) return fail("a next state is a leaf (" + g_.describe(v) + "), not computed by a kernel");
    for (const auto& step : out_.program.steps)
      for (const auto& st : step.kernel.kernel.body)
        if (st.kind == kernel::Statement::Kind::MatVec) {
          const auto& buf = step.kernel.kernel.buffers[static_cast<std::size_t>(st.matvec.weight)];
          if (buf.role != kernel::BufferRole::Param) return fail("a fused product's weight is not a parameter");
        }
    return true;
  }

  // One block: enough threads for the widest product's columns, each with a few of its k.
  int block_threads() const;

  // One block: every param that statements read element by element (not a product's weight,
  // which gets its K-major copy) is copied into shared memory once.
  void stage_params();

  bool is_state_or_input(ValueId v) const {
    for (ValueId s : c_.states)
      if (s == v) return true;
    for (ValueId i : c_.inputs)
      if (i == v) return true;
    return false;
  }

  // `elements` of workspace: in the block's shared memory (one block, `shared`) or global memory.
  std::string allocate(std::int64_t elements, bool shared) {
    if (block_ && shared) {
      block_temps_ += elements;
      return "cf_sws + " + str(block_temps_ - elements);
    }
    out_.workspace_elements += elements;
    return "cf_ws + " + str(out_.workspace_elements - elements);
  }

  // Where every value and scratch buffer lives.
  void place() {
    for (std::size_t i = 0; i < c_.inputs.size(); ++i) role_[c_.inputs[i].index] = {'i', static_cast<int>(i)};
    for (std::size_t s = 0; s < c_.states.size(); ++s) role_[c_.states[s].index] = {'s', static_cast<int>(s)};
    for (std::size_t p = 0; p < c_.params.size(); ++p) role_[c_.params[p].index] = {'p', static_cast<int>(p)};
    for (std::size_t o = 0; o < c_.outputs.size(); ++o) {
      const ValueId v = c_.outputs[o].value;
      if (!block_) {
        role_[v.index] = {'o', static_cast<int>(o)};
        continue;
      }
      // One block: the step's outputs in shared memory (two slots, as next states), copied out
      // after the step's barrier while the next step computes.
      if (role_.count(v.index)) continue;  // the same value as an earlier output, or a state or input
      role_[v.index] = {'n', 0};
      temp_[v.index] = allocate(2 * B_ * cols(v), /*shared=*/true);
    }
    if (block_) stage_params();
    std::set<std::uint32_t> next;
    for (ValueId v : c_.next_states) next.insert(v.index);
    for (std::size_t ki = 0; ki < out_.program.steps.size(); ++ki) {
      const auto& step = out_.program.steps[ki].kernel;
      for (std::size_t b = 0; b < step.kernel.buffers.size(); ++b) {
        const auto& buf = step.kernel.buffers[b];
        if (buf.role == kernel::BufferRole::Scratch) {
          scratch_[{ki, b}] = allocate((buf.batched ? B_ : buf.rows) * buf.cols, /*shared=*/!spill_);
          continue;
        }
        ValueId v = step.buffers[b];
        if (role_.count(v.index)) continue;
        const std::int64_t n = B_ * g_.node(v).shape.features();
        role_[v.index] = {next.count(v.index) ? 'n' : 't', 0};
        temp_[v.index] = allocate(next.count(v.index) ? 2 * n : n, /*shared=*/next.count(v.index) || !spill_);
      }
    }
  }

  std::int64_t cols(ValueId v) const { return g_.node(v).shape.features(); }

  // A pointer expression to row 0 of value v in the step at (k, t).
  std::string value_base(ValueId v) const {
    auto [kind, index] = role_.at(v.index);
    const std::string n = str(B_ * cols(v));
    switch (kind) {
      case 'i': return block_ && !spill_ ? "(cf_in" + str(index) + " + (k & 1) * " + n + ")" : "(in" + str(index) + " + t * " + n + ")";
      case 's': return "cf_st" + str(index);
      case 'p': return block_ && staged_.count(index) ? "cf_sp" + str(index) : "param" + str(index);
      case 'o': return "(out" + str(index) + " + t * " + n + ")";
      case 'n': return "(" + temp_.at(v.index) + " + (k & 1) * " + n + ")";
      default: return "(" + temp_.at(v.index) + ")";
    }
  }

  std::string base(std::size_t ki, int b) const {
    const auto& step = out_.program.steps[ki].kernel;
    if (step.kernel.buffers[static_cast<std::size_t>(b)].role == kernel::BufferRole::Scratch)
      return "(" + scratch_.at({ki, static_cast<std::size_t>(b)}) + ")";
    return value_base(step.buffers[static_cast<std::size_t>(b)]);
  }

  // Memory identity of a buffer, for the barrier analysis.
  std::string identity(std::size_t ki, int b) const {
    const auto& step = out_.program.steps[ki].kernel;
    if (step.kernel.buffers[static_cast<std::size_t>(b)].role == kernel::BufferRole::Scratch)
      return "s" + str(static_cast<std::int64_t>(ki)) + "_" + str(b);
    return "v" + str(step.buffers[static_cast<std::size_t>(b)].index);
  }

  bool is_param(std::size_t ki, int b) const {
    return out_.program.steps[ki].kernel.kernel.buffers[static_cast<std::size_t>(b)].role == kernel::BufferRole::Param;
  }

  // Element (row, col) of buffer b of kernel ki, as an lvalue (store) or a load.
  std::string element(std::size_t ki, int b, const std::string& col) const {
    const auto& buf = out_.program.steps[ki].kernel.kernel.buffers[static_cast<std::size_t>(b)];
    const std::string index = buf.batched ? "row * " + str(buf.cols) + " + " + col : col;
    return base(ki, b) + "[" + index + "]";
  }
  std::string load(std::size_t ki, int b, const std::string& col) const {
    if (is_param(ki, b) || block_) return element(ki, b, col);  // one block: no other block's writes to see
    return "__ldcg(&" + element(ki, b, col) + ")";
  }

  std::vector<std::string> body(std::size_t ki, const kernel::Loop& loop) {
    return emit_element([this](const std::string& text) { line(text); }, loop, out_.dtype,
                        {[this, ki](int b, const std::string& col) { return load(ki, b, col); },
                         [this, ki](int b, const std::string& col) { return element(ki, b, col); }});
  }

  void accesses(std::size_t ki, const kernel::Statement& st, std::set<std::string>& reads, std::set<std::string>& writes) const {
    if (st.kind == kernel::Statement::Kind::MatVec) {
      reads.insert(identity(ki, st.matvec.x));
      writes.insert(identity(ki, st.matvec.out));
      return;
    }
    for (const auto& in : st.loop.insts)
      if (in.kind == kernel::Inst::Kind::Load && !is_param(ki, in.buffer)) reads.insert(identity(ki, in.buffer));
    for (const auto& s : st.loop.stores) writes.insert(identity(ki, s.buffer));
    for (const auto& r : st.loop.reductions) writes.insert(identity(ki, r.buffer));
  }

  void grid_sync() {
    line(block_ ? "__syncthreads();" : "cf_grid_sync(cf_bar);");
    ++out_.barriers_per_step;
  }

  void emit_loop(std::size_t ki, const kernel::Loop& loop) {
    const std::string th = str(out_.threads), E = str(loop.extent);
    line("for (long long e = static_cast<long long>(blockIdx.x) * " + th + " + threadIdx.x; e < " + str(B_ * loop.extent) +
         "; e += static_cast<long long>(gridDim.x) * " + th + ") {");
    ++indent_;
    line("const long long row = e / " + E + ";");
    line("const int j = static_cast<int>(e % " + E + ");");
    line("(void)row;");
    body(ki, loop);
    --indent_;
    line("}");
  }

  // One block a row: the block's threads sum their columns, then a fixed-order tree.
  void emit_reduction_loop(std::size_t ki, const kernel::Loop& loop) {
    const std::string th = str(out_.threads);
    line("for (long long row = blockIdx.x; row < " + str(B_) + "; row += gridDim.x) {");
    ++indent_;
    auto emit_line = [this](const std::string& text) { line(text); };
    declare_accumulators(emit_line, loop, out_.dtype, "0");
    line("for (int j = threadIdx.x; j < " + str(loop.extent) + "; j += " + th + ") {");
    ++indent_;
    fold_accumulators(emit_line, loop, body(ki, loop), out_.dtype);
    --indent_;
    line("}");
    for (std::size_t r = 0; r < loop.reductions.size(); ++r)
      line("cf_red[" + str(static_cast<std::int64_t>(r) * out_.threads) + " + threadIdx.x] = acc" + str(static_cast<std::int64_t>(r)) + ";");
    line("__syncthreads();");
    line("for (int step = " + str(out_.threads / 2) + "; step > 0; step /= 2) {");
    ++indent_;
    line("if (threadIdx.x < step) {");
    for (std::size_t r = 0; r < loop.reductions.size(); ++r) {
      const std::string at = str(static_cast<std::int64_t>(r) * out_.threads) + " + threadIdx.x";
      line("  " + cuda_combine(loop.reductions[r].combine, "cf_red[" + at + "]", "cf_red[" + at + " + step]", out_.dtype));
    }
    line("}");
    line("__syncthreads();");
    --indent_;
    line("}");
    line("if (threadIdx.x == 0) {");
    for (std::size_t r = 0; r < loop.reductions.size(); ++r) {
      const auto& red = loop.reductions[r];
      line("  " + element(ki, red.buffer, str(red.column)) + " = cf_red[" + str(static_cast<std::int64_t>(r) * out_.threads) + "]" +
           (red.combine == OpKind::add ? " * " + cuda_literal(red.scale, out_.dtype) : "") + ";");
    }
    line("}");
    line("__syncthreads();");
    --indent_;
    line("}");
    out_.reductions = std::max(out_.reductions, static_cast<int>(loop.reductions.size()));
  }

  // The index of the loop-stage param a kernel buffer holds.
  int param_index(std::size_t ki, int b) const {
    return role_.at(out_.program.steps[ki].kernel.buffers[static_cast<std::size_t>(b)].index).second;
  }

  // One block: how many threads share a column of `m` (cuda_resident_matvec.h).
  int product_splits(const kernel::MatVec& m) const;

  // One block: the whole product from the resident weight (cuda_resident_matvec.h).
  void emit_block_matvec(std::size_t ki, const kernel::MatVec& m, int p);

  // Grid: block x owns columns [N x / G, N (x+1) / G) of the product, its weight slice in shared
  // memory (cf_w<p>[c * K + k]); the operand's rows are staged in shared memory, each output is
  // summed by S threads over k = s, s + S, ... and a fixed-order tree. Block: emit_block_matvec.
  void emit_matvec(std::size_t ki, const kernel::MatVec& m, int p);

  struct Mv {
    std::size_t ki;
    kernel::MatVec m;
  };

  // The block-resident kernel after its signature: shared memory laid out and filled (weights
  // K-major, params, step 0's inputs), the steps, the final states.
  void emit_block(const std::vector<Mv>& mvs);

  void emit();

  // Every statement of one step, in order, with a barrier wherever one reads or overwrites what
  // an earlier one (since the last barrier) wrote or read; and the barrier that ends the step.
  void emit_statements() {
    out_.barriers_per_step = 0;
    std::set<std::string> pending_reads, pending_writes;
    int p = 0;
    bool first = true;
    for (std::size_t ki = 0; ki < out_.program.steps.size(); ++ki) {
      for (const auto& st : out_.program.steps[ki].kernel.kernel.body) {
        std::set<std::string> reads, writes;
        accesses(ki, st, reads, writes);
        bool conflict = false;
        for (const auto& r : reads) conflict |= pending_writes.count(r) > 0;
        for (const auto& w : writes) conflict |= pending_writes.count(w) > 0 || pending_reads.count(w) > 0;
        if (conflict && !first) {
          grid_sync();
          pending_reads.clear();
          pending_writes.clear();
        }
        first = false;
        // One block: a reduction loop, and a product whose columns are split between threads, end
        // with __syncthreads() of their own, after which nothing is pending.
        bool ends_with_barrier = false;
        if (st.kind == kernel::Statement::Kind::MatVec) {
          ends_with_barrier = block_ && product_splits(st.matvec) > 1;
          emit_matvec(ki, st.matvec, p++);
        } else if (st.loop.reductions.empty()) {
          emit_loop(ki, st.loop);
        } else {
          ends_with_barrier = block_;
          emit_reduction_loop(ki, st.loop);
        }
        if (ends_with_barrier) {
          pending_reads.clear();
          pending_writes.clear();
          continue;
        }
        pending_reads.insert(reads.begin(), reads.end());
        pending_writes.insert(writes.begin(), writes.end());
      }
    }
    if (!block_) grid_sync();  // the next step reads what this one wrote (Block: after the prefetch stores)
  }

  const Cell& c_;
  const Graph& g_;
  std::int64_t B_;
  bool block_;
  std::set<int> staged_;       // one block: params copied into shared memory (cf_sp<p>)
  std::map<int, std::int64_t> staged_sizes_;  // and their elements
  std::string T_, name_;
  PersistentLoop out_;
  std::map<std::uint32_t, std::pair<char, int>> role_;
  // Where each temporary and scratch buffer starts: "cf_ws + <offset>" (global) or, one block,
  // "cf_sws + <offset>" (shared).
  std::map<std::uint32_t, std::string> temp_;
  std::map<std::pair<std::size_t, std::size_t>, std::string> scratch_;
  bool spill_;
  int asked_threads_;
  std::int64_t block_temps_ = 0;  // elements of cf_sws
};

}  // namespace cellfuse::cuda_codegen::loop_detail
