// The native generator for Python (runtime/generate): built from cells in text form and fp32
// weights given as addresses of contiguous float32 CPU tensors (the package checks them), or
// loaded from a file. The GIL is released while native code runs; a per-step callback takes it
// back only for its own call.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <vector>

#include "compiler/ir/error.h"
#include "python/src/bindings.h"

#if CELLFUSE_HAVE_LLVM
#include "compiler/ir/text.h"
#include "runtime/generate/generator.h"
#endif

namespace py = pybind11;

namespace cellfuse::python {

#if CELLFUSE_HAVE_LLVM
namespace {

using generate::Generator;
using generate::GeneratorModel;

std::vector<float> copy_floats(std::uintptr_t address, std::int64_t count) {
  const float* p = reinterpret_cast<const float*>(address);
  return std::vector<float>(p, p + count);
}

// A layer: (cell text, [(address, numel) per param]).
using LayerArg = std::pair<std::string, std::vector<std::pair<std::uintptr_t, std::int64_t>>>;

std::unique_ptr<Generator> build(const std::vector<LayerArg>& layers, std::uintptr_t embedding, std::int64_t vocab,
                                  std::int64_t embed_dim, std::uintptr_t decoder_weight, std::int64_t decoder_numel,
                                  std::uintptr_t decoder_bias, std::int64_t bias_numel,
                                  const std::vector<std::string>& tokens, const std::string& format, int threads) {
  GeneratorModel m;
  m.vocab_size = vocab, m.embed_dim = embed_dim;
  m.embedding = copy_floats(embedding, vocab * embed_dim);
  for (std::size_t l = 0; l < layers.size(); ++l) {
    m.layers.push_back(parse_cell(layers[l].first, "layer " + std::to_string(l)));
    std::vector<std::vector<float>> ps;
    for (auto [address, count] : layers[l].second) ps.push_back(copy_floats(address, count));
    m.params.push_back(std::move(ps));
  }
  m.decoder_weight = copy_floats(decoder_weight, decoder_numel);
  if (decoder_bias) m.decoder_bias = copy_floats(decoder_bias, bias_numel);
  m.tokens = tokens;
  const auto f = cpu::quant::parse_format(format);
  py::gil_scoped_release release;
  return std::make_unique<Generator>(m, f, threads);
}

}  // namespace

void bind_generate(py::module_& m) {
  py::class_<Generator>(m, "Generator")
      .def(py::init(&build), py::arg("layers"), py::arg("embedding"), py::arg("vocab"), py::arg("embed_dim"),
           py::arg("decoder_weight"), py::arg("decoder_numel"), py::arg("decoder_bias"), py::arg("bias_numel"),
           py::arg("tokens"), py::arg("format"), py::arg("threads"))
      .def_static("load", [](const std::string& path, int threads) {
        py::gil_scoped_release release;
        return Generator::load(path, threads);
      })
      .def("save", [](const Generator& g, const std::string& path) {
        py::gil_scoped_release release;
        g.save(path);
      })
      .def_property_readonly("format", [](const Generator& g) { return cpu::quant::format_name(g.format()); })
      .def_property_readonly("vocab_size", &Generator::vocab_size)
      .def_property_readonly("embed_dim", &Generator::embed_dim)
      .def_property_readonly("num_layers", &Generator::layers)
      .def_property_readonly("tokens", &Generator::tokens)
      .def_property_readonly("weight_bytes", &Generator::weight_bytes)
      .def_property_readonly("threads", &Generator::threads)
      .def_property_readonly("kernels",
                             [](const Generator&) { return cpu::quant::isa_name(cpu::quant::active_isa()); })
      .def("layer_text", [](const Generator& g, std::int64_t l) {
        if (l < 0 || l >= g.layers()) throw Error("layer_text: no layer " + std::to_string(l));
        return print_cell(g.layer(l).cell());
      })
      .def("logits_into", [](Generator& g, const std::vector<std::int32_t>& ids, std::uintptr_t out) {
        std::vector<float> logits;
        {
          py::gil_scoped_release release;
          logits = g.logits(ids);
        }
        std::copy(logits.begin(), logits.end(), reinterpret_cast<float*>(out));
      })
      .def("generate",
           [](Generator& g, const std::vector<std::int32_t>& prime, std::int64_t length, double temperature,
              std::int64_t top_k, double top_p, std::uint64_t seed, std::int64_t streams,
              const std::function<bool(std::int64_t, std::vector<std::int32_t>)>& on_step) {
             generate::SampleOptions o{.temperature = temperature, .top_k = top_k, .top_p = top_p, .seed = seed};
             Generator::StepCallback cb;
             if (on_step)
               cb = [&](std::int64_t step, const std::int32_t* ids) {
                 py::gil_scoped_acquire acquire;
                 return on_step(step, std::vector<std::int32_t>(ids, ids + streams));
               };
             py::gil_scoped_release release;
             return g.generate(prime, length, o, streams, cb);
           },
           py::arg("prime"), py::arg("length"), py::arg("temperature"), py::arg("top_k"), py::arg("top_p"),
           py::arg("seed"), py::arg("streams"), py::arg("on_step") = nullptr)
      .def("encode", &Generator::encode)
      .def("decode", &Generator::decode);
}
#else
void bind_generate(py::module_&) {}
#endif

}  // namespace cellfuse::python
