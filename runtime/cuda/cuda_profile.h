#pragma once
// The GPU side of the profiler (runtime/profile): device times of every GEMM and kernel of a
// profiled run from CUDA events recorded around each launch on the run's stream. Used only while
// a cellfuse::Profiler is on; the runner then launches kernel by kernel (no graph replay, whose
// kernels events cannot separate) and waits for the stream at the end of the run to read the
// events. Off, the runner never touches this.
#include <cstdint>
#include <vector>

#include "runtime/cuda/driver.h"
#include "runtime/profile/recorder.h"

namespace cellfuse::cuda_run {

class DeviceTimer {
 public:
  DeviceTimer() = default;
  ~DeviceTimer();
  DeviceTimer(const DeviceTimer&) = delete;
  DeviceTimer& operator=(const DeviceTimer&) = delete;

  // A profiled run begins on `stream`: records the base event the others are measured from.
  void begin(CUstream stream);
  // Around one launch of call site `site`.
  void before(CUstream stream);
  void after(CUstream stream, int site, int step, profile::Phase phase, int run);
  // After the run: waits for the stream and hands the device times to `rec` (on the host clock:
  // the base event's host time plus the GPU's offsets).
  void finish(profile::Recorder& rec, CUstream stream);

 private:
  CUevent event(std::size_t i);
  struct Pending {
    std::size_t start, end;
    int site, step, run;
    profile::Phase phase;
  };
  std::vector<CUevent> events_;  // [0] the base; reused from run to run
  std::size_t used_ = 0;
  std::int64_t base_host_ns_ = 0;
  std::vector<Pending> pending_;
};

}  // namespace cellfuse::cuda_run
