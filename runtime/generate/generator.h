#pragma once
// Native generation from a recurrent language model: embedding lookup -> stacked compiled cells
// (any cell the CPU backend compiles) -> output projection -> temperature softmax -> sampling ->
// the next input, all in native code, one call per generated sequence. A prime is fed first as
// one batched sequence (its hoisted products over all its steps at once); B independent streams
// run together, every step reading each weight once for all of them. Weights are stored in a
// format picked at load time (runtime/cpu/quant): fp32, bf16, int8 or int4.
//
//   GeneratorModel model = ...;                       // fp32 weights, the layers' cells
//   Generator gen(model, quant::Format::Int8);        // quantized once, here
//   auto ids = gen.generate(gen.encode("The "), 1000, {.temperature = 0.8, .seed = 1}, 1);
//   gen.save("model.cfgen");  auto again = Generator::load("model.cfgen");
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "compiler/ir/graph.h"
#include "runtime/cpu/quant/quant_matrix.h"
#include "runtime/generate/quant_cell.h"
#include "runtime/generate/sampler.h"
#include "runtime/generate/step_parts.h"

namespace cellfuse::cpu {
class Team;
}

namespace cellfuse::generate {

// A model in fp32, as a framework holds it. Layer l reads layer l-1's first output (layer 0 the
// token's embedding); the decoder reads the last layer's first output.
struct GeneratorModel {
  std::vector<Cell> layers;
  std::vector<std::vector<std::vector<float>>> params;  // per layer, per cell param (row-major)
  std::int64_t vocab_size = 0, embed_dim = 0;
  std::vector<float> embedding;       // [vocab, embed_dim]
  std::vector<float> decoder_weight;  // [vocab, last layer's output width]
  std::vector<float> decoder_bias;    // [vocab], or empty
  std::vector<std::string> tokens;    // the text of each id (a vocabulary), or empty (ids only)
};

class Generator {
 public:
  // Compiles the layers and quantizes every product's weight (and the decoder's) to `format`.
  // threads 0: CELLFUSE_NUM_THREADS, else every core. Error on inconsistent shapes.
  Generator(const GeneratorModel& model, cpu::quant::Format format, int threads = 0);
  ~Generator();

  // One versioned file: the format, the cells' text, the weights in their format, the vocabulary,
  // a checksum. A truncated or corrupt file is an Error saying so.
  void save(const std::string& path) const;
  static std::unique_ptr<Generator> load(const std::string& path, int threads = 0);

  cpu::quant::Format format() const { return format_; }
  std::int64_t vocab_size() const { return vocab_; }
  std::int64_t embed_dim() const { return embed_dim_; }
  std::int64_t layers() const { return static_cast<std::int64_t>(layers_.size()); }
  const std::vector<std::string>& tokens() const { return tokens_; }
  const QuantCell& layer(std::int64_t l) const { return layers_[static_cast<std::size_t>(l)]; }
  // Bytes of weights one step reads (every layer's products and the decoder).
  std::size_t weight_bytes() const;
  int threads() const;

  // Teacher-forced logits [T, vocab] of one stream fed `ids` (from zero states).
  std::vector<float> logits(const std::vector<std::int32_t>& ids);

  // `streams` independent streams, each fed `prime` (at least one token) and then `length`
  // tokens of its own sampling (stream b seeded by stream_seed(seed, b)). Returns the generated
  // ids per stream. `on_step(step, ids)` (ids: one per stream) is called after each step; when it
  // returns false generation stops there.
  using StepCallback = std::function<bool(std::int64_t step, const std::int32_t* ids)>;
  std::vector<std::vector<std::int32_t>> generate(const std::vector<std::int32_t>& prime, std::int64_t length,
                                                  const SampleOptions& options, std::int64_t streams = 1,
                                                  const StepCallback& on_step = {});

  // Text <-> ids through the vocabulary (longest token first); Error without a vocabulary or for
  // text no token matches (naming its byte offset).
  std::vector<std::int32_t> encode(std::string_view text) const;
  std::string decode(const std::vector<std::int32_t>& ids) const;

 private:
  Generator() = default;
  void finish_setup(int threads);
  void check_ids(const std::vector<std::int32_t>& ids, const char* what) const;
  // Runs the layers over `steps` x `rows` input rows from the embedding of `ids` ([steps*rows]);
  // leaves the last layer's outputs in top_.
  void run_layers(const std::int32_t* ids, std::int64_t steps, std::int64_t rows);
  // One generate() call's sampling state, shared by the members of a run of steps.
  struct GenerationRun {
    const SampleOptions& options;
    std::int64_t length;
    std::vector<Sampler>& samplers;
    std::vector<std::vector<std::int32_t>>& out;
    const StepCallback& on_step;
    std::vector<std::int32_t> ids{};  // the tokens sampled last, one per stream
    std::vector<float> logits{};      // [streams, vocab] for the next sampling
    std::int64_t step = 0;            // tokens sampled per stream so far
    bool stop = false;                // written by member 0 before a barrier, read after it
    std::exception_ptr error{};       // what stopped it, thrown once the run is over
    struct Draw {                     // member p >= 1's copy when every member samples
      std::vector<Sampler> samplers;
      std::vector<std::int32_t> ids;
    };
    std::vector<Draw> draws{};
  };
  void bind_steps(std::int64_t rows);
  void run_steps(GenerationRun& run, std::int64_t count, int parts);

  cpu::quant::Format format_ = cpu::quant::Format::F32;
  std::int64_t vocab_ = 0, embed_dim_ = 0;
  std::vector<float> embedding_;
  std::vector<QuantCell> layers_;
  cpu::quant::QuantMatrix decoder_;
  std::vector<float> decoder_bias_;
  std::vector<std::string> tokens_;
  std::shared_ptr<cpu::Team> team_;
  // Per layer, per state: [streams, n]; the activations between layers.
  std::vector<std::vector<std::vector<float>>> states_;
  std::vector<float> x_, y_, top_;
  cpu::quant::Activations decoder_in_;
  std::vector<std::vector<float>> step_x_;                  // per member: the step's embedding rows
  std::vector<std::vector<float>> step_out_;                // per layer: one step's output
  std::vector<cpu::quant::Activations> decoder_members_;   // per team member (the step path)
  std::size_t step_bytes_ = 0;                              // weight_bytes(), fixed at setup
  std::unique_ptr<StepParts> step_parts_;                   // for step_parts_rows_ streams
  std::int64_t step_parts_rows_ = 0;

  friend struct GeneratorFile;
};

}  // namespace cellfuse::generate
