#pragma once
// Host <-> device copies of tensors as a caller's device buffers hold them: T elements, or with
// 16-bit storage (storage.h) their rounded 16-bit bits. For the host APIs (CudaCell::run,
// CudaBptt::run), which stage host tensors in device memory of their own.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "runtime/cuda/driver.h"
#include "runtime/cuda/storage.h"

namespace cellfuse::cuda {

// Bytes of one element on the device.
template <class T>
std::size_t stored_size(Storage storage) {
  return storage == Storage::Native ? sizeof(T) : sizeof(std::uint16_t);
}

// Copies n elements to `to` on `stream`. Pageable host memory: the data has been taken when the
// call returns, so a converted temporary may go right after.
template <class T>
void upload(CUdeviceptr to, const T* from, std::size_t n, Storage storage, CUstream stream) {
  if (n == 0) return;
  if (storage == Storage::Native) {
    check(driver().memcpy_htod_async(to, from, n * sizeof(T), stream), "cuMemcpyHtoDAsync");
    return;
  }
  std::vector<std::uint16_t> bits(n);
  for (std::size_t e = 0; e < n; ++e) bits[e] = to_storage_bits(static_cast<float>(from[e]), storage);
  check(driver().memcpy_htod_async(to, bits.data(), n * sizeof(std::uint16_t), stream), "cuMemcpyHtoDAsync");
}

// Copies from the device into host memory: add() enqueues on the stream, finish() waits for it
// and widens what arrived as 16-bit bits.
template <class T>
class Downloads {
 public:
  explicit Downloads(CUstream stream) : stream_(stream) {}
  void add(T* to, CUdeviceptr from, std::size_t n, Storage storage) {
    if (n == 0) return;
    void* host = to;
    if (storage != Storage::Native) {
      pending_.push_back({to, storage, std::vector<std::uint16_t>(n)});
      host = pending_.back().bits.data();
    }
    check(driver().memcpy_dtoh_async(host, from, n * stored_size<T>(storage), stream_), "cuMemcpyDtoHAsync");
  }
  void finish() {
    check(driver().stream_synchronize(stream_), "cuStreamSynchronize");
    for (const Pending& p : pending_)
      for (std::size_t e = 0; e < p.bits.size(); ++e) p.to[e] = static_cast<T>(from_storage_bits(p.bits[e], p.storage));
    pending_.clear();
  }

 private:
  struct Pending {
    T* to;
    Storage storage;
    std::vector<std::uint16_t> bits;  // its buffer does not move when pending_ grows
  };
  CUstream stream_;
  std::vector<Pending> pending_;
};

}  // namespace cellfuse::cuda
