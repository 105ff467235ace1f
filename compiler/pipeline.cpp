#include "compiler/pipeline.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>

#include "compiler/ir/error.h"
#include "compiler/ir/text.h"
#include "compiler/ir/verifier.h"
#include "compiler/lower.h"

namespace cellfuse {
namespace {

const char* const kStageNames[3] = {"pre", "loop", "post"};

const SequenceStage* stage_of(const SequencePlan& plan, int s) {
  const SequenceStage* stages[3] = {&plan.pre, &plan.loop, &plan.post};
  return stages[s];
}

// Runs one stage: times it and logs its name, wall time and (when asked) its result as text.
class StageDriver {
 public:
  StageDriver(const TargetOptions& options, std::vector<StageLog>& log) : options_(options), log_(log) {}

  template <class Fn, class Text>
  auto run(const std::string& name, Fn&& fn, Text&& text) {
    auto start = std::chrono::steady_clock::now();
    auto result = fn();
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    log_.push_back({name, ms, options_.stage_text ? text(result) : std::string(),
                    std::chrono::duration_cast<std::chrono::nanoseconds>(start.time_since_epoch()).count()});
    return result;
  }

 private:
  const TargetOptions& options_;
  std::vector<StageLog>& log_;
};

std::string print_stages(const SequencePlan& plan, const StagePrograms& programs) {
  std::string out;
  for (int s = 0; s < 3; ++s)
    if (stage_of(plan, s)->cell)
      out += "# program of stage " + std::string(kStageNames[s]) + "\n" +
             print_program(*stage_of(plan, s)->cell, programs[s]) + "\n";
  return out;
}

// Every stage from an unoptimized cell to the target's code, for one program.
CompiledProgram compile_program(const Cell& cell, const TargetOptions& o, const std::string& label,
                                std::vector<StageLog>& log) {
  StageDriver driver(o, log);
  const std::string at = label.empty() ? "" : label + ": ";
  CompiledProgram p;
  // The graph passes log themselves, one entry a pass and round, under this stage's entry.
  std::vector<StageLog> passes;
  p.cell = driver.run(at + "optimize", [&] { return optimize(cell, &passes, o.stage_text); }, print_cell);
  for (std::size_t i = 1; i < passes.size(); ++i)  // [0] is the input, logged by verify
    log.push_back({at + passes[i].name, passes[i].ms, std::move(passes[i].text), passes[i].start_ns});
  p.plan = driver.run(at + "hoist", [&] { return hoist_stage(p.cell, o); }, print_plan);
  auto fusion = driver.run(at + "fuse", [&] { return fuse_stage(p.plan, o); }, [&](const std::array<StageFusion, 3>& f) {
    std::string out;
    for (int s = 0; s < 3; ++s)
      if (stage_of(p.plan, s)->cell)
        out += "# fusion of stage " + std::string(kStageNames[s]) + "\n" + print_fusion(*stage_of(p.plan, s)->cell, f[s].plan);
    return out;
  });
  for (int s = 0; s < 3; ++s) p.products_fused[s] = fusion[s].products_fused;
  const std::string prefix = kernel_prefix(p.cell.name);
  auto text = [&](const StagePrograms& programs) { return print_stages(p.plan, programs); };
  p.stages = driver.run(at + "lower to kernel IR", [&] { return lower_stage(p.plan, fusion, prefix); }, text);
  p.stages = driver.run(at + "rewrite kernels for " + std::string(target_name(o.target)),
                        [&] { return rewrite_kernels_stage(std::move(p.stages), o); }, text);
  if (o.target == Target::Cpu) {
    p.llvm = driver.run(at + "generate LLVM IR", [&] { return generate_llvm_stage(p.stages, p.cell.name); },
                        [](const std::shared_ptr<LlvmModule>& m) { return print_llvm_module(*m); });
  } else {
    p.cuda = driver.run(at + "generate CUDA C",
                        [&] { return std::optional(generate_cuda_stage(p.cell, p.plan, p.stages, p.products_fused, o, p.cell.name)); },
                        [](const std::optional<cuda_codegen::CudaProgram>& c) { return c->source; });
  }
  return p;
}

}  // namespace

std::string kernel_prefix(const std::string& text) {
  std::string out = "cf_";
  for (char c : text) out += (std::isalnum(static_cast<unsigned char>(c)) != 0) ? c : '_';
  return out;
}

Cell verify_stage(const Cell& cell, const TargetOptions& o) {
  verify(cell);
  const DType dtype = cell.graph.dtype();
  const std::string backend = o.target == Target::Cpu ? "CPU backend" : "CUDA backend";
  if (o.batch < 1) throw Error(backend + ": batch size must be at least 1, got " + std::to_string(o.batch));
  if (o.dtype && *o.dtype != dtype)
    throw Error(backend + ": asked for " + std::string(dtype_name(*o.dtype)) + " but the cell '" + cell.name + "' is " +
                std::string(dtype_name(dtype)));
  if (o.storage != Storage::Native) {
    if (o.target != Target::Cuda)
      throw Error(backend + ": " + std::string(storage_name(o.storage)) + " storage is for the CUDA backend only");
    if (dtype != DType::f32)
      throw Error(backend + ": " + std::string(storage_name(o.storage)) + " storage needs an f32 cell; '" + cell.name +
                  "' is " + std::string(dtype_name(dtype)));
  }
  if (o.batch_agnostic && o.target != Target::Cpu)
    throw Error(backend + ": batch-agnostic kernels are for the CPU target only");
  if (o.fusion_limit < 0 || o.persistent_limit < 0)
    throw Error(backend + ": fusion_limit and persistent_limit must not be negative");
  return cell;
}

Cell optimize_stage(const Cell& cell) { return optimize(cell); }

BackwardCell differentiate_stage(const Cell& cell) { return differentiate(cell); }

Cell forward_with_tape(const BackwardCell& backward) {
  Cell forward = backward.forward;
  for (std::size_t s = 0; s < forward.states.size(); ++s) {
    std::string name = "state_at_step_" + std::to_string(s);
    for (bool taken = true; taken;) {
      taken = false;
      for (const auto& o : forward.outputs) taken = taken || o.name == name;
      if (taken) name = "_" + name;
    }
    forward.add_output(name, forward.states[s]);
  }
  verify(forward);
  return forward;
}

SequencePlan hoist_stage(const Cell& cell, const TargetOptions& o) {
  SequencePlan plan = hoist(cell, HoistOptions{.recompute_pointwise = o.target == Target::Cpu});
  for (int s = 0; s < 3; ++s)
    if (stage_of(plan, s)->cell) verify(*stage_of(plan, s)->cell);
  return plan;
}

std::array<StageFusion, 3> fuse_stage(const SequencePlan& plan, const TargetOptions& o) {
  std::array<StageFusion, 3> out;
  for (int s = 0; s < 3; ++s) {
    if (!stage_of(plan, s)->cell) continue;
    const Cell& stage = *stage_of(plan, s)->cell;
    const bool may_fuse = s == 1 && o.batch <= o.fusion_limit && o.fuse != FuseProducts::Never && !o.batch_agnostic;
    out[s].plan = plan_fusion(stage, FusionOptions{may_fuse});
    out[s].products_fused = may_fuse;
    if (!may_fuse || o.target != Target::Cuda || o.fuse != FuseProducts::Auto) continue;
    // On the GPU one block reads a fused weight whole every step: only small weights pay.
    std::int64_t largest = 0;
    for (const FusionGroup& group : out[s].plan.groups)
      if (group.kind == FusionGroup::Kind::Kernel)
        for (ValueId v : group.nodes) {
          const Node& n = stage.graph.node(v);
          if (op_info(n.op).op_class == OpClass::Contraction)
            largest = std::max(largest, stage.graph.node(n.inputs[0]).shape.features() * n.shape.features());
        }
    if (largest > cuda_codegen::kMaxAutoFusedWeight) {
      out[s].plan = plan_fusion(stage, FusionOptions{false});
      out[s].products_fused = false;
      out[s].note = "products not fused: a weight has more than " + std::to_string(cuda_codegen::kMaxAutoFusedWeight) +
                    " elements (cuBLAS is faster there)";
    }
  }
  return out;
}

StagePrograms lower_stage(const SequencePlan& plan, const std::array<StageFusion, 3>& fusion, const std::string& name) {
  StagePrograms out;
  for (int s = 0; s < 3; ++s) {
    if (!stage_of(plan, s)->cell) continue;
    out[s] = lower_stage(*stage_of(plan, s)->cell, fusion[s].plan, name + "_" + kStageNames[s]);
    if (!fusion[s].note.empty()) out[s].notes.push_back(fusion[s].note);
  }
  return out;
}

CompiledCell compile(const Cell& cell, const TargetOptions& options) {
  CompiledCell out;
  out.options = options;
  StageDriver driver(options, out.log);
  const Cell input = driver.run("verify", [&] { return verify_stage(cell, options); }, print_cell);
  out.options.dtype = input.graph.dtype();
  const TargetOptions& o = out.options;
  if (!o.training) {
    out.forward = compile_program(input, o, "", out.log);
    return out;
  }
  const Cell optimized = driver.run("optimize", [&] { return optimize_stage(input); }, print_cell);
  out.backward = driver.run("differentiate", [&] { return differentiate_stage(optimized); }, print_backward);
  const Cell forward = driver.run("forward with tape", [&] { return forward_with_tape(*out.backward); }, print_cell);
  out.forward = compile_program(forward, o, "forward", out.log);
  out.backward_step = compile_program(out.backward->step, o, "backward step", out.log);
  return out;
}

std::string print_stage_log(const std::vector<StageLog>& log) {
  std::string out;
  for (const StageLog& s : log) {
    char ms[32];
    std::snprintf(ms, sizeof ms, "%.3f", s.ms);
    out += "# after " + s.name + " (" + ms + " ms)\n" + s.text;
    if (!s.text.empty() && s.text.back() != '\n') out += "\n";
    out += "\n";
  }
  return out;
}

}  // namespace cellfuse
