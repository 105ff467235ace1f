// cellfuse._C.cli_main: the `cellfuse` command line inside the Python package. The module is built
// with frontend/cli/main.cpp itself (its main renamed cellfuse_cli_main, see python/CMakeLists.txt),
// so `cellfuse` from pip and `python -m cellfuse` are the C++ build's command, not a copy of it.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "python/src/bindings.h"

int cellfuse_cli_main(int argc, char** argv);  // frontend/cli/main.cpp's main()

namespace py = pybind11;

namespace cellfuse::python {

void bind_cli(py::module_& m) {
  m.def(
      "cli_main",
      [](std::vector<std::string> args) {
        std::vector<char*> argv;
        for (std::string& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        int status;
        {
          py::gil_scoped_release release;  // a `run` may take a while; other threads go on
          status = cellfuse_cli_main(static_cast<int>(args.size()), argv.data());
          std::cout.flush();
          std::fflush(stdout);
          std::fflush(stderr);
        }
        return status;
      },
      py::arg("argv"),
      "Runs the cellfuse command line with argv (argv[0] is the program name); returns its exit status.");
}

}  // namespace cellfuse::python
