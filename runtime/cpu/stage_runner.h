#pragma once
// Runs one compiled stage (see compiler/kernel/stage_program.h) on the CPU: binds every value of
// the stage to memory, calls the GEMMs and the generated kernels in order, and spreads each over
// the team. Everything is allocated when the runner is made; a run only rebinds pointers, so the
// time loop allocates nothing per step.
#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <type_traits>
#include <vector>

#include "compiler/codegen/llvm/kernel_codegen.h"
#include "compiler/kernel/stage_program.h"
#include "compiler/pipeline.h"
#include "runtime/cpu/blas.h"
#include "runtime/cpu/packed_gemm.h"
#include "runtime/cpu/team.h"
#include "runtime/profile/recorder.h"
#include "runtime/tensor.h"

namespace cellfuse::cpu {

// Rows one kernel call covers at most; scratch memory is sized for this many rows.
constexpr std::int64_t kRowChunk = 64;
// Below these amounts of work a kernel runs on one thread: waking the team costs more.
constexpr std::int64_t kMinSharedProduct = 64 * 1024;   // multiply-adds of fused products
constexpr std::int64_t kMinSharedElements = 32 * 1024;  // elements of element loops

struct CompiledStage {
  const SequenceStage* stage = nullptr;
  StageProgram program;
  std::vector<llvm_codegen::KernelFunction> functions;  // per program step; null for a GEMM
};

template <class T>
class StageRunner {
 public:
  StageRunner(const CompiledStage& cs, std::int64_t rows, Team& team)
      : cs_(cs), stage_(*cs.stage->cell), g_(stage_.graph), rows_(rows), team_(team),
        where_(g_.size(), nullptr) {
    for (ValueId v : cs.program.temporaries) {
      temporaries_.emplace_back(static_cast<std::size_t>(rows * g_.node(v).shape.features()));
      where_[v.index] = temporaries_.back().data();
    }
    for (std::size_t i = 0; i < cs.program.steps.size(); ++i) plan_call(i);
    plan_packed_products();
    direct_output_.assign(stage_.outputs.size(), false);
    std::vector<bool> taken(g_.size(), false);
    for (std::size_t o = 0; o < stage_.outputs.size(); ++o) {
      ValueId v = stage_.outputs[o].value;
      direct_output_[o] = !is_leaf(g_.node(v).op) && !taken[v.index];
      taken[v.index] = true;
    }
    output_memory_.assign(stage_.outputs.size(), nullptr);
  }

  std::int64_t rows() const { return rows_; }

  // Binds the parameters for the runs to come, and refreshes the rearranged copies that products
  // read (transposed for fused products, packed for GEMM steps) of the parameters that changed
  // since the last run: a caller running many sequences with the same weights (inference, a
  // sampler) rearranges them once, where a transposition costs a sequence of 1000 small steps
  // about 7% of its time.
  void bind_params(const std::vector<const T*>& params) {
    for (std::size_t p = 0; p < stage_.params.size(); ++p)
      where_[stage_.params[p].index] = const_cast<T*>(params[cs_.stage->params[p]]);
    for (auto& [index, copy] : transposed_) {
      const Shape& s = g_.nodes()[index].shape;  // [n, k]; the copy is [k, n], maybe in panels
      if (!changed(index, s.dims[0] * s.dims[1])) continue;
      transpose(where_[index], copy.data(), s.dims[0], s.dims[1]);
      if (std::int64_t panel = panels_[index]; panel > 0) pack_panels(copy, s.dims[1], s.dims[0], panel);
    }
    if constexpr (std::is_same_v<T, float>)
      for (std::size_t i = 0; i < packed_.size(); ++i)
        if (packed_[i]) {
          const GemmStep& gm = cs_.program.steps[i].gemm;
          if (changed(gm.weight.index, gm.k * gm.n))
            packed_[i]->pack(where_[gm.weight.index], gm.transposed, gm.k, gm.n);
        }
    for (auto& [index, snapshot] : snapshots_) snapshot.compared = false;
  }

  // Binds a value to memory owned by the caller (stage inputs, states).
  void bind(ValueId v, T* memory) { where_[v.index] = memory; }
  T* at(ValueId v) const { return where_[v.index]; }

  // Has the stage write its outputs straight into `memory[o]` ([rows, cols] each); an output
  // that is a leaf, or a value another output already took, is copied there after the run.
  void bind_outputs(const T* const* memory) {
    for (std::size_t o = 0; o < output_memory_.size(); ++o) {
      output_memory_[o] = const_cast<T*>(memory[o]);
      if (direct_output_[o]) where_[stage_.outputs[o].value.index] = output_memory_[o];
    }
  }

  void run() {
    // Profiling (runtime/profile): off, one load of a null pointer per stage run.
    profile::Recorder* rec = profile::active();
    if (rec) {
      const auto& sites = profile::sites_for(*rec, sites_generation_, sites_, stage_, cs_.program.steps, rows_, sizeof(T));
      for (std::size_t i = 0; i < cs_.program.steps.size(); ++i) {
        const std::int64_t begin = profile::Recorder::now_ns();
        run_step(i);
        rec->call(sites[i], begin, profile::Recorder::now_ns());
      }
    } else {
      for (std::size_t i = 0; i < cs_.program.steps.size(); ++i) run_step(i);
    }
    for (std::size_t o = 0; o < output_memory_.size(); ++o)
      if (!direct_output_[o]) {
        ValueId v = stage_.outputs[o].value;
        std::memcpy(output_memory_[o], at(v),
                    static_cast<std::size_t>(rows_ * g_.node(v).shape.features()) * sizeof(T));
      }
  }

 private:
  void run_step(std::size_t i) {
    const ProgramStep& step = cs_.program.steps[i];
    if (step.kind == ProgramStep::Kind::Gemm) {
      const GemmStep& gm = step.gemm;
      if constexpr (std::is_same_v<T, float>)
        if (packed_[i]) {
          packed_[i]->multiply(team_, at(gm.x), gm.bias.valid() ? at(gm.bias) : nullptr, at(gm.out), rows_);
          return;
        }
      gemm<T>(team_, at(gm.x), at(gm.weight), gm.transposed, gm.bias.valid() ? at(gm.bias) : nullptr,
              at(gm.out), rows_, gm.k, gm.n);
      return;
    }
    run_kernel(i);
  }

  struct KernelCall {
    bool by_columns = false, by_rows = false;
    std::vector<std::vector<void*>> pointers;    // one set per part that needs its own scratch
    std::vector<std::pair<int, ValueId>> bound;  // buffers whose memory moves between runs
  };

  // How step i's kernel is called: small products over a few rows split their columns among
  // the team (one shared set of scratch buffers, barriers between statements); other kernels
  // split their rows (each part with its own scratch); work too small to share runs on the
  // caller alone.
  void plan_call(std::size_t i) {
    const ProgramStep& step = cs_.program.steps[i];
    calls_.emplace_back();
    if (step.kind != ProgramStep::Kind::Kernel) return;
    KernelCall& call = calls_.back();
    const auto& k = step.kernel.kernel;
    std::int64_t extent = 0, product = 0;
    for (const auto& st : k.body) {
      if (st.kind == kernel::Statement::Kind::Loop) extent += st.loop.extent;
      else product += st.matvec.k * st.matvec.n;
    }
    const int parts = team_.size();
    call.by_columns = parts > 1 && product > 0 && rows_ * product >= kMinSharedProduct;
    call.by_rows = parts > 1 && !call.by_columns && rows_ * (extent + product) >= kMinSharedElements &&
                   rows_ >= 2 * parts;
    const int sets = call.by_rows ? parts : 1;
    const std::int64_t scratch_rows = call.by_columns ? rows_ : std::min(rows_, kRowChunk);
    call.pointers.assign(static_cast<std::size_t>(sets), std::vector<void*>(k.buffers.size(), nullptr));
    for (std::size_t b = 0; b < k.buffers.size(); ++b) {
      const auto& buf = k.buffers[b];
      ValueId v = step.kernel.buffers[b];
      if (buf.role == kernel::BufferRole::Scratch) {
        for (int set = 0; set < sets; ++set) {
          scratch_.emplace_back(static_cast<std::size_t>(scratch_rows * buf.cols));
          call.pointers[set][b] = scratch_.back().data();
        }
      } else if (buf.transposed) {
        auto& copy = transposed_[v.index];
        copy.resize(static_cast<std::size_t>(buf.rows * buf.cols));
        panels_[v.index] = buf.panel;
        for (int set = 0; set < sets; ++set) call.pointers[set][b] = copy.data();
      } else {
        call.bound.push_back({static_cast<int>(b), v});
      }
    }
  }

  // Whether parameter `index` ([size] elements, bound) differs bit for bit from the last time it
  // was rearranged; keeps a copy of its bits to tell. Compared once per bind_params.
  bool changed(std::uint32_t index, std::int64_t size) {
    Snapshot& snap = snapshots_[index];
    if (snap.compared) return snap.differs;
    const T* now = where_[index];
    const std::size_t bytes = static_cast<std::size_t>(size) * sizeof(T);
    snap.compared = true;
    snap.differs = !snap.taken || std::memcmp(snap.bits.data(), now, bytes) != 0;
    if (snap.differs) snap.bits.assign(now, now + size), snap.taken = true;
    return snap.differs;
  }

  // The products whose weights are packed once per sequence (packed_gemm.h): f32, a weight that
  // is a parameter of the stage (so bind_params sees every change), a CPU with the kernel. The
  // hoisted products over all T*B rows too: as fast as the BLAS there, and the bias costs no pass.
  void plan_packed_products() {
    packed_.resize(cs_.program.steps.size());
    if constexpr (std::is_same_v<T, float>) {
      if (!PackedWeights::supported()) return;
      for (std::size_t i = 0; i < cs_.program.steps.size(); ++i) {
        const ProgramStep& step = cs_.program.steps[i];
        if (step.kind != ProgramStep::Kind::Gemm) continue;
        if (std::find(stage_.params.begin(), stage_.params.end(), step.gemm.weight) != stage_.params.end())
          packed_[i].emplace();
      }
    }
  }

  // Rearranges a row-major [k, n] matrix into the panel layout of kernel::Buffer::panel.
  void pack_panels(std::vector<T>& m, std::int64_t k, std::int64_t n, std::int64_t panel) {
    packing_.resize(m.size());
    const std::int64_t packed = n / panel * panel, rest = n - packed;
    for (std::int64_t kk = 0; kk < k; ++kk) {
      const T* row = m.data() + kk * n;
      for (std::int64_t p = 0; p < packed; p += panel)
        std::copy(row + p, row + p + panel, packing_.data() + p * k + kk * panel);
      std::copy(row + packed, row + n, packing_.data() + packed * k + kk * rest);
    }
    std::copy(packing_.begin(), packing_.end(), m.begin());  // kernels hold m's address
  }

  void run_kernel(std::size_t i) {
    KernelCall& call = calls_[i];
    for (auto& set : call.pointers)
      for (const auto& [b, v] : call.bound) set[b] = where_[v.index];
    const auto fn = cs_.functions[i];
    const std::int64_t rows = rows_;
    if (call.by_columns) {
      team_.run([&](int part, int parts) {
        fn(call.pointers[0].data(), 0, rows, part, parts, &Team::barrier_callback, &team_);
      });
    } else if (call.by_rows) {
      team_.run([&](int part, int parts) {
        std::int64_t first = rows * part / parts, last = rows * (part + 1) / parts;
        for (std::int64_t r = first; r < last; r += kRowChunk)
          fn(call.pointers[part].data(), r, std::min(last, r + kRowChunk), 0, 1, nullptr, nullptr);
      });
    } else {
      for (std::int64_t r = 0; r < rows; r += kRowChunk)
        fn(call.pointers[0].data(), r, std::min(rows, r + kRowChunk), 0, 1, nullptr, nullptr);
    }
  }

  const CompiledStage& cs_;
  const Cell& stage_;
  const Graph& g_;
  std::int64_t rows_;
  Team& team_;
  std::vector<T*> where_;
  std::vector<std::vector<T>> temporaries_;
  std::map<std::uint32_t, std::vector<T>> transposed_;
  std::map<std::uint32_t, std::int64_t> panels_;
  std::vector<T> packing_;
  std::vector<std::optional<PackedWeights>> packed_;  // per program step
  struct Snapshot {
    std::vector<T> bits;  // the parameter as last rearranged
    bool taken = false;   // bits holds it (a parameter is never rearranged before its first run)
    bool compared = false, differs = false;
  };
  std::map<std::uint32_t, Snapshot> snapshots_;  // per parameter with a rearranged copy
  std::vector<std::vector<T>> scratch_;
  std::vector<KernelCall> calls_;
  std::vector<bool> direct_output_;
  std::vector<T*> output_memory_;
  std::vector<int> sites_;  // the profiler's ids of the steps, for the recorder of this generation
  std::uint64_t sites_generation_ = 0;
};

}  // namespace cellfuse::cpu
