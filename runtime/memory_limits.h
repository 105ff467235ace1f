#pragma once
// Sizes checked before they are allocated: a tensor or workspace whose size overflows, or that is
// larger than the memory the machine has available, is an Error naming what and how much, never
// a std::bad_alloc, a crash or (on Linux, which overcommits) a kill by the OOM killer when the
// pages are first touched.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cellfuse {

// The bytes of `dims` elements of `element_bytes` each; Error when the product overflows or is
// more than the machine can hold. `what` names the buffer in the message.
std::size_t checked_bytes(const std::vector<std::int64_t>& dims, std::size_t element_bytes, const std::string& what);

// Bytes of memory available for a new allocation (MemAvailable + SwapFree from /proc/meminfo;
// the physical memory where that cannot be read).
std::uint64_t available_memory_bytes();

// "1.5 GiB", "12 MiB", "300 bytes".
std::string format_bytes(double bytes);

}  // namespace cellfuse
