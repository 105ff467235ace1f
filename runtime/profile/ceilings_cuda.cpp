// The GPU's ceilings: cuBLAS SGEMM on a 4096^3 product (f32, no TF32: the math the runner asks
// cuBLAS for) and a 512 MB device-to-device copy (bytes read plus written), each timed by CUDA
// events, best of five. Device 0, the device the runner uses by default.
#include "compiler/ir/error.h"
#include "runtime/profile/ceilings.h"
#if CELLFUSE_HAVE_CUDA
#include <cstdint>
#include <string>

#include "runtime/cuda/driver.h"
#endif

namespace cellfuse::profile {

#if CELLFUSE_HAVE_CUDA
std::string cuda_description() { return "cuda " + cuda::device(0).name; }

CudaCeilingSizes& cuda_ceiling_sizes() {
  static CudaCeilingSizes sizes;
  return sizes;
}

namespace {

template <class F>
double best_ms(CUstream stream, const char* what, F&& f) {
  const cuda::Driver& d = cuda::driver();
  // Both events are destroyed on every way out (a failed call below throws).
  struct Events {
    const cuda::Driver& d;
    CUevent start = nullptr, end = nullptr;
    ~Events() {
      if (start) (void)d.event_destroy(start);
      if (end) (void)d.event_destroy(end);
    }
  } ev{d};
  cuda::check(d.event_create(&ev.start, CU_EVENT_DEFAULT), "cuEventCreate");
  cuda::check(d.event_create(&ev.end, CU_EVENT_DEFAULT), "cuEventCreate");
  f();  // warm-up
  float best = 0;
  for (int i = 0; i < 5; ++i) {
    cuda::check(d.event_record(ev.start, stream), "cuEventRecord");
    f();
    cuda::check(d.event_record(ev.end, stream), "cuEventRecord");
    cuda::check(d.event_synchronize(ev.end), "cuEventSynchronize");
    float ms = 0;
    cuda::check(d.event_elapsed_time(&ms, ev.start, ev.end), "cuEventElapsedTime");
    if (ms > 0 && (best == 0 || ms < best)) best = ms;
  }
  // A rate from no time would be infinite (and written to the cache as such): say so instead.
  if (!(best > 0)) throw Error(std::string("profiler: CUDA events timed ") + what + " of the ceilings at 0 ms");
  return static_cast<double>(best);
}

}  // namespace

MachineCeilings measure_cuda_ceilings() {
  const CudaCeilingSizes sizes = cuda_ceiling_sizes();
  if (sizes.gemm_n < 1 || sizes.copy_bytes < 1) throw InternalError("profiler: empty CUDA ceiling problems");
  const cuda::Driver& d = cuda::driver();
  const cuda::Device& dev = cuda::device(0);
  cuda::ContextScope context(dev);  // first in, last out: after every free below
  CUstream stream = nullptr;
  cuda::check(d.stream_create(&stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
  // Destroyed on every way out, after its work is done (an Error below must not leak it).
  struct StreamOwner {
    const cuda::Driver& d;
    CUstream s;
    ~StreamOwner() {
      (void)d.stream_synchronize(s);
      (void)d.stream_destroy(s);
    }
  } owner{d, stream};
  MachineCeilings c;
  {
    const int n = sizes.gemm_n;
    const std::size_t bytes = static_cast<std::size_t>(n) * static_cast<std::size_t>(n) * sizeof(float);
    cuda::DeviceMemory a(bytes), b(bytes), out(bytes), workspace(std::size_t{32} << 20);
    cuda::check(d.memset_d8_async(a.get(), 0, bytes, stream), "cuMemsetD8Async");
    cuda::check(d.memset_d8_async(b.get(), 0, bytes, stream), "cuMemsetD8Async");
    const cuda::Cublas& blas = cuda::cublas();
    cublasHandle_t handle = nullptr;
    cuda::check(blas.create(&handle), "cublasCreate");
    struct HandleOwner {
      const cuda::Cublas& blas;
      cublasHandle_t h;
      ~HandleOwner() { (void)blas.destroy(h); }
    } handle_owner{blas, handle};
    cuda::check(blas.set_math_mode(handle, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    cuda::check(blas.set_stream(handle, stream), "cublasSetStream");
    // Configured as the runner's handles are (runtime/cuda/cuda_cell.cpp): a workspace of ours,
    // set after the stream (setting a stream resets it), so that cuBLAS allocates nothing itself.
    cuda::check(blas.set_workspace(handle, reinterpret_cast<void*>(static_cast<std::uintptr_t>(workspace.get())),
                                   workspace.bytes()),
                "cublasSetWorkspace");
    auto as = [](CUdeviceptr p) { return reinterpret_cast<float*>(static_cast<std::uintptr_t>(p)); };
    const float alpha = 1, beta = 0;
    const double ms = best_ms(stream, "the SGEMM", [&] {
      cuda::check(blas.sgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, as(a.get()), n, as(b.get()), n, &beta,
                             as(out.get()), n),
                  "cublasSgemm");
    });
    // The device memory goes before the handle's stream is done with it: wait first.
    cuda::check(d.stream_synchronize(stream), "cuStreamSynchronize");
    c.gflops = 2.0 * n * static_cast<double>(n) * n / (ms * 1e-3) / 1e9;
  }
  {
    const std::size_t bytes = sizes.copy_bytes;
    cuda::DeviceMemory from(bytes), to(bytes);
    cuda::check(d.memset_d8_async(from.get(), 0, bytes, stream), "cuMemsetD8Async");
    const double ms = best_ms(stream, "the device-to-device copy", [&] {
      cuda::check(d.memcpy_dtod_async(to.get(), from.get(), bytes, stream), "cuMemcpyDtoDAsync");
    });
    cuda::check(d.stream_synchronize(stream), "cuStreamSynchronize");
    c.gbytes = 2.0 * static_cast<double>(bytes) / (ms * 1e-3) / 1e9;
    c.gbytes_cache = c.gbytes;  // a step's kernels on the GPU are latency-bound long before L2 matters
  }
  return c;
}
#else
std::string cuda_description() { return "cuda"; }

CudaCeilingSizes& cuda_ceiling_sizes() {
  static CudaCeilingSizes sizes;
  return sizes;
}

MachineCeilings measure_cuda_ceilings() {
  throw Error("profiler: this build has no CUDA backend (configured without the CUDA toolkit)");
}
#endif

}  // namespace cellfuse::profile
