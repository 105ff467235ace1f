#include "runtime/profile/profiler.h"

#include <fstream>

#include "compiler/ir/error.h"

namespace cellfuse {

Profiler::Profiler() : recorder_(std::make_unique<profile::Recorder>()) {
  profile::Recorder* expected = nullptr;
  if (!profile::g_active.compare_exchange_strong(expected, recorder_.get()))
    throw Error("profiler: another cellfuse profiler is already on in this process (one at a time)");
  on_ = true;
}

Profiler::~Profiler() { stop(); }

void Profiler::stop() {
  if (!on_) return;
  profile::Recorder* mine = recorder_.get();
  profile::g_active.compare_exchange_strong(mine, nullptr);
  on_ = false;
}

void Profiler::discard_runs() { recorder_->discard_runs(); }

ProfileReport Profiler::report() const {
  const profile::Recorder::Data d = recorder_->data();
  std::string target = "cpu";
  for (const auto& p : d.programs) target = p.target;
  return build_report(d, machine_ceilings(target));
}

std::string Profiler::trace_json() const { return cellfuse::trace_json(recorder_->data()); }

void Profiler::write_trace(const std::string& path) const { write_text_file(path, trace_json()); }

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  if (!out) throw Error("profiler: cannot write '" + path + "'");
  out << text;
  if (!out.flush()) throw Error("profiler: writing '" + path + "' failed");
}

}  // namespace cellfuse
