#pragma once
// A dense row-major host array: the currency of the reference interpreter and of the CLI.
#include <cstdint>
#include <string>
#include <vector>

namespace cellfuse {

template <class T>
struct HostTensor {
  std::vector<std::int64_t> shape;
  std::vector<T> data;

  HostTensor() = default;
  explicit HostTensor(std::vector<std::int64_t> dims) : shape(std::move(dims)) {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    data.assign(static_cast<std::size_t>(n), T(0));
  }
  std::int64_t numel() const { return static_cast<std::int64_t>(data.size()); }
};

std::string shape_string(const std::vector<std::int64_t>& dims);

}  // namespace cellfuse
