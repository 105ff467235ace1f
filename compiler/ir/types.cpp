#include "compiler/ir/types.h"

#include "compiler/ir/error.h"

namespace cellfuse {

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
  }
  throw InternalError("bad dtype");
}

std::optional<DType> parse_dtype(std::string_view text) {
  if (text == "f32") return DType::f32;
  if (text == "f64") return DType::f64;
  return std::nullopt;
}

std::size_t dtype_size(DType dtype) { return dtype == DType::f32 ? 4 : 8; }

std::int64_t Shape::elements(std::int64_t batch) const {
  if (rank == 1) return dims[0];
  return (dims[0] == kBatch ? batch : dims[0]) * dims[1];
}

Shape Shape::with_features(std::int64_t n) const {
  Shape s = *this;
  s.dims[rank - 1] = n;
  return s;
}

std::string to_string(const Shape& shape) {
  std::string s = "[";
  for (int i = 0; i < shape.rank; ++i) {
    if (i) s += ",";
    s += shape.dims[i] == Shape::kBatch ? std::string("B") : std::to_string(shape.dims[i]);
  }
  return s + "]";
}

}  // namespace cellfuse
