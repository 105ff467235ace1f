#include "compiler/codegen/cuda/cuda_text.h"

#include "compiler/codegen/cuda/cuda_emitter.h"

namespace cellfuse::cuda_codegen {

std::vector<std::string> emit_element(const std::function<void(const std::string&)>& line, const kernel::Loop& loop,
                                      DType dtype, const ElementAccess& access) {
  const std::string type = dtype == DType::f32 ? "float" : "double";
  std::vector<std::string> v(loop.insts.size());
  for (std::size_t i = 0; i < loop.insts.size(); ++i) {
    const kernel::Inst& in = loop.insts[i];
    v[i] = "v" + str(static_cast<std::int64_t>(i));
    std::string value;
    switch (in.kind) {
      case kernel::Inst::Kind::Load: value = access.load(in.buffer, in.uniform ? str(in.offset) : column(in.offset, "j")); break;
      case kernel::Inst::Kind::Const: value = cuda_literal(in.value, dtype); break;
      case kernel::Inst::Kind::Compute: {
        std::vector<std::string> args;
        for (int a : in.args) args.push_back(v[static_cast<std::size_t>(a)]);
        value = cuda_pointwise(in.op, args, dtype);
        break;
      }
    }
    line("const " + type + " " + v[i] + " = " + value + ";");
  }
  for (const auto& s : loop.stores)
    line(access.store(s.buffer, column(s.offset, "j")) + " = " + v[static_cast<std::size_t>(s.value)] + ";");
  return v;
}

void declare_accumulators(const std::function<void(const std::string&)>& line, const kernel::Loop& loop, DType dtype,
                          const std::string& sum_start) {
  const std::string type = dtype == DType::f32 ? "float" : "double";
  for (std::size_t r = 0; r < loop.reductions.size(); ++r) {
    const OpKind combine = loop.reductions[r].combine;
    line(type + " acc" + str(static_cast<std::int64_t>(r)) + " = " +
         (combine == OpKind::add ? sum_start : cuda_literal(kernel::reduction_identity(combine), dtype)) + ";");
  }
}

void fold_accumulators(const std::function<void(const std::string&)>& line, const kernel::Loop& loop,
                       const std::vector<std::string>& v, DType dtype) {
  for (std::size_t r = 0; r < loop.reductions.size(); ++r)
    line(cuda_combine(loop.reductions[r].combine, "acc" + str(static_cast<std::int64_t>(r)),
                      v[static_cast<std::size_t>(loop.reductions[r].value)], dtype));
}

}  // namespace cellfuse::cuda_codegen
