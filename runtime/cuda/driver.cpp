#include "runtime/cuda/driver.h"

#include <dlfcn.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "compiler/ir/error.h"

#ifndef CELLFUSE_CUDA_LIBRARY_DIR
#define CELLFUSE_CUDA_LIBRARY_DIR ""
#endif
#ifndef CELLFUSE_CUBLAS_SONAME
#define CELLFUSE_CUBLAS_SONAME "libcublas.so"
#endif

namespace cellfuse::cuda {
namespace {

// A library loaded once, or the reason it could not be.
template <class Table>
struct Loaded {
  std::once_flag once;
  Table table;
  std::optional<std::string> error;
};

template <class F>
F symbol(void* library, const char* name) {
  void* p = ::dlsym(library, name);
  // POSIX guarantees that a data pointer from dlsym converts to a function pointer.
  return reinterpret_cast<F>(p);
}

Loaded<Driver>& driver_slot() {
  static Loaded<Driver> slot;
  return slot;
}

std::string result_text(const Driver& d, CUresult result) {
  const char* name = nullptr;
  const char* text = nullptr;
  if (d.get_error_name == nullptr || d.get_error_name(result, &name) != CUDA_SUCCESS) name = nullptr;
  if (d.get_error_string == nullptr || d.get_error_string(result, &text) != CUDA_SUCCESS) text = nullptr;
  std::string out = name ? name : "CUDA error " + std::to_string(static_cast<int>(result));
  if (text) out += std::string(" (") + text + ")";
  return out;
}

void load_driver(Loaded<Driver>& slot) {
  const char* override_path = std::getenv("CELLFUSE_CUDA_DRIVER");
  const std::string path = override_path && *override_path ? override_path : "libcuda.so.1";
  void* library = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    const char* why = ::dlerror();
    slot.error = "no CUDA driver: " + path + " not found (" + std::string(why ? why : "dlopen failed") +
                 "); the CUDA backend needs an NVIDIA GPU with its driver installed";
    return;
  }
  Driver d;
  std::string missing;
#define CELLFUSE_LOAD(member, function, name)                          \
  d.member = symbol<decltype(d.member)>(library, name);               \
  if (!d.member) missing += std::string(missing.empty() ? "" : ", ") + name;
  CELLFUSE_CUDA_DRIVER_FUNCTIONS(CELLFUSE_LOAD)
#undef CELLFUSE_LOAD
  if (!missing.empty()) {
    slot.error = "CUDA driver " + path + " is too old: it lacks " + missing;
    return;
  }
  CUresult r = d.init(0);
  if (r != CUDA_SUCCESS) {
    slot.error = "CUDA: cuInit failed: " + result_text(d, r) + " (is there a usable NVIDIA GPU?)";
    return;
  }
  slot.table = d;
}

}  // namespace

const Driver& driver() {
  Loaded<Driver>& slot = driver_slot();
  std::call_once(slot.once, [&] { load_driver(slot); });
  if (slot.error) throw Error(*slot.error);
  return slot.table;
}

void check(CUresult result, const char* call) {
  if (result == CUDA_SUCCESS) return;
  throw Error(std::string("CUDA: ") + call + " failed: " + result_text(driver_slot().table, result));
}

bool cuda_available(std::string* why) {
  try {
    const Driver& d = driver();
    int count = 0;
    check(d.device_get_count(&count), "cuDeviceGetCount");
    if (count < 1) throw Error("CUDA: no device found");
    return true;
  } catch (const Error& e) {
    if (why) *why = e.what();
    return false;
  }
}

const Device& device(int ordinal) {
  static std::mutex mutex;
  static std::map<int, std::unique_ptr<Device>> devices;
  const Driver& d = driver();
  std::lock_guard<std::mutex> lock(mutex);
  auto it = devices.find(ordinal);
  if (it != devices.end()) return *it->second;
  int count = 0;
  check(d.device_get_count(&count), "cuDeviceGetCount");
  if (ordinal < 0 || ordinal >= count)
    throw Error("CUDA: there is no device " + std::to_string(ordinal) + " (" + std::to_string(count) + " found)");
  auto dev = std::make_unique<Device>();
  dev->ordinal = ordinal;
  check(d.device_get(&dev->device, ordinal), "cuDeviceGet");
  char name[256] = {};
  check(d.device_get_name(name, sizeof name - 1, dev->device), "cuDeviceGetName");
  dev->name = name;
  check(d.device_get_attribute(&dev->major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev->device),
        "cuDeviceGetAttribute(COMPUTE_CAPABILITY_MAJOR)");
  check(d.device_get_attribute(&dev->minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev->device),
        "cuDeviceGetAttribute(COMPUTE_CAPABILITY_MINOR)");
  check(d.device_get_attribute(&dev->multiprocessors, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev->device),
        "cuDeviceGetAttribute(MULTIPROCESSOR_COUNT)");
  check(d.primary_ctx_retain(&dev->context, dev->device), "cuDevicePrimaryCtxRetain");
  auto& slot = devices[ordinal];
  slot = std::move(dev);
  return *slot;
}

void make_current(const Device& dev) { check(driver().ctx_set_current(dev.context), "cuCtxSetCurrent"); }

ContextScope::ContextScope(const Device& dev) {
  const Driver& d = driver();
  check(d.ctx_get_current(&previous_), "cuCtxGetCurrent");
  if (previous_ == dev.context) return;
  check(d.ctx_set_current(dev.context), "cuCtxSetCurrent");
  switched_ = true;
}

ContextScope::~ContextScope() {
  // Cannot be reported from a destructor; a failure means the caller's context is gone.
  if (switched_) (void)driver_slot().table.ctx_set_current(previous_);
}

DeviceMemory::DeviceMemory(std::size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  check(driver().mem_alloc(&ptr_, bytes), ("cuMemAlloc(" + std::to_string(bytes) + " bytes)").c_str());
}

DeviceMemory::~DeviceMemory() {
  // Freeing cannot be reported from a destructor; a failure here means the context is already
  // broken, which the next checked call reports.
  if (ptr_) (void)driver_slot().table.mem_free(ptr_);
}

DeviceMemory::DeviceMemory(DeviceMemory&& other) noexcept : ptr_(other.ptr_), bytes_(other.bytes_) {
  other.ptr_ = 0;
  other.bytes_ = 0;
}

DeviceMemory& DeviceMemory::operator=(DeviceMemory&& other) noexcept {
  if (this != &other) {
    if (ptr_) (void)driver_slot().table.mem_free(ptr_);
    ptr_ = other.ptr_;
    bytes_ = other.bytes_;
    other.ptr_ = 0;
    other.bytes_ = 0;
  }
  return *this;
}

namespace {

Loaded<Cublas>& cublas_slot() {
  static Loaded<Cublas> slot;
  return slot;
}

void load_cublas(Loaded<Cublas>& slot) {
  std::vector<std::string> candidates = {CELLFUSE_CUBLAS_SONAME, "libcublas.so"};
  if (const char* path = std::getenv("CELLFUSE_CUBLAS_LIBRARY"); path && *path) candidates = {path};
  if (std::string(CELLFUSE_CUDA_LIBRARY_DIR).size()) {
    candidates.push_back(std::string(CELLFUSE_CUDA_LIBRARY_DIR) + "/" + CELLFUSE_CUBLAS_SONAME);
    candidates.push_back(std::string(CELLFUSE_CUDA_LIBRARY_DIR) + "/libcublas.so");
  }
  void* library = nullptr;
  std::string tried;
  for (const auto& c : candidates) {
    library = ::dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (library) break;
    const char* why = ::dlerror();
    tried += "\n  " + c + ": " + (why ? why : "dlopen failed");
  }
  if (!library) {
    slot.error = "no cuBLAS: the CUDA backend runs large matrix products with cuBLAS, and none could be loaded:" + tried;
    return;
  }
  Cublas b;
  std::string missing;
#define CELLFUSE_LOAD(member, function, name)                          \
  b.member = symbol<decltype(b.member)>(library, name);               \
  if (!b.member) missing += std::string(missing.empty() ? "" : ", ") + name;
  CELLFUSE_CUBLAS_FUNCTIONS(CELLFUSE_LOAD)
#undef CELLFUSE_LOAD
  if (!missing.empty()) {
    slot.error = "cuBLAS is too old: it lacks " + missing;
    return;
  }
  slot.table = b;
}

}  // namespace

const Cublas& cublas() {
  Loaded<Cublas>& slot = cublas_slot();
  std::call_once(slot.once, [&] { load_cublas(slot); });
  if (slot.error) throw Error(*slot.error);
  return slot.table;
}

void check(cublasStatus_t status, const char* call) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  const Cublas& b = cublas_slot().table;
  const char* text = b.get_status_string ? b.get_status_string(status) : nullptr;
  throw Error(std::string("cuBLAS: ") + call + " failed: " +
              (text ? text : "status " + std::to_string(static_cast<int>(status))));
}

}  // namespace cellfuse::cuda
