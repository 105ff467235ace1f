#pragma once
// Shared by the CUDA tests on the fake driver (tests/cpp/test_cuda_emulated.cpp) and on a real GPU
// (tests/gpu/gpu_forward.cpp, gpu_backward.cpp): results compared bit for bit, and the
// device-pointer API's arguments made from host ones on a stream of the test's own, with every
// buffer the runner must write poisoned first (0xff bytes: NaN in f32), so that a result nobody
// wrote cannot pass.
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "runtime/cuda/cuda_bptt.h"
#include "runtime/cuda/cuda_cell.h"
#include "runtime/cuda/driver.h"
#include "runtime/reference/bptt.h"
#include "runtime/reference/interpreter.h"

namespace cellfuse::testing_support {

template <class T>
bool same_bits(const std::vector<HostTensor<T>>& a, const std::vector<HostTensor<T>>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].shape != b[i].shape ||
        std::memcmp(a[i].data.data(), b[i].data.data(), a[i].data.size() * sizeof(T)) != 0)
      return false;
  return true;
}

template <class T>
bool same_bits(const SequenceResult<T>& a, const SequenceResult<T>& b) {
  return same_bits(a.outputs, b.outputs) && same_bits(a.final_states, b.final_states);
}

template <class T>
bool same_bits(const BpttResult<T>& a, const BpttResult<T>& b) {
  return same_bits(a.forward, b.forward) && same_bits(a.grads.inputs, b.grads.inputs) &&
         same_bits(a.grads.states, b.grads.states) && same_bits(a.grads.params, b.grads.params);
}

inline const char* fuse_name(cuda_codegen::FuseProducts f) {
  switch (f) {
    case cuda_codegen::FuseProducts::Auto: return "auto";
    case cuda_codegen::FuseProducts::Always: return "fused";
    case cuda_codegen::FuseProducts::Never: return "cublas";
  }
  return "?";
}

// Device memory and a non-blocking stream for one test, made on the current context and freed
// when it goes. Uploads, poisoned buffers and downloads are queued on the stream; sync() waits.
class DeviceScratch {
 public:
  DeviceScratch() : d_(cuda::driver()) { cuda::check(d_.stream_create(&stream_, CU_STREAM_NON_BLOCKING), "cuStreamCreate"); }
  ~DeviceScratch() {
    memory_.clear();
    d_.stream_destroy(stream_);
  }
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;

  CUstream stream() const { return stream_; }

  DevicePointer upload(const HostTensor<float>& t) {
    DevicePointer p = allocate(t.data.size());
    cuda::check(d_.memcpy_htod_async(p, t.data.data(), t.data.size() * sizeof(float), stream_), "cuMemcpyHtoDAsync");
    return p;
  }
  std::vector<DevicePointer> upload(const std::vector<HostTensor<float>>& list) {
    std::vector<DevicePointer> out;
    for (const auto& t : list) out.push_back(upload(t));
    return out;
  }
  DevicePointer poisoned(std::int64_t elements) {
    DevicePointer p = allocate(static_cast<std::size_t>(elements));
    cuda::check(d_.memset_d8_async(p, 0xff, static_cast<std::size_t>(elements) * sizeof(float), stream_), "cuMemsetD8Async");
    return p;
  }
  // Poisoned buffers shaped like `like`.
  std::vector<DevicePointer> poisoned_like(const std::vector<HostTensor<float>>& like) {
    std::vector<DevicePointer> out;
    for (const auto& t : like) out.push_back(poisoned(t.numel()));
    return out;
  }
  void download(std::vector<HostTensor<float>>& to, const std::vector<DevicePointer>& from) {
    for (std::size_t i = 0; i < to.size(); ++i)
      cuda::check(d_.memcpy_dtoh_async(to[i].data.data(), from[i], to[i].data.size() * sizeof(float), stream_),
                  "cuMemcpyDtoHAsync");
  }
  void sync() { cuda::check(d_.stream_synchronize(stream_), "cuStreamSynchronize"); }

 private:
  DevicePointer allocate(std::size_t elements) {
    memory_.emplace_back(elements * sizeof(float));
    return static_cast<DevicePointer>(memory_.back().get());
  }

  const cuda::Driver& d_;
  CUstream stream_ = nullptr;
  std::deque<cuda::DeviceMemory> memory_;
};

// A sequence of `steps` steps' device arguments: `args` uploaded, outputs and final states shaped
// like `like`'s and poisoned.
inline DeviceSequenceArgs device_sequence_args(DeviceScratch& scratch, const SequenceArgs<float>& args,
                                               const SequenceResult<float>& like, std::int64_t steps) {
  DeviceSequenceArgs dev;
  dev.steps = steps;
  dev.inputs = scratch.upload(args.inputs);
  dev.states = scratch.upload(args.states);
  dev.params = scratch.upload(args.params);
  dev.outputs = scratch.poisoned_like(like.outputs);
  dev.final_states = scratch.poisoned_like(like.final_states);
  return dev;
}

// The results of a run on `dev`, in a copy of `like`, after the stream has finished.
inline SequenceResult<float> download(DeviceScratch& scratch, const DeviceSequenceArgs& dev, SequenceResult<float> like) {
  scratch.download(like.outputs, dev.outputs);
  scratch.download(like.final_states, dev.final_states);
  scratch.sync();
  return like;
}

// A training pair's device arguments for `steps` steps of `batch` rows: `args` and the loss
// gradients `seeds` uploaded, the tape (`tape_widths` per step and row), outputs, final states and
// gradients shaped like `like`'s and poisoned.
inline DeviceTrainingArgs device_training_args(DeviceScratch& scratch, const SequenceArgs<float>& args,
                                               const LossGradients<float>& seeds, const BpttResult<float>& like,
                                               const std::vector<std::int64_t>& tape_widths, std::int64_t steps,
                                               std::int64_t batch) {
  DeviceTrainingArgs dev;
  dev.steps = steps;
  dev.inputs = scratch.upload(args.inputs);
  dev.states = scratch.upload(args.states);
  dev.params = scratch.upload(args.params);
  dev.outputs = scratch.poisoned_like(like.forward.outputs);
  dev.final_states = scratch.poisoned_like(like.forward.final_states);
  for (std::int64_t w : tape_widths) dev.tape.push_back(scratch.poisoned(steps * batch * w));
  dev.output_grads = scratch.upload(seeds.outputs);
  dev.final_state_grads = scratch.upload(seeds.final_states);
  dev.input_grads = scratch.poisoned_like(like.grads.inputs);
  dev.state_grads = scratch.poisoned_like(like.grads.states);
  dev.param_grads = scratch.poisoned_like(like.grads.params);
  return dev;
}

inline BpttResult<float> download(DeviceScratch& scratch, const DeviceTrainingArgs& dev, BpttResult<float> like) {
  scratch.download(like.forward.outputs, dev.outputs);
  scratch.download(like.forward.final_states, dev.final_states);
  scratch.download(like.grads.inputs, dev.input_grads);
  scratch.download(like.grads.states, dev.state_grads);
  scratch.download(like.grads.params, dev.param_grads);
  scratch.sync();
  return like;
}

}  // namespace cellfuse::testing_support
