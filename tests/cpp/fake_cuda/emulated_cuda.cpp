#include "emulated_cuda.h"

#include <dlfcn.h>
#include <stdlib.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "../cuda_test_program.h"
#include "compiler/lower.h"
#include "compiler/passes/autodiff.h"
#include "compiler/pipeline.h"

namespace cellfuse::testing_support {
namespace fs = std::filesystem;

namespace {

// The scratch directory, removed by the destructor of the function-local static that holds it.
struct WorkDir {
  fs::path path;
  WorkDir() {
    std::string pattern = (fs::temp_directory_path() / "cellfuse_emulated.XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("cannot make a scratch directory from " + pattern);
    path = pattern;
  }
  ~WorkDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

template <class F>
F fake_hook(const char* name) {
  void* library = ::dlopen(CELLFUSE_FAKE_CUDA, RTLD_NOW | RTLD_LOCAL);
  if (!library) throw std::runtime_error(::dlerror());
  return reinterpret_cast<F>(::dlsym(library, name));
}

}  // namespace

const fs::path& emulation_work_dir() {
  static const WorkDir dir;
  return dir.path;
}

void use_fake_cuda() {
  ::setenv("CELLFUSE_CUDA_DRIVER", CELLFUSE_FAKE_CUDA, 1);
  ::setenv("CELLFUSE_CUBLAS_LIBRARY", CELLFUSE_FAKE_CUDA, 1);
  ::setenv("CELLFUSE_CACHE_DIR", (emulation_work_dir() / "cache").c_str(), 1);
  ::unsetenv("CELLFUSE_CUDA_GRAPHS");
  ::unsetenv("CELLFUSE_CUDA_LOOP");
  // Auto follows its fixed rule here, so that what a test checks does not depend on timing;
  // the tests of the timing itself (PlanTiming*) turn it on.
  ::setenv("CELLFUSE_CUDA_PLAN_TIMING", "0", 1);
}

std::string fake_errors() { return fake_hook<const char* (*)()>("cf_fake_take_errors")(); }

FakeCounters fake_counters() {
  const unsigned long long* c = fake_hook<const unsigned long long* (*)()>("cf_fake_counters")();
  return {c[0], c[1], c[2], c[3]};
}

std::string host_source(const cuda_codegen::CudaProgram& p) {
  const std::string T = p.cell.graph.dtype() == DType::f32 ? "float" : "double";
  std::string out = p.source + "\n// ---- host trampolines ----\n";
  auto trampoline = [&](const std::string& name, const std::vector<std::string>& types) {
    out += "extern \"C\" const int " + name + "__cf_nparams = " + std::to_string(types.size()) + ";\n";
    out += "extern \"C\" void " + name + "__cf_launch(unsigned grid, unsigned block, const unsigned long long* a) {\n";
    out += "  cf_emu::launch(grid, block, [&] { " + name + "(";
    for (std::size_t i = 0; i < types.size(); ++i) {
      out += i ? ", " : "";
      out += types[i] == "long long" ? "static_cast<long long>(a[" + std::to_string(i) + "])"
                                     : "reinterpret_cast<" + types[i] + ">(a[" + std::to_string(i) + "])";
    }
    out += "); });\n}\n";
  };
  for (const auto& stage : p.stages)
    for (std::size_t i = 0; i < stage.kernels.size(); ++i) {
      const auto& k = stage.kernels[i];
      if (k.name.empty()) continue;
      std::vector<std::string> types;
      const auto& buffers = stage.program.steps[i].kernel.kernel.buffers;
      for (int b : k.pointer_buffers)
        types.push_back(buffers[static_cast<std::size_t>(b)].role == kernel::BufferRole::Output ? T + "*" : "const " + T + "*");
      types.push_back("long long");
      types.push_back(T + "*");
      trampoline(k.name, types);
    }
  for (const auto* loop : {&p.persistent, &p.resident}) {  // cuda_persistent.h's parameters, launched cooperatively
    if (!loop->ok()) continue;
    const auto& c = *p.plan.loop.cell;
    std::vector<std::string> types;
    for (std::size_t i = 0; i < c.inputs.size() + c.states.size() + c.params.size(); ++i) types.push_back("const " + T + "*");
    for (std::size_t i = 0; i < c.outputs.size() + c.states.size() + 1; ++i) types.push_back(T + "*");
    types.push_back("unsigned*");
    types.push_back("long long");
    types.push_back("long long");
    const std::string& name = loop->name;
    out += "extern \"C\" const int " + name + "__cf_nparams = " + std::to_string(types.size()) + ";\n";
    out += "extern \"C\" void " + name +
           "__cf_cooperative(unsigned grid, unsigned block, unsigned shared, const unsigned long long* a) {\n";
    out += "  cf_emu::launch_cooperative(grid, block, shared, [&] { " + name + "(";
    for (std::size_t i = 0; i < types.size(); ++i) {
      out += i ? ", " : "";
      out += types[i] == "long long" ? "static_cast<long long>(a[" + std::to_string(i) + "])"
                                     : "reinterpret_cast<" + types[i] + ">(a[" + std::to_string(i) + "])";
    }
    out += "); });\n}\n";
  }
  for (const char* t : {"float", "double"}) {
    const std::string ty = t, suffix = ty == "float" ? "f32" : "f64";
    trampoline("cf_transpose_" + suffix, {"const " + ty + "*", ty + "*", "long long", "long long"});
    trampoline("cf_fill_rows_" + suffix, {ty + "*", "const " + ty + "*", "long long", "long long"});
  }
  for (const char* format : {"bf16", "f16"}) {
    trampoline(std::string("cf_widen_") + format, {"const unsigned short*", "float*", "long long", "long long"});
    trampoline(std::string("cf_narrow_") + format, {"const float*", "unsigned short*", "long long", "long long"});
  }
  return out;
}

std::string build_host_kernels(const cuda_codegen::CudaProgram& p) {
  static int counter = 0;
  const std::string base = (emulation_work_dir() / ("kernels_" + std::to_string(++counter))).string();
  std::ofstream(base + ".cpp") << host_source(p);
  const std::string command = std::string(CELLFUSE_HOST_CXX) + " -std=c++20 -O1 -shared -fPIC -pthread -w -include " +
                              CELLFUSE_EMULATION_DIR + "/cuda_emulation.h " + base + ".cpp -o " + base + ".so 2> " + base + ".log";
  if (std::system(command.c_str()) != 0) {
    std::ifstream log(base + ".log");
    std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
    throw std::runtime_error("host build of the kernels failed: " + command + "\n" + text);
  }
  return base + ".so";
}

std::unique_ptr<CudaCell> emulated_cell(const Cell& cell, std::int64_t batch, const CudaOptions& options) {
  auto program = compile_cuda_program(optimize(cell), batch, cell.name, options.program);
  const std::string so = build_host_kernels(program);
  ::setenv("CELLFUSE_FAKE_KERNELS", so.c_str(), 1);
  auto compiled = std::make_unique<CudaCell>(cell, batch, options);
  if (compiled->source() != program.source) throw std::logic_error("emulated_cell: the host build is of another source");
  return compiled;
}

std::unique_ptr<CudaBptt> emulated_bptt(const Cell& cell, std::int64_t batch, const CudaOptions& options) {
  BackwardCell backward = differentiate(cell);
  Cell forward = forward_with_tape(backward);
  auto fwd = compile_cuda_program(optimize(forward), batch, forward.name, options.program);
  auto step = compile_cuda_program(optimize(backward.step), batch, backward.step.name, options.program);
  const std::string libraries = build_host_kernels(fwd) + ":" + build_host_kernels(step);
  ::setenv("CELLFUSE_FAKE_KERNELS", libraries.c_str(), 1);
  auto compiled = std::make_unique<CudaBptt>(cell, batch, options);
  if (compiled->forward_cell().source() != fwd.source || compiled->backward_step().source() != step.source)
    throw std::logic_error("emulated_bptt: the host build is of another source");
  return compiled;
}

}  // namespace cellfuse::testing_support
