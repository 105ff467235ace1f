#pragma once
// 16-bit storage of a sequence's tensors: the caller keeps inputs, states, parameters, outputs and
// gradients as bf16 or f16 while the cell computes in f32 (CudaOptions::storage).
//
// The conversion rule, here for the host and in cuda_emitter.cpp's prelude for the device (the
// same integer arithmetic, so both round alike): to 16 bits rounds to nearest, ties to even;
// values beyond the format's range become +-inf; NaN stays NaN (quiet); f16 keeps subnormals.
// From 16 bits is exact.
#include <cstdint>
#include <optional>
#include <string_view>

namespace cellfuse {

enum class Storage : std::uint8_t {
  Native,  // the cell's own dtype (f32 or f64)
  BF16,    // bfloat16: f32's range, 8 significant bits
  F16,     // IEEE binary16: 11 significant bits, finite up to 65504
};

std::string_view storage_name(Storage storage);  // "native", "bf16", "f16"
std::optional<Storage> parse_storage(std::string_view text);

std::uint16_t f32_to_bf16(float value);
float bf16_to_f32(std::uint16_t bits);
std::uint16_t f32_to_f16(float value);
float f16_to_f32(std::uint16_t bits);

// The bits of `value` in the 16-bit `storage` (BF16 or F16), and back.
std::uint16_t to_storage_bits(float value, Storage storage);
float from_storage_bits(std::uint16_t bits, Storage storage);

// `value` as stored: rounded through the 16-bit format (Native: unchanged).
float round_to_storage(float value, Storage storage);

}  // namespace cellfuse
