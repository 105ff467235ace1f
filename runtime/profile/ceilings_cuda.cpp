// The GPU's ceilings: cuBLAS SGEMM on a 4096^3 product (f32, no TF32: the math the runner asks
// cuBLAS for) and a 512 MB device-to-device copy (bytes read plus written), each timed by CUDA
// events, best of five. Device 0, the device the runner uses by default.
#include "compiler/ir/error.h"
#include "runtime/profile/ceilings.h"
#if CELLFUSE_HAVE_CUDA
#include <algorithm>
#include <vector>

#include "runtime/cuda/driver.h"
#endif

namespace cellfuse::profile {

#if CELLFUSE_HAVE_CUDA
std::string cuda_description() { return "cuda " + cuda::device(0).name; }

namespace {

template <class F>
double best_ms(CUstream stream, F&& f) {
  const cuda::Driver& d = cuda::driver();
  CUevent start = nullptr, end = nullptr;
  cuda::check(d.event_create(&start, CU_EVENT_DEFAULT), "cuEventCreate");
  cuda::check(d.event_create(&end, CU_EVENT_DEFAULT), "cuEventCreate");
  f();  // warm-up
  float best = 1e30f;
  for (int i = 0; i < 5; ++i) {
    cuda::check(d.event_record(start, stream), "cuEventRecord");
    f();
    cuda::check(d.event_record(end, stream), "cuEventRecord");
    cuda::check(d.event_synchronize(end), "cuEventSynchronize");
    float ms = 0;
    cuda::check(d.event_elapsed_time(&ms, start, end), "cuEventElapsedTime");
    best = std::min(best, ms);
  }
  (void)d.event_destroy(start);
  (void)d.event_destroy(end);
  return static_cast<double>(best);
}

}  // namespace

MachineCeilings measure_cuda_ceilings() {
  const cuda::Driver& d = cuda::driver();
  const cuda::Device& dev = cuda::device(0);
  cuda::make_current(dev);
  CUstream stream = nullptr;
  cuda::check(d.stream_create(&stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
  MachineCeilings c;
  {
    constexpr int n = 4096;
    const std::size_t bytes = static_cast<std::size_t>(n) * n * sizeof(float);
    cuda::DeviceMemory a(bytes), b(bytes), out(bytes);
    cuda::check(d.memset_d8_async(a.get(), 0, bytes, stream), "cuMemsetD8Async");
    cuda::check(d.memset_d8_async(b.get(), 0, bytes, stream), "cuMemsetD8Async");
    const cuda::Cublas& blas = cuda::cublas();
    cublasHandle_t handle = nullptr;
    cuda::check(blas.create(&handle), "cublasCreate");
    cuda::check(blas.set_math_mode(handle, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    cuda::check(blas.set_stream(handle, stream), "cublasSetStream");
    auto as = [](CUdeviceptr p) { return reinterpret_cast<float*>(static_cast<std::uintptr_t>(p)); };
    const float alpha = 1, beta = 0;
    const double ms = best_ms(stream, [&] {
      cuda::check(blas.sgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, as(a.get()), n, as(b.get()), n, &beta,
                             as(out.get()), n),
                  "cublasSgemm");
    });
    (void)blas.destroy(handle);
    c.gflops = 2.0 * n * static_cast<double>(n) * n / (ms * 1e-3) / 1e9;
  }
  {
    const std::size_t bytes = std::size_t{512} << 20;
    cuda::DeviceMemory from(bytes), to(bytes);
    cuda::check(d.memset_d8_async(from.get(), 0, bytes, stream), "cuMemsetD8Async");
    const double ms = best_ms(stream, [&] {
      cuda::check(d.memcpy_dtod_async(to.get(), from.get(), bytes, stream), "cuMemcpyDtoDAsync");
    });
    c.gbytes = 2.0 * static_cast<double>(bytes) / (ms * 1e-3) / 1e9;
    c.gbytes_cache = c.gbytes;  // a step's kernels on the GPU are latency-bound long before L2 matters
  }
  cuda::check(d.stream_synchronize(stream), "cuStreamSynchronize");
  (void)d.stream_destroy(stream);
  return c;
}
#else
std::string cuda_description() { return "cuda"; }

MachineCeilings measure_cuda_ceilings() {
  throw Error("profiler: this build has no CUDA backend (configured without the CUDA toolkit)");
}
#endif

}  // namespace cellfuse::profile
