#include "runtime/tensor.h"

namespace cellfuse {

std::string shape_string(const std::vector<std::int64_t>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? "," : "") + std::to_string(dims[i]);
  return s + "]";
}

std::vector<std::int64_t> tensor_dims(const Shape& s, std::int64_t batch,
                                      std::optional<std::int64_t> leading) {
  std::vector<std::int64_t> dims;
  if (leading) dims.push_back(*leading);
  for (int i = 0; i < s.rank; ++i) dims.push_back(s.dims[i] == Shape::kBatch ? batch : s.dims[i]);
  return dims;
}

}  // namespace cellfuse
