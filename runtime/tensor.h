#pragma once
// A dense row-major host array: the currency of the reference interpreter and of the CLI.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "compiler/ir/types.h"
#include "runtime/memory_limits.h"

namespace cellfuse {

template <class T>
struct HostTensor {
  std::vector<std::int64_t> shape;
  std::vector<T> data;

  HostTensor() = default;
  // Error (naming the shape and the bytes) when the size overflows or exceeds the available memory.
  explicit HostTensor(std::vector<std::int64_t> dims) : shape(std::move(dims)) {
    data.assign(checked_bytes(shape, sizeof(T), "a tensor") / sizeof(T), T(0));
  }
  std::int64_t numel() const { return static_cast<std::int64_t>(data.size()); }

  // Makes this a tensor of `dims`, keeping its memory (and contents) when it already is one:
  // a result passed again to a run_into writes in place.
  void fit(const std::vector<std::int64_t>& dims) {
    std::int64_t n = 1;
    for (auto d : dims) n *= d;
    if (shape != dims || data.size() != static_cast<std::size_t>(n)) *this = HostTensor(dims);
  }
};

std::string shape_string(const std::vector<std::int64_t>& dims);

// The dims of a tensor holding a value of shape `s` for a batch size, with a leading dimension
// (a sequence's length) in front when given.
std::vector<std::int64_t> tensor_dims(const Shape& s, std::int64_t batch,
                                      std::optional<std::int64_t> leading = std::nullopt);

}  // namespace cellfuse
