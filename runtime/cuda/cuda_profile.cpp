#include "runtime/cuda/cuda_profile.h"

namespace cellfuse::cuda_run {

DeviceTimer::~DeviceTimer() {
  for (CUevent e : events_) (void)cuda::driver().event_destroy(e);
}

CUevent DeviceTimer::event(std::size_t i) {
  while (events_.size() <= i) {
    CUevent e = nullptr;
    cuda::check(cuda::driver().event_create(&e, CU_EVENT_DEFAULT), "cuEventCreate(profiler)");
    events_.push_back(e);
  }
  return events_[i];
}

void DeviceTimer::begin(CUstream stream) {
  pending_.clear();
  used_ = 1;
  base_host_ns_ = profile::Recorder::now_ns();
  cuda::check(cuda::driver().event_record(event(0), stream), "cuEventRecord(profiler)");
}

void DeviceTimer::before(CUstream stream) {
  cuda::check(cuda::driver().event_record(event(used_), stream), "cuEventRecord(profiler)");
  ++used_;
}

void DeviceTimer::after(CUstream stream, int site, int step, profile::Phase phase, int run) {
  cuda::check(cuda::driver().event_record(event(used_), stream), "cuEventRecord(profiler)");
  pending_.push_back({used_ - 1, used_, site, step, run, phase});
  ++used_;
}

void DeviceTimer::finish(profile::Recorder& rec, CUstream stream) {
  const cuda::Driver& d = cuda::driver();
  cuda::check(d.stream_synchronize(stream), "cuStreamSynchronize(profiler)");
  for (const Pending& p : pending_) {
    float start_ms = 0, end_ms = 0;
    cuda::check(d.event_elapsed_time(&start_ms, events_[0], events_[p.start]), "cuEventElapsedTime");
    cuda::check(d.event_elapsed_time(&end_ms, events_[0], events_[p.end]), "cuEventElapsedTime");
    profile::DeviceEvent e;
    e.site = p.site;
    e.step = p.step;
    e.run = p.run;
    e.phase = p.phase;
    e.begin_ns = base_host_ns_ + static_cast<std::int64_t>(static_cast<double>(start_ms) * 1e6);
    e.end_ns = base_host_ns_ + static_cast<std::int64_t>(static_cast<double>(end_ms) * 1e6);
    rec.device(e);
  }
  pending_.clear();
}

}  // namespace cellfuse::cuda_run
