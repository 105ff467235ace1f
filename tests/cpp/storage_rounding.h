#pragma once
// What a caller's 16-bit tensors hold: f32 arguments rounded through the storage format, for the
// tests of CudaOptions::storage (the f64 oracle then runs on exactly the values the GPU sees). No
// GoogleTest here, so that the GPU programs (tests/gpu) can include it too.
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/cuda/storage.h"
#include "runtime/reference/bptt.h"
#include "runtime/reference/interpreter.h"

namespace cellfuse::testing_support {

inline void round_through(std::vector<HostTensor<float>>& tensors, Storage storage) {
  for (auto& t : tensors)
    for (float& v : t.data) v = round_to_storage(v, storage);
}

inline SequenceArgs<float> rounded(SequenceArgs<float> args, Storage storage) {
  round_through(args.inputs, storage);
  round_through(args.states, storage);
  round_through(args.params, storage);
  return args;
}

inline LossGradients<float> rounded(LossGradients<float> seeds, Storage storage) {
  round_through(seeds.outputs, storage);
  round_through(seeds.final_states, storage);
  return seeds;
}

inline SequenceResult<float> rounded(SequenceResult<float> result, Storage storage) {
  round_through(result.outputs, storage);
  round_through(result.final_states, storage);
  return result;
}

// The 16-bit storage cases of the GPU programs: every standard cell (odd sizes), bf16 and f16,
// B = 1, 3, 64, T = 2, 37; calls check(spec, storage, batch, steps, name) for each, `name`
// saying all of it.
template <class F>
void for_each_storage_case(F&& check) {
  for (const char* spec : {"elman:3,33", "elman_proj:5,7", "lstm:5,7", "lstm:33,33", "gru:4,33", "lnlstm:5,7", "peephole:7,33"})
    for (Storage storage : {Storage::BF16, Storage::F16})
      for (std::int64_t batch : {1, 3, 64})
        for (std::int64_t steps : {2, 37})
          check(spec, storage, batch, steps,
                std::string(spec) + " " + std::string(storage_name(storage)) + " B=" + std::to_string(batch) + " T=" +
                    std::to_string(steps));
}

}  // namespace cellfuse::testing_support
