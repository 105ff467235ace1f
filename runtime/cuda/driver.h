#pragma once
// The CUDA driver API and cuBLAS, loaded at run time (dlopen), never linked: the same build runs
// on a machine without a GPU, where asking for CUDA gives an Error ("no CUDA driver: ...") rather
// than a loader failure or a crash. Every call's result is checked and a failure becomes an Error
// naming the call and the CUDA error.
//
// The types come from the toolkit's headers (cuda.h, cublas_api.h), which are only declarations.
#include <cublas_api.h>
#include <cuda.h>

#include <cstddef>
#include <string>

namespace cellfuse::cuda {

// member, prototype (a cuda.h function, after its versioning macros), exported symbol
#define CELLFUSE_CUDA_DRIVER_FUNCTIONS(X)                                          \
  X(get_error_name, cuGetErrorName, "cuGetErrorName")                              \
  X(get_error_string, cuGetErrorString, "cuGetErrorString")                        \
  X(init, cuInit, "cuInit")                                                        \
  X(driver_get_version, cuDriverGetVersion, "cuDriverGetVersion")                  \
  X(device_get_count, cuDeviceGetCount, "cuDeviceGetCount")                        \
  X(device_get, cuDeviceGet, "cuDeviceGet")                                        \
  X(device_get_name, cuDeviceGetName, "cuDeviceGetName")                           \
  X(device_get_attribute, cuDeviceGetAttribute, "cuDeviceGetAttribute")            \
  X(primary_ctx_retain, cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain")      \
  X(ctx_set_current, cuCtxSetCurrent, "cuCtxSetCurrent")                           \
  X(ctx_get_current, cuCtxGetCurrent, "cuCtxGetCurrent")                           \
  X(module_load_data, cuModuleLoadData, "cuModuleLoadData")                        \
  X(module_unload, cuModuleUnload, "cuModuleUnload")                               \
  X(module_get_function, cuModuleGetFunction, "cuModuleGetFunction")               \
  X(launch_kernel, cuLaunchKernel, "cuLaunchKernel")                               \
  X(launch_cooperative_kernel, cuLaunchCooperativeKernel, "cuLaunchCooperativeKernel") \
  X(func_set_attribute, cuFuncSetAttribute, "cuFuncSetAttribute")                  \
  X(occupancy_max_active_blocks, cuOccupancyMaxActiveBlocksPerMultiprocessor,      \
    "cuOccupancyMaxActiveBlocksPerMultiprocessor")                                 \
  X(mem_alloc, cuMemAlloc, "cuMemAlloc_v2")                                        \
  X(mem_free, cuMemFree, "cuMemFree_v2")                                           \
  X(memcpy_htod_async, cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2")                  \
  X(memcpy_dtoh_async, cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2")                  \
  X(memcpy_dtod_async, cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2")                  \
  X(memset_d8_async, cuMemsetD8Async, "cuMemsetD8Async")                           \
  X(stream_create, cuStreamCreate, "cuStreamCreate")                               \
  X(stream_destroy, cuStreamDestroy, "cuStreamDestroy_v2")                         \
  X(stream_synchronize, cuStreamSynchronize, "cuStreamSynchronize")                \
  X(stream_wait_event, cuStreamWaitEvent, "cuStreamWaitEvent")                     \
  X(stream_begin_capture, cuStreamBeginCapture, "cuStreamBeginCapture_v2")         \
  X(stream_end_capture, cuStreamEndCapture, "cuStreamEndCapture")                  \
  X(event_create, cuEventCreate, "cuEventCreate")                                  \
  X(event_record, cuEventRecord, "cuEventRecord")                                  \
  X(event_synchronize, cuEventSynchronize, "cuEventSynchronize")                   \
  X(event_destroy, cuEventDestroy, "cuEventDestroy_v2")                            \
  X(event_elapsed_time, cuEventElapsedTime, "cuEventElapsedTime")                  \
  X(graph_instantiate, cuGraphInstantiateWithFlags, "cuGraphInstantiateWithFlags") \
  X(graph_launch, cuGraphLaunch, "cuGraphLaunch")                                  \
  X(graph_exec_destroy, cuGraphExecDestroy, "cuGraphExecDestroy")                  \
  X(graph_destroy, cuGraphDestroy, "cuGraphDestroy")

struct Driver {
#define CELLFUSE_DRIVER_MEMBER(member, function, symbol) decltype(&::function) member = nullptr;
  CELLFUSE_CUDA_DRIVER_FUNCTIONS(CELLFUSE_DRIVER_MEMBER)
#undef CELLFUSE_DRIVER_MEMBER
};

// The driver, loaded and initialized (cuInit) on first use: libcuda.so.1, or the library named by
// $CELLFUSE_CUDA_DRIVER. Throws Error, the same one every time, when it cannot be had.
const Driver& driver();

// True when driver() works and a device is there; otherwise false with the reason in `why`.
bool cuda_available(std::string* why = nullptr);

// Throws Error("CUDA: <call> failed: <CUDA_ERROR_NAME> (<description>)") unless `result` is
// CUDA_SUCCESS.
void check(CUresult result, const char* call);

// One device with its primary context (retained for the life of the process).
struct Device {
  int ordinal = 0;
  CUdevice device = 0;
  CUcontext context = nullptr;
  std::string name;
  int major = 0, minor = 0;  // compute capability
  int multiprocessors = 0;
};

// Device `ordinal`, its primary context retained on first use. Throws Error when there is no
// such device.
const Device& device(int ordinal);
// Makes the device's primary context current on the calling thread (and leaves it so: for
// destructors, whose members are freed after their body; entry points use ContextScope).
void make_current(const Device& device);

// The device's primary context current on this thread while it lives; then the thread's own
// again. Every entry point of the runners (and the profiler's measurement) works in one: a caller
// such as PyTorch keeps its current device in the thread's context, and one left switched to
// another device would send its next work there.
class ContextScope {
 public:
  explicit ContextScope(const Device& device);
  ~ContextScope();
  ContextScope(const ContextScope&) = delete;
  ContextScope& operator=(const ContextScope&) = delete;

 private:
  CUcontext previous_ = nullptr;
  bool switched_ = false;
};

// Device memory, freed when the object goes.
class DeviceMemory {
 public:
  DeviceMemory() = default;
  explicit DeviceMemory(std::size_t bytes);
  ~DeviceMemory();
  DeviceMemory(DeviceMemory&& other) noexcept;
  DeviceMemory& operator=(DeviceMemory&& other) noexcept;
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;

  CUdeviceptr get() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }

 private:
  CUdeviceptr ptr_ = 0;
  std::size_t bytes_ = 0;
};

// cuBLAS, loaded at run time like the driver: libcublas.so.<major> from the library path, else
// from the toolkit the build used; or the library named by $CELLFUSE_CUBLAS_LIBRARY.
#define CELLFUSE_CUBLAS_FUNCTIONS(X)                             \
  X(create, cublasCreate_v2, "cublasCreate_v2")                  \
  X(destroy, cublasDestroy_v2, "cublasDestroy_v2")               \
  X(set_stream, cublasSetStream_v2, "cublasSetStream_v2")        \
  X(set_math_mode, cublasSetMathMode, "cublasSetMathMode")       \
  X(set_workspace, cublasSetWorkspace_v2, "cublasSetWorkspace_v2") \
  X(get_status_string, cublasGetStatusString, "cublasGetStatusString") \
  X(sgemm, cublasSgemm_v2, "cublasSgemm_v2")                     \
  X(dgemm, cublasDgemm_v2, "cublasDgemm_v2")

struct Cublas {
#define CELLFUSE_CUBLAS_MEMBER(member, function, symbol) decltype(&::function) member = nullptr;
  CELLFUSE_CUBLAS_FUNCTIONS(CELLFUSE_CUBLAS_MEMBER)
#undef CELLFUSE_CUBLAS_MEMBER
};

// Loaded on first use; throws Error (the same one every time) when it cannot be.
const Cublas& cublas();

void check(cublasStatus_t status, const char* call);

}  // namespace cellfuse::cuda
