#pragma once
// The benchmark workloads of the CPU and CUDA issues, shared by every benchmark program so that
// all of them (and bench/compare_cpu.py, which mirrors them in PyTorch) measure the same thing.
#include <cstdint>
#include <string>
#include <vector>

#include "frontend/cells.h"

namespace cellfuse::bench {

struct Workload {
  std::string id;    // W1, W2, ...
  std::string cell;  // a built-in cell spec
  std::int64_t steps, batch;
};

inline const std::vector<Workload>& workloads() {
  static const std::vector<Workload> all = {
      {"W1", "elman_proj:256,128,128", 4096, 2},  // Elman + output projection
      {"W2", "lstm:512,512", 100, 64},            // LSTM, throughput
      {"W3", "lnlstm:512,512", 100, 64},          // LayerNorm-LSTM
      {"W5", "lstm:256,256", 1000, 1},            // LSTM, latency-bound
  };
  return all;
}

}  // namespace cellfuse::bench
