// `cellfuse print`: views of what compile() (compiler/pipeline.h) does to a cell. Every view
// comes from the one pipeline the backends run, so what it shows is what runs.
#include <iostream>

#include "compiler/ir/error.h"
#include "compiler/ir/text.h"
#include "compiler/pipeline.h"
#include "frontend/cli/cli.h"

namespace cellfuse::cli {
namespace {

TargetOptions target_options(const Options& o, Target target, bool training) {
  TargetOptions t;
  t.target = target;
  t.batch = int_option(o, "batch", 1);
  t.training = training;
  t.stage_text = true;
  return t;
}

const StageLog& stage(const CompiledCell& c, const std::string& name) {
  for (const StageLog& s : c.log)
    if (s.name == name) return s;
  throw InternalError("the pipeline logged no stage '" + name + "'");
}

// The plan and the stage programs of the cell (batch B decides whether small matrix products
// are fused into the loop kernel).
int print_fusion(const Options& o) {
  const CompiledCell c = compile(load(o), target_options(o, compiled_target_option(o), false));
  const CompiledProgram& p = c.forward;
  std::cout << print_plan(p.plan);
  const char* names[3] = {"pre", "loop", "post"};
  const SequenceStage* stages[3] = {&p.plan.pre, &p.plan.loop, &p.plan.post};
  for (int s = 0; s < 3; ++s) {
    if (!stages[s]->cell) continue;
    std::cout << "# fusion of stage " << names[s] << " (batch " << c.options.batch << ", "
              << target_name(c.options.target) << ")\n"
              << print_program(*stages[s]->cell, p.stages[s]) << "\n";
  }
  return 0;
}

int print_cuda(const Options& o) {
#if CELLFUSE_HAVE_CUDA
  const CompiledCell c = compile(load(o), target_options(o, Target::Cuda, false));
  std::cout << cuda_codegen::print_cuda_program(*c.forward.cuda);
  return 0;
#else
  (void)o;
  throw Error("print --cuda: this build has no CUDA backend (configured without the CUDA toolkit)");
#endif
}

}  // namespace

int print_command(const Options& o) {
  if (o.cuda) return print_cuda(o);
  if (o.fusion && o.backward) throw Error("print: --fusion and --backward are separate views; give one");
  if (o.fusion) return print_fusion(o);
  if (o.stages) {
    // Every stage of the real pipeline for the target, with its wall time.
    std::cout << print_stage_log(compile(load(o), target_options(o, compiled_target_option(o), o.backward)).log);
    return 0;
  }
  if (o.backward) {
    std::cout << stage(compile(load(o), target_options(o, compiled_target_option(o), true)), "differentiate").text;
    return 0;
  }
  const CompiledCell c = compile(load(o), target_options(o, compiled_target_option(o), false));
  std::cout << "# before passes\n" << stage(c, "verify").text << "\n# after passes\n" << stage(c, "optimize").text;
  return 0;
}

}  // namespace cellfuse::cli
