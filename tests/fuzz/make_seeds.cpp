// Writes the seed corpus of fuzz_parse: every standard cell, in f32 and f64, at a few sizes,
// printed in the text form (one .cell file each), plus the cells after optimize().
//
//   make_fuzz_seeds DIR
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "compiler/ir/text.h"
#include "compiler/lower.h"
#include "frontend/cells.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_fuzz_seeds DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  const std::vector<std::string> specs = {"elman:3,2",   "elman_proj:3,2,4", "lstm:2,3", "gru:3,2",
                                          "lnlstm:2,3",  "peephole:3,2",     "elman:1",  "lstm:1"};
  int written = 0;
  for (const std::string& spec : specs) {
    for (auto dtype : {cellfuse::DType::f32, cellfuse::DType::f64}) {
      cellfuse::Cell cell = cellfuse::cells::by_spec(spec, dtype);
      std::string base = spec;
      for (char& c : base)
        if (c == ':' || c == ',') c = '_';
      for (int optimized = 0; optimized < 2; ++optimized) {
        std::string path = dir + "/" + base + "_" + std::string(cellfuse::dtype_name(dtype)) +
                           (optimized ? "_opt" : "") + ".cell";
        std::ofstream out(path);
        out << cellfuse::print_cell(optimized ? cellfuse::optimize(cell) : cell);
        if (!out) {
          std::fprintf(stderr, "cannot write %s\n", path.c_str());
          return 1;
        }
        ++written;
      }
    }
  }
  std::printf("wrote %d seeds to %s\n", written, dir.c_str());
  return 0;
}
