#pragma once
// The plan records of CudaCell's Auto loop strategy (cuda_plan_timing.cpp): which loop plan won
// the timing of a cell on a device, kept on disk next to the kernel cache so that the next
// process does not time again.
//
//   file     <kernel cache directory>/plans/<hash of the key>.plan, one per key
//   key      whatever identifies the measurement (the caller's: device name, the cell's CUDA
//            source, batch, length class); stored in the file and compared on load, so a hash
//            collision reads as a miss
//   content  "cellfuse-plan 1\n<key>\n<plan>\n"; anything else (truncated, another version)
//            reads as a miss and is overwritten by the next store
//   writes   to a unique temporary name in the same directory, then rename(): a reader sees no
//            record, the old one or the whole new one
//
// Kept apart from kernel_cache.h's cubin entries: a plan is a measurement of this machine, not a
// compilation, and losing it costs one timing, never a wrong result.
#include <filesystem>
#include <optional>
#include <string>

namespace cellfuse::cuda {

std::filesystem::path plan_record_path(const std::filesystem::path& cache_directory, const std::string& key);

// The plan stored for `key`, if a valid record is there.
std::optional<std::string> load_plan_record(const std::filesystem::path& cache_directory, const std::string& key);

// Stores `plan` for `key`; false (and nothing half-written) when the directory cannot be written.
bool store_plan_record(const std::filesystem::path& cache_directory, const std::string& key, const std::string& plan);

}  // namespace cellfuse::cuda
