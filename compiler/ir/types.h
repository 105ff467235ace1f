#pragma once
// Element types and shapes. A shape is [features] or [rows,features]; rows may be the batch,
// written B, whose size is known only when a sequence runs.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cellfuse {

enum class DType : std::uint8_t { f32, f64 };

std::string_view dtype_name(DType dtype);
std::optional<DType> parse_dtype(std::string_view text);
std::size_t dtype_size(DType dtype);

struct Shape {
  static constexpr std::int64_t kBatch = -1;

  int rank = 0;
  std::array<std::int64_t, 2> dims{0, 0};

  static Shape vector(std::int64_t n) { return Shape{1, {n, 0}}; }
  static Shape matrix(std::int64_t rows, std::int64_t cols) { return Shape{2, {rows, cols}}; }
  static Shape batched(std::int64_t features) { return matrix(kBatch, features); }

  bool is_batched() const { return rank == 2 && dims[0] == kBatch; }
  std::int64_t features() const { return dims[rank - 1]; }
  // Leading dimension, or 1 for a vector; kBatch for a batched shape.
  std::int64_t rows() const { return rank == 2 ? dims[0] : 1; }
  // Number of elements for a given batch size.
  std::int64_t elements(std::int64_t batch) const;
  Shape with_features(std::int64_t n) const;

  friend bool operator==(const Shape&, const Shape&) = default;
};

std::string to_string(const Shape& shape);

}  // namespace cellfuse
