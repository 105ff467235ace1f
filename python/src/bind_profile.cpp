// The profiler for Python: cellfuse._C.Profiler turns recording on for the process while it is
// open (runtime/profile/profiler.h); python/cellfuse/_profile.py runs the module under it and adds
// the eager PyTorch column.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "python/src/bindings.h"
#include "runtime/profile/profiler.h"

namespace py = pybind11;

namespace cellfuse::python {

void bind_profile(py::module_& m) {
  py::class_<Profiler>(m, "Profiler",
                       "Profiling on for the whole process while the object is open (one at a time). "
                       "cellfuse.profile() is the user-facing entry point.")
      .def(py::init<>())
      .def("stop", &Profiler::stop, "Turns profiling off; what was recorded stays readable.")
      .def_property_readonly("on", &Profiler::on)
      .def("discard_runs", &Profiler::discard_runs, "Drops the runs so far (warm-up), keeping compile events.")
      // Without the GIL: the first report measures the machine (a second or so on a GPU).
      .def(
          "report_json", [](const Profiler& p) { return p.report().json(); }, py::call_guard<py::gil_scoped_release>(),
          "The overhead report as JSON (measures the machine's ceilings on first use, then cached).")
      .def(
          "report_text", [](const Profiler& p) { return p.report().text(); }, py::call_guard<py::gil_scoped_release>(),
          "The overhead report as a text table.")
      .def("trace_json", &Profiler::trace_json, py::call_guard<py::gil_scoped_release>(),
           "The Chrome Trace Event JSON of what was recorded.")
      .def(
          "counts",
          [](const Profiler& p) {
            // Calls per (phase, kind), straight from the events: for tests of the report.
            const auto d = p.data();
            py::dict out;
            for (const auto& e : d.host) {
              if (e.site < 0) continue;
              const auto& s = d.sites[static_cast<std::size_t>(e.site)];
              py::str key(std::string(profile::phase_name(e.phase)) + " " + profile::call_kind_name(s.kind));
              out[key] = (out.contains(key) ? out[key].cast<long long>() : 0) + 1;
            }
            return out;
          },
          "Host calls recorded per 'phase kind' (e.g. 'forward kernel').");
  m.def("machine_ceilings",
        [](const std::string& target) {
          const MachineCeilings c = machine_ceilings(target);
          py::dict out;
          out["device"] = c.device;
          out["gflops"] = c.gflops;
          out["gbytes_per_s"] = c.gbytes;
          out["cache_file"] = c.cache_file;
          out["from_cache"] = c.from_cache;
          return out;
        },
        py::arg("target") = "cpu", "The machine's measured f32 product rate and bandwidth (cached per machine).");
}

}  // namespace cellfuse::python
