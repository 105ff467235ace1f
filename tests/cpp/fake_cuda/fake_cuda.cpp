// A fake CUDA driver and cuBLAS for tests on machines without a GPU: the entry points
// runtime/cuda/driver.h loads, implemented on the host, so that the real GPU runner
// (runtime/cuda/cuda_cell.cpp) runs unchanged with CELLFUSE_CUDA_DRIVER and
// CELLFUSE_CUBLAS_LIBRARY pointing at this library.
//
//   memory     host memory with guard bytes around every allocation (checked on every
//              synchronization and free: an out-of-bounds write is reported) and filled with
//              0xff bytes (NaN) so that reading memory nothing wrote shows up in results
//   modules    cuModuleLoadData checks it is given a cubin (an ELF image), then loads the host
//              build of the same kernels from $CELLFUSE_FAKE_KERNELS (one path, or several
//              separated by ':', searched in order): a shared library with, for
//              each kernel NAME, NAME__cf_launch(grid, block, args) and NAME__cf_nparams (see
//              cuda_emulation.h); every kernel argument is 8 bytes, as cellfuse passes them
//   streams    work runs at once, in order; a capturing stream records it into a graph instead,
//              which cuGraphLaunch replays
//   cuBLAS     a plain column-major reference GEMM
//
// cf_fake_take_errors() returns (and clears) what went wrong; cf_fake_counters() the launches.
#include <cublas_api.h>
#include <cuda.h>
#include <dlfcn.h>

#include <chrono>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace {

constexpr std::size_t kGuard = 64;
constexpr unsigned char kGuardByte = 0xa5;

struct Allocation {
  std::size_t bytes;
  unsigned char* base;  // guard, payload, guard
};

struct Function {
  void (*launch)(unsigned, unsigned, const unsigned long long*) = nullptr;
  // NAME__cf_cooperative(grid, block, dynamic shared bytes, args): every block at once.
  void (*cooperative)(unsigned, unsigned, unsigned, const unsigned long long*) = nullptr;
  int nparams = 0;
  std::string name;
};

struct Module {
  std::vector<void*> libraries;  // searched in order for a function
  std::map<std::string, Function> functions;
};

using Op = std::function<void()>;
struct Graph {
  std::vector<Op> ops;
};

struct Blas {
  CUstream stream = nullptr;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
  void* workspace = nullptr;  // the caller's; cublasSetStream resets it (to the default pool)
};

std::recursive_mutex g_mutex;
std::map<CUdeviceptr, Allocation> g_allocations;
std::map<CUstream, Graph*> g_capturing;
std::string g_errors;
unsigned long long g_counters[4];  // kernel launches, gemms, graph launches, captures
int g_primary_context_object;
const CUcontext g_primary_context = reinterpret_cast<CUcontext>(&g_primary_context_object);
thread_local CUcontext t_current_context = nullptr;

void error(const std::string& what) {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  g_errors += what + "\n";
}

bool guards_intact(const Allocation& a) {
  for (std::size_t i = 0; i < kGuard; ++i)
    if (a.base[i] != kGuardByte || a.base[kGuard + a.bytes + i] != kGuardByte) return false;
  return true;
}

void check_guards(const char* when) {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  for (const auto& [ptr, a] : g_allocations)
    if (!guards_intact(a)) error(std::string(when) + ": a write outside the allocation at " + std::to_string(ptr) + " (" +
                                 std::to_string(a.bytes) + " bytes)");
}

// [p, p + bytes) must lie inside one allocation.
bool in_bounds(CUdeviceptr p, std::size_t bytes, const char* call) {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  auto it = g_allocations.upper_bound(p);
  if (it != g_allocations.begin()) {
    --it;
    if (p >= it->first && p + bytes <= it->first + it->second.bytes) return true;
  }
  error(std::string(call) + ": " + std::to_string(bytes) + " bytes at " + std::to_string(p) + " are not inside an allocation");
  return false;
}

void submit(CUstream stream, Op op) {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  auto it = g_capturing.find(stream);
  if (it != g_capturing.end()) {
    it->second->ops.push_back(std::move(op));
    return;
  }
  op();
}

template <class T>
void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, T alpha, const T* A, int lda, const T* B, int ldb,
          T beta, T* C, int ldc) {
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double acc = 0;
      for (int p = 0; p < k; ++p) {
        const T a = ta == CUBLAS_OP_N ? A[i + static_cast<long>(p) * lda] : A[p + static_cast<long>(i) * lda];
        const T b = tb == CUBLAS_OP_N ? B[p + static_cast<long>(j) * ldb] : B[j + static_cast<long>(p) * ldb];
        acc += static_cast<double>(a) * static_cast<double>(b);
      }
      T& c = C[i + static_cast<long>(j) * ldc];
      c = static_cast<T>(static_cast<double>(alpha) * acc + (beta == T(0) ? 0.0 : static_cast<double>(beta) * static_cast<double>(c)));
    }
}

template <class T>
cublasStatus_t fake_gemm(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const T* alpha,
                         const T* A, int lda, const T* B, int ldb, const T* beta, T* C, int ldc) {
  auto* blas = reinterpret_cast<Blas*>(handle);
  if (t_current_context != g_primary_context) error("cuBLAS gemm: the device's context is not current");
  // cellfuse gives every handle a workspace of its own, so that cuBLAS allocates nothing.
  if (!blas->workspace) error("cuBLAS gemm: no workspace of the caller's (cublasSetStream resets it to the default pool)");
  if (blas->math != CUBLAS_DEFAULT_MATH && blas->math != CUBLAS_PEDANTIC_MATH) error("cuBLAS: a math mode that allows TF32");
  const int a_cols = ta == CUBLAS_OP_N ? k : m, a_rows = ta == CUBLAS_OP_N ? m : k;
  const int b_cols = tb == CUBLAS_OP_N ? n : k, b_rows = tb == CUBLAS_OP_N ? k : n;
  if (lda < a_rows || ldb < b_rows || ldc < m) {
    error("cuBLAS gemm: a leading dimension smaller than its matrix");
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  auto ptr = [](const void* p) { return static_cast<CUdeviceptr>(reinterpret_cast<std::uintptr_t>(p)); };
  in_bounds(ptr(A), (static_cast<std::size_t>(a_cols - 1) * lda + a_rows) * sizeof(T), "cublas gemm A");
  in_bounds(ptr(B), (static_cast<std::size_t>(b_cols - 1) * ldb + b_rows) * sizeof(T), "cublas gemm B");
  in_bounds(ptr(C), (static_cast<std::size_t>(n - 1) * ldc + m) * sizeof(T), "cublas gemm C");
  const T al = *alpha, be = *beta;
  submit(blas->stream, [=] {
    ++g_counters[1];
    gemm<T>(ta, tb, m, n, k, al, A, lda, B, ldb, be, C, ldc);
  });
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

extern "C" {

// ---- test hooks ---------------------------------------------------------------------------

const char* cf_fake_take_errors() {
  static std::string taken;
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  check_guards("check");
  taken = g_errors;
  g_errors.clear();
  return taken.c_str();
}

const unsigned long long* cf_fake_counters() { return g_counters; }

// ---- the driver ---------------------------------------------------------------------------

CUresult cuInit(unsigned int) { return CUDA_SUCCESS; }

CUresult cuGetErrorName(CUresult e, const char** s) {
  *s = e == CUDA_SUCCESS ? "CUDA_SUCCESS" : "CUDA_ERROR_FAKE";
  return CUDA_SUCCESS;
}

CUresult cuGetErrorString(CUresult e, const char** s) {
  *s = e == CUDA_SUCCESS ? "no error" : "an error of the fake driver";
  return CUDA_SUCCESS;
}

CUresult cuDriverGetVersion(int* v) {
  *v = 13000;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetCount(int* n) {
  *n = 1;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice* d, int ordinal) {
  if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
  *d = 0;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char* name, int len, CUdevice) {
  std::snprintf(name, static_cast<std::size_t>(len), "cellfuse fake GPU (host emulation)");
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetAttribute(int* v, CUdevice_attribute attribute, CUdevice) {
  switch (attribute) {
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *v = 9; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *v = 0; break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *v = 4; break;
    case CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH: *v = 1; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *v = 227 * 1024; break;
    default: *v = 0;
  }
  return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext* context, CUdevice) {
  *context = g_primary_context;
  return CUDA_SUCCESS;
}

// Each thread's current context, as the driver keeps it: launches check it is the device's.
CUresult cuCtxSetCurrent(CUcontext context) {
  t_current_context = context;
  return CUDA_SUCCESS;
}

CUresult cuCtxGetCurrent(CUcontext* context) {
  *context = t_current_context;
  return CUDA_SUCCESS;
}

CUresult cuModuleLoadData(CUmodule* module, const void* image) {
  const auto* bytes = static_cast<const unsigned char*>(image);
  if (!bytes || bytes[0] != 0x7f || bytes[1] != 'E' || bytes[2] != 'L' || bytes[3] != 'F') {
    error("cuModuleLoadData: the image is not a cubin");
    return CUDA_ERROR_INVALID_IMAGE;
  }
  const char* path = std::getenv("CELLFUSE_FAKE_KERNELS");
  if (!path) {
    error("cuModuleLoadData: $CELLFUSE_FAKE_KERNELS is not set");
    return CUDA_ERROR_FILE_NOT_FOUND;
  }
  // Several libraries, separated by ':', when one object loads several modules (CudaBptt's
  // forward and backward step): kernel names differ between cells, so each is found in one.
  auto* m = new Module;
  std::string list = path;
  for (std::size_t start = 0; start <= list.size();) {
    std::size_t end = list.find(':', start);
    if (end == std::string::npos) end = list.size();
    const std::string one = list.substr(start, end - start);
    start = end + 1;
    if (one.empty()) continue;
    void* library = ::dlopen(one.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!library) {
      error(std::string("cuModuleLoadData: ") + ::dlerror());
      for (void* l : m->libraries) ::dlclose(l);
      delete m;
      return CUDA_ERROR_FILE_NOT_FOUND;
    }
    m->libraries.push_back(library);
  }
  *module = reinterpret_cast<CUmodule>(m);
  return CUDA_SUCCESS;
}

CUresult cuModuleUnload(CUmodule module) {
  auto* m = reinterpret_cast<Module*>(module);
  for (void* l : m->libraries) ::dlclose(l);
  delete m;
  return CUDA_SUCCESS;
}

CUresult cuModuleGetFunction(CUfunction* function, CUmodule module, const char* name) {
  auto* m = reinterpret_cast<Module*>(module);
  Function f;
  f.name = name;
  const int* nparams = nullptr;
  for (void* library : m->libraries) {
    f.launch = reinterpret_cast<void (*)(unsigned, unsigned, const unsigned long long*)>(
        ::dlsym(library, (f.name + "__cf_launch").c_str()));
    f.cooperative = reinterpret_cast<void (*)(unsigned, unsigned, unsigned, const unsigned long long*)>(
        ::dlsym(library, (f.name + "__cf_cooperative").c_str()));
    nparams = static_cast<const int*>(::dlsym(library, (f.name + "__cf_nparams").c_str()));
    if ((f.launch || f.cooperative) && nparams) break;
  }
  if ((!f.launch && !f.cooperative) || !nparams) return CUDA_ERROR_NOT_FOUND;
  f.nparams = *nparams;
  auto& slot = m->functions[f.name];
  slot = f;
  *function = reinterpret_cast<CUfunction>(&slot);
  return CUDA_SUCCESS;
}

CUresult cuLaunchKernel(CUfunction function, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by,
                        unsigned int bz, unsigned int shared, CUstream stream, void** params, void** extra) {
  const auto* f = reinterpret_cast<const Function*>(function);
  if (t_current_context != g_primary_context) error("cuLaunchKernel(" + f->name + "): the device's context is not current");
  if (gx == 0 || gy != 1 || gz != 1 || bx == 0 || bx > 1024 || by != 1 || bz != 1 || shared != 0 || extra != nullptr || !params) {
    error("cuLaunchKernel(" + f->name + "): an unexpected launch configuration");
    return CUDA_ERROR_INVALID_VALUE;
  }
  std::vector<unsigned long long> args(static_cast<std::size_t>(f->nparams));
  for (std::size_t i = 0; i < args.size(); ++i) std::memcpy(&args[i], params[i], sizeof(unsigned long long));
  auto launch = f->launch;
  submit(stream, [launch, gx, bx, args] {
    ++g_counters[0];
    launch(gx, bx, args.data());
  });
  return CUDA_SUCCESS;
}

// Every block of a cooperative launch runs at once (cuda_emulation.h's launch_cooperative); the
// fake device holds one block a multiprocessor (4), whatever its shared memory.
CUresult cuLaunchCooperativeKernel(CUfunction function, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                                   unsigned int by, unsigned int bz, unsigned int shared, CUstream stream, void** params) {
  const auto* f = reinterpret_cast<const Function*>(function);
  if (t_current_context != g_primary_context)
    error("cuLaunchCooperativeKernel(" + f->name + "): the device's context is not current");
  if (!f->cooperative) {
    error("cuLaunchCooperativeKernel(" + f->name + "): the host build has no cooperative entry point");
    return CUDA_ERROR_NOT_SUPPORTED;
  }
  if (gx == 0 || gx > 4 || gy != 1 || gz != 1 || bx == 0 || bx > 1024 || by != 1 || bz != 1 || shared > 227 * 1024 || !params) {
    error("cuLaunchCooperativeKernel(" + f->name + "): an unexpected launch configuration (or more blocks than co-resident)");
    return CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE;
  }
  std::vector<unsigned long long> args(static_cast<std::size_t>(f->nparams));
  for (std::size_t i = 0; i < args.size(); ++i) std::memcpy(&args[i], params[i], sizeof(unsigned long long));
  auto launch = f->cooperative;
  submit(stream, [launch, gx, bx, shared, args] {
    ++g_counters[0];
    launch(gx, bx, shared, args.data());
  });
  return CUDA_SUCCESS;
}

CUresult cuFuncSetAttribute(CUfunction, CUfunction_attribute attribute, int value) {
  if (attribute == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES && value > 227 * 1024) return CUDA_ERROR_INVALID_VALUE;
  return CUDA_SUCCESS;
}

CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, CUfunction, int block_size, size_t shared) {
  *blocks = block_size <= 1024 && shared <= 227 * 1024 ? 1 : 0;
  return CUDA_SUCCESS;
}

CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
  if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  auto* base = static_cast<unsigned char*>(std::malloc(bytes + 2 * kGuard));
  if (!base) return CUDA_ERROR_OUT_OF_MEMORY;
  std::memset(base, kGuardByte, kGuard);
  std::memset(base + kGuard, 0xff, bytes);  // NaN in f32 and f64
  std::memset(base + kGuard + bytes, kGuardByte, kGuard);
  *p = static_cast<CUdeviceptr>(reinterpret_cast<std::uintptr_t>(base + kGuard));
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  g_allocations[*p] = Allocation{bytes, base};
  return CUDA_SUCCESS;
}

CUresult cuMemFree_v2(CUdeviceptr p) {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  auto it = g_allocations.find(p);
  if (it == g_allocations.end()) {
    error("cuMemFree: not an allocation");
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (!guards_intact(it->second)) error("cuMemFree: a write outside the allocation (" + std::to_string(it->second.bytes) + " bytes)");
  std::free(it->second.base);
  g_allocations.erase(it);
  return CUDA_SUCCESS;
}

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr to, const void* from, size_t bytes, CUstream stream) {
  if (!in_bounds(to, bytes, "cuMemcpyHtoDAsync")) return CUDA_ERROR_INVALID_VALUE;
  submit(stream, [=] { std::memcpy(reinterpret_cast<void*>(static_cast<std::uintptr_t>(to)), from, bytes); });
  return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoHAsync_v2(void* to, CUdeviceptr from, size_t bytes, CUstream stream) {
  if (!in_bounds(from, bytes, "cuMemcpyDtoHAsync")) return CUDA_ERROR_INVALID_VALUE;
  submit(stream, [=] { std::memcpy(to, reinterpret_cast<const void*>(static_cast<std::uintptr_t>(from)), bytes); });
  return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr to, CUdeviceptr from, size_t bytes, CUstream stream) {
  if (!in_bounds(to, bytes, "cuMemcpyDtoDAsync to") || !in_bounds(from, bytes, "cuMemcpyDtoDAsync from"))
    return CUDA_ERROR_INVALID_VALUE;
  submit(stream, [=] {
    std::memmove(reinterpret_cast<void*>(static_cast<std::uintptr_t>(to)),
                 reinterpret_cast<const void*>(static_cast<std::uintptr_t>(from)), bytes);
  });
  return CUDA_SUCCESS;
}

CUresult cuMemsetD8Async(CUdeviceptr to, unsigned char value, size_t bytes, CUstream stream) {
  if (!in_bounds(to, bytes, "cuMemsetD8Async")) return CUDA_ERROR_INVALID_VALUE;
  submit(stream, [=] { std::memset(reinterpret_cast<void*>(static_cast<std::uintptr_t>(to)), value, bytes); });
  return CUDA_SUCCESS;
}

CUresult cuStreamCreate(CUstream* stream, unsigned int) {
  *stream = reinterpret_cast<CUstream>(new int(0));
  return CUDA_SUCCESS;
}

CUresult cuStreamDestroy_v2(CUstream stream) {
  delete reinterpret_cast<int*>(stream);
  return CUDA_SUCCESS;
}

CUresult cuStreamSynchronize(CUstream stream) {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  if (g_capturing.count(stream)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  check_guards("cuStreamSynchronize");
  return CUDA_SUCCESS;
}

CUresult cuStreamWaitEvent(CUstream, CUevent, unsigned int) { return CUDA_SUCCESS; }

CUresult cuStreamBeginCapture_v2(CUstream stream, CUstreamCaptureMode) {
  if (stream == nullptr) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;  // the legacy stream cannot capture
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  if (g_capturing.count(stream)) return CUDA_ERROR_ILLEGAL_STATE;
  g_capturing[stream] = new Graph;
  return CUDA_SUCCESS;
}

CUresult cuStreamEndCapture(CUstream stream, CUgraph* graph) {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  auto it = g_capturing.find(stream);
  if (it == g_capturing.end()) return CUDA_ERROR_ILLEGAL_STATE;
  *graph = reinterpret_cast<CUgraph>(it->second);
  g_capturing.erase(it);
  ++g_counters[3];
  return CUDA_SUCCESS;
}

// An event is the steady-clock time (ns) at which the stream reached it: recorded in stream
// order (inside a captured graph, on every replay), so cuEventElapsedTime times the work between.
CUresult cuEventCreate(CUevent* event, unsigned int) {
  *event = reinterpret_cast<CUevent>(new long long(-1));
  return CUDA_SUCCESS;
}

CUresult cuEventRecord(CUevent event, CUstream stream) {
  auto* at = reinterpret_cast<long long*>(event);
  submit(stream, [at] {
    *at = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
  });
  return CUDA_SUCCESS;
}

CUresult cuEventSynchronize(CUevent) { return CUDA_SUCCESS; }  // work runs at once

#undef cuEventElapsedTime  // cuda.h maps it to _v2; the runtime asks for the plain symbol
CUresult cuEventElapsedTime(float* ms, CUevent start, CUevent end) {
  const long long a = *reinterpret_cast<long long*>(start), b = *reinterpret_cast<long long*>(end);
  if (a < 0 || b < 0) return CUDA_ERROR_NOT_READY;  // as the driver says of an event never recorded
  *ms = static_cast<float>(static_cast<double>(b - a) / 1e6);
  return CUDA_SUCCESS;
}

CUresult cuEventDestroy_v2(CUevent event) {
  delete reinterpret_cast<long long*>(event);
  return CUDA_SUCCESS;
}

CUresult cuGraphInstantiateWithFlags(CUgraphExec* exec, CUgraph graph, unsigned long long) {
  *exec = reinterpret_cast<CUgraphExec>(new Graph(*reinterpret_cast<Graph*>(graph)));
  return CUDA_SUCCESS;
}

CUresult cuGraphLaunch(CUgraphExec exec, CUstream stream) {
  const auto* g = reinterpret_cast<const Graph*>(exec);
  submit(stream, [g] {
    ++g_counters[2];
    for (const auto& op : g->ops) op();
  });
  return CUDA_SUCCESS;
}

CUresult cuGraphExecDestroy(CUgraphExec exec) {
  delete reinterpret_cast<Graph*>(exec);
  return CUDA_SUCCESS;
}

CUresult cuGraphDestroy(CUgraph graph) {
  delete reinterpret_cast<Graph*>(graph);
  return CUDA_SUCCESS;
}

// ---- cuBLAS -------------------------------------------------------------------------------

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  *handle = reinterpret_cast<cublasHandle_t>(new Blas);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  delete reinterpret_cast<Blas*>(handle);
  return CUBLAS_STATUS_SUCCESS;
}

// As cuBLAS documents: setting a stream also resets the workspace to the default pool.
cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  reinterpret_cast<Blas*>(handle)->stream = stream;
  reinterpret_cast<Blas*>(handle)->workspace = nullptr;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  reinterpret_cast<Blas*>(handle)->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace, size_t bytes) {
  if (!in_bounds(static_cast<CUdeviceptr>(reinterpret_cast<std::uintptr_t>(workspace)), bytes, "cublasSetWorkspace"))
    return CUBLAS_STATUS_INVALID_VALUE;
  reinterpret_cast<Blas*>(handle)->workspace = workspace;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusString(cublasStatus_t status) {
  return status == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "a fake cuBLAS error";
}

cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                              const float* alpha, const float* A, int lda, const float* B, int ldb, const float* beta, float* C,
                              int ldc) {
  return fake_gemm<float>(handle, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

cublasStatus_t cublasDgemm_v2(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                              const double* alpha, const double* A, int lda, const double* B, int ldb, const double* beta,
                              double* C, int ldc) {
  return fake_gemm<double>(handle, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // extern "C"
