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

#include "compiler/target.h"  // Storage, storage_name, parse_storage

namespace cellfuse {

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
