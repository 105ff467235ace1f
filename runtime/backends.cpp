// The list of backends this build has. A new backend is one line here and its class.
#include <memory>

#include "compiler/ir/error.h"
#include "runtime/backend.h"

namespace cellfuse {
namespace {

const std::vector<std::unique_ptr<Backend>>& all_backends() {
  static const auto* list = [] {
    auto* out = new std::vector<std::unique_ptr<Backend>>();
    out->push_back(make_reference_backend());
#if CELLFUSE_HAVE_LLVM
    out->push_back(make_cpu_backend());
#endif
#if CELLFUSE_HAVE_CUDA
    out->push_back(make_cuda_backend());
#endif
    return out;
  }();
  return *list;
}

}  // namespace

const Backend& backend(std::string_view name) {
  for (const auto& b : all_backends())
    if (b->name() == name) return *b;
  std::string names;
  for (const auto& n : backend_names()) names += (names.empty() ? "" : ", ") + n;
  throw Error("no backend '" + std::string(name) + "' in this build (" + names + ")");
}

std::vector<std::string> backend_names() {
  std::vector<std::string> out;
  for (const auto& b : all_backends()) out.emplace_back(b->name());
  return out;
}

}  // namespace cellfuse
