#pragma once
// What a caller's 16-bit tensors hold: f32 arguments rounded through the storage format, for the
// tests of CudaOptions::storage (the f64 oracle then runs on exactly the values the GPU sees). No
// GoogleTest here, so that the GPU programs (tests/gpu) can include it too.
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

}  // namespace cellfuse::testing_support
