#include "runtime/generate/generator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>

#include "compiler/ir/error.h"
#include "runtime/cpu/blas.h"
#include "runtime/cpu/team.h"
#include "runtime/generate/step_parts.h"

namespace cellfuse::generate {

using cpu::quant::Format;
using cpu::quant::QuantMatrix;

Generator::Generator(const GeneratorModel& model, Format format, int threads) {
  format_ = format;
  vocab_ = model.vocab_size, embed_dim_ = model.embed_dim;
  if (vocab_ < 1 || embed_dim_ < 1 || static_cast<std::int64_t>(model.embedding.size()) != vocab_ * embed_dim_)
    throw Error("generator: the embedding must be [vocab, dim] with both >= 1; got vocab " + std::to_string(vocab_) +
                ", dim " + std::to_string(embed_dim_) + " and " + std::to_string(model.embedding.size()) + " values");
  if (model.layers.empty()) throw Error("generator: a model needs at least one layer");
  if (model.params.size() != model.layers.size())
    throw Error("generator: " + std::to_string(model.layers.size()) + " layers but parameters for " +
                std::to_string(model.params.size()));
  for (float v : model.embedding)
    if (!std::isfinite(v)) throw Error("generator: the embedding holds a non-finite value");
  embedding_ = model.embedding;
  for (std::size_t l = 0; l < model.layers.size(); ++l) {
    const Cell& cell = model.layers[l];
    const auto& ps = model.params[l];
    if (ps.size() != cell.params.size())
      throw Error("generator: layer " + std::to_string(l) + " ('" + cell.name + "') takes " +
                  std::to_string(cell.params.size()) + " parameters, got " + std::to_string(ps.size()));
    std::vector<const float*> pointers;
    for (std::size_t p = 0; p < ps.size(); ++p) {
      const Shape& shape = cell.graph.node(cell.params[p]).shape;
      std::int64_t want = 1;
      for (int i = 0; i < shape.rank; ++i) want *= shape.dims[static_cast<std::size_t>(i)];
      if (static_cast<std::int64_t>(ps[p].size()) != want)
        throw Error("generator: layer " + std::to_string(l) + " parameter '" + std::string(cell.leaf_name(cell.params[p])) +
                    "' " + to_string(cell.graph.node(cell.params[p]).shape) + " needs " + std::to_string(want) +
                    " values, got " + std::to_string(ps[p].size()));
      pointers.push_back(ps[p].data());
    }
    layers_.emplace_back(cell, pointers, format);
  }
  const std::int64_t hidden = layers_.back().output_width();
  if (static_cast<std::int64_t>(model.decoder_weight.size()) != vocab_ * hidden)
    throw Error("generator: the decoder weight must be [vocab " + std::to_string(vocab_) + ", " + std::to_string(hidden) +
                "] (the last layer's output), got " + std::to_string(model.decoder_weight.size()) + " values");
  if (!model.decoder_bias.empty() && static_cast<std::int64_t>(model.decoder_bias.size()) != vocab_)
    throw Error("generator: the decoder bias must have " + std::to_string(vocab_) + " values, got " +
                std::to_string(model.decoder_bias.size()));
  decoder_ = QuantMatrix::quantize(model.decoder_weight.data(), true, hidden, vocab_, format);
  decoder_bias_ = model.decoder_bias;
  tokens_ = model.tokens;
  finish_setup(threads);
}

Generator::~Generator() = default;

// Checks that the layers chain (embedding -> layer 0 -> ... -> decoder) and takes the team.
void Generator::finish_setup(int threads) {
  std::int64_t width = embed_dim_;
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    if (layers_[l].input_width() != width)
      throw Error("generator: layer " + std::to_string(l) + " ('" + layers_[l].cell().name + "') takes inputs of " +
                  std::to_string(layers_[l].input_width()) + " features, but " +
                  (l == 0 ? "the embedding has " : "the layer below gives ") + std::to_string(width));
    width = layers_[l].output_width();
  }
  if (decoder_.k() != width || decoder_.n() != vocab_)
    throw Error("generator: the decoder is " + std::to_string(decoder_.n()) + " x " + std::to_string(decoder_.k()) +
                ", expected vocab " + std::to_string(vocab_) + " x " + std::to_string(width));
  if (!decoder_bias_.empty() && static_cast<std::int64_t>(decoder_bias_.size()) != vocab_)
    throw Error("generator: the decoder bias has " + std::to_string(decoder_bias_.size()) + " values, expected " +
                std::to_string(vocab_));
  if (!tokens_.empty() && static_cast<std::int64_t>(tokens_.size()) != vocab_)
    throw Error("generator: the vocabulary has " + std::to_string(tokens_.size()) + " tokens, the model " +
                std::to_string(vocab_));
  cpu::use_single_threaded_blas();
  team_ = cpu::shared_team(threads > 0 ? threads : cpu::default_thread_count());
  step_bytes_ = weight_bytes();
}

std::size_t Generator::weight_bytes() const {
  std::size_t total = decoder_.bytes();
  for (const auto& l : layers_) total += l.weight_bytes();
  return total;
}

int Generator::threads() const { return team_->size(); }

void Generator::check_ids(const std::vector<std::int32_t>& ids, const char* what) const {
  for (std::size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= vocab_)
      throw Error(std::string("generator: ") + what + "[" + std::to_string(i) + "] = " + std::to_string(ids[i]) +
                  " is not a token id of this model (0 to " + std::to_string(vocab_ - 1) + ")");
}

void Generator::run_layers(const std::int32_t* ids, std::int64_t steps, std::int64_t rows) {
  const std::int64_t total = steps * rows;
  x_.resize(static_cast<std::size_t>(total * embed_dim_));
  for (std::int64_t r = 0; r < total; ++r)
    std::memcpy(x_.data() + r * embed_dim_, embedding_.data() + ids[r] * embed_dim_,
                static_cast<std::size_t>(embed_dim_) * sizeof(float));
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    std::vector<float*> states;
    for (auto& s : states_[l]) states.push_back(s.data());
    y_.resize(static_cast<std::size_t>(total * layers_[l].output_width()));
    layers_[l].run(steps, rows, x_.data(), states, y_.data(), *team_);
    std::swap(x_, y_);
  }
  std::swap(top_, x_);
}

std::vector<float> Generator::logits(const std::vector<std::int32_t>& ids) {
  check_ids(ids, "ids");
  const std::int64_t T = static_cast<std::int64_t>(ids.size());
  std::vector<float> out(static_cast<std::size_t>(T * vocab_));
  if (T == 0) return out;
  std::lock_guard<std::mutex> lock(team_->user_mutex());
  states_.assign(layers_.size(), {});
  for (std::size_t l = 0; l < layers_.size(); ++l)
    for (auto w : layers_[l].state_widths()) states_[l].emplace_back(static_cast<std::size_t>(w), 0.0f);
  run_layers(ids.data(), T, 1);
  decoder_in_.prepare(format_, top_.data(), T, decoder_.k(), decoder_.k());
  decoder_.multiply(decoder_in_, decoder_bias_.empty() ? nullptr : decoder_bias_.data(), out.data(), vocab_, team_.get());
  return out;
}

std::vector<std::vector<std::int32_t>> Generator::generate(const std::vector<std::int32_t>& prime, std::int64_t length,
                                                           const SampleOptions& options, std::int64_t streams,
                                                           const StepCallback& on_step) {
  check_sample_options(options);
  if (prime.empty()) throw Error("generator: the prime must hold at least one token (it gives the first logits)");
  check_ids(prime, "prime");
  if (length < 0) throw Error("generator: length must be >= 0, got " + std::to_string(length));
  if (streams < 1) throw Error("generator: streams must be >= 1, got " + std::to_string(streams));
  const std::int64_t T = static_cast<std::int64_t>(prime.size()), B = streams;
  std::vector<std::vector<std::int32_t>> out(static_cast<std::size_t>(B));
  for (auto& o : out) o.reserve(static_cast<std::size_t>(length));
  std::vector<Sampler> samplers;
  samplers.reserve(static_cast<std::size_t>(B));
  for (std::int64_t b = 0; b < B; ++b) samplers.emplace_back(stream_seed(options.seed, b));

  std::lock_guard<std::mutex> lock(team_->user_mutex());
  states_.assign(layers_.size(), {});
  for (std::size_t l = 0; l < layers_.size(); ++l)
    for (auto w : layers_[l].state_widths()) states_[l].emplace_back(static_cast<std::size_t>(B * w), 0.0f);
  // The prime, step-major with every stream fed the same token.
  std::vector<std::int32_t> ids(static_cast<std::size_t>(T * B));
  for (std::int64_t t = 0; t < T; ++t)
    std::fill(ids.begin() + t * B, ids.begin() + (t + 1) * B, prime[static_cast<std::size_t>(t)]);
  run_layers(ids.data(), T, B);
  const std::int64_t hidden = decoder_.k();
  std::vector<float> logits(static_cast<std::size_t>(B * vocab_));
  const float* bias = decoder_bias_.empty() ? nullptr : decoder_bias_.data();
  decoder_in_.prepare(format_, top_.data() + (T - 1) * B * hidden, B, hidden, hidden);
  decoder_.multiply(decoder_in_, bias, logits.data(), vocab_, team_.get());
  // Kept from call to call (for as many streams): a served model does not probe at every request.
  if (!step_parts_ || step_parts_rows_ != B) {
    step_parts_ = std::make_unique<StepParts>(step_bytes_ * static_cast<std::size_t>(B), team_->size());
    step_parts_rows_ = B;
  }
  if (length == 0) return out;
  bind_steps(B);
  GenerationRun run{.options = options, .length = length, .samplers = samplers, .out = out, .on_step = on_step};
  run.ids.resize(static_cast<std::size_t>(B));
  run.logits = std::move(logits);
  StepParts& parts = *step_parts_;
  while (!run.stop) {
    const bool timed = parts.timing();
    const auto start = timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    const std::int64_t before = run.step;
    run_steps(run, parts.steps(), parts.next());
    parts.record(timed ? std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count()
                       : 0,
                 run.step - before);
  }
  if (run.error) std::rethrow_exception(run.error);
  return out;
}

// The step path's memory, bound once per call for the team's size: each member's embedding
// rows of the sampled tokens, each layer's states and output (member 0's; a replicated step
// keeps the other members' copies in the layer), the logits.
void Generator::bind_steps(std::int64_t rows) {
  const int members = team_->size();
  step_x_.resize(static_cast<std::size_t>(members));
  std::vector<const float*> inputs;
  for (auto& x : step_x_) {
    x.resize(static_cast<std::size_t>(rows * embed_dim_));
    inputs.push_back(x.data());
  }
  step_out_.resize(layers_.size());
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    std::vector<float*> states;
    for (auto& st : states_[l]) states.push_back(st.data());
    step_out_[l].resize(static_cast<std::size_t>(rows * layers_[l].output_width()));
    layers_[l].bind_step(rows, inputs, states, step_out_[l].data(), members);
    for (int p = 0; p < members; ++p) inputs[static_cast<std::size_t>(p)] = layers_[l].step_output(p);
  }
  decoder_members_.resize(static_cast<std::size_t>(members));
}

// Up to `count` steps of generation in one run of `parts` members of the team (1: the caller
// alone, no barriers). Each step samples every stream's next token from the logits, then runs
// every layer and the decoder, each member taking its share of every product's output rows
// (QuantCell::step), with barriers only where one reads what another wrote. Without a callback
// every member samples (each its own copy of the samplers, all drawing the same tokens from the
// same logits) and embeds the tokens into its own input rows: no barrier after the sampling.
// With one, member 0 samples and calls it while the others wait at a barrier that also tells
// them whether to stop. A step that ends generation (the last token, on_step's false, an error)
// stops every member alike.
void Generator::run_steps(GenerationRun& run, std::int64_t count, int parts) {
  const std::int64_t rows = static_cast<std::int64_t>(run.ids.size());
  const float* bias = decoder_bias_.empty() ? nullptr : decoder_bias_.data();
  // (Only with replicated layers: when kernels are split by rows, every member reads member 0's
  // input rows.)
  const bool every = parts > 1 && !run.on_step && layers_.front().step_replicated();
  if (every) {  // here, before the run: member 0 moves its samplers on from its first step
    run.draws.resize(static_cast<std::size_t>(parts - 1));
    for (auto& d : run.draws) d.samplers = run.samplers, d.ids.resize(run.ids.size());
  }
  const std::int64_t first = run.step;
  // Member `part`'s draw of step `step`: whether generation ends with it.
  auto draw = [&](int part, std::int64_t step) {
    auto& samplers = part == 0 ? run.samplers : run.draws[static_cast<std::size_t>(part - 1)].samplers;
    auto& ids = part == 0 ? run.ids : run.draws[static_cast<std::size_t>(part - 1)].ids;
    try {
      for (std::int64_t b = 0; b < rows; ++b) {
        const auto ub = static_cast<std::size_t>(b);
        ids[ub] = samplers[ub].sample(run.logits.data() + b * vocab_, vocab_, run.options);
        if (part == 0) run.out[ub].push_back(ids[ub]);
      }
      const bool stopped = part == 0 && run.on_step && !run.on_step(step, ids.data());  // (on the last step too)
      const bool last = stopped || step + 1 == run.length;
      float* x = step_x_[static_cast<std::size_t>(part)].data();
      for (std::int64_t r = 0; r < rows; ++r)
        std::memcpy(x + r * embed_dim_, embedding_.data() + ids[static_cast<std::size_t>(r)] * embed_dim_,
                    static_cast<std::size_t>(embed_dim_) * sizeof(float));
      return last;
    } catch (...) {  // every member of `every` meets the same logits, hence the same error
      if (part == 0) run.error = std::current_exception();
      return true;
    }
  };
  auto work = [&](int part, int n) {
    StepSync sync;
    sync.parts = n;
    const bool each = every && n > 1;  // n: 1 when the team runs the caller alone
    for (auto& layer : layers_) layer.begin_steps(part);
    std::int64_t step = first;
    for (std::int64_t i = 0; i < count; ++i) {
      sync.before_solo(*team_);  // the logits are whole
      bool stop = false;
      if (each || part == 0) stop = draw(each ? part : 0, step);
      ++step;
      if (!each) {  // member 0's tokens (in its rows, which every member reads) and its verdict
        if (part == 0) run.stop = stop;
        sync.barrier(*team_);
        stop = run.stop;
        // A replicated layer's member reads its own input rows: member 0's here.
        if (n > 1 && part > 0) std::memcpy(step_x_[static_cast<std::size_t>(part)].data(), step_x_[0].data(), step_x_[0].size() * sizeof(float));
      }
      if (stop) break;
      const int barriers = sync.barriers;
      for (auto& layer : layers_) layer.step(part, n, *team_, sync);
      const float* top = layers_.back().step_output(n > 1 ? part : 0);
      sync.before_shared(*team_, top);
      // The logits are rewritten below: every member must be done reading them.
      if (each && sync.barriers == barriers) sync.barrier(*team_);
      const auto [r0, r1] = share_rows(vocab_, QuantMatrix::kRowBlock, part, n);
      if (r0 < r1) {
        auto& a = decoder_members_[static_cast<std::size_t>(part)];
        a.prepare(format_, top, rows, decoder_.k(), decoder_.k());
        decoder_.multiply_rows(a, bias, run.logits.data(), vocab_, r0, r1);
      }
      sync.written.push_back(run.logits.data());
    }
    if (part == 0) {
      run.step = step;
      if (!run.stop && (step == run.length || run.error)) run.stop = true;  // (else others may read it now)
    }
  };
  if (parts == 1) work(0, 1);
  else team_->run(work);
}

std::vector<std::int32_t> Generator::encode(std::string_view text) const {
  if (tokens_.empty()) throw Error("generator: this model has no vocabulary; pass token ids");
  std::vector<std::int32_t> ids;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::int32_t best = -1;
    std::size_t best_len = 0;
    for (std::size_t t = 0; t < tokens_.size(); ++t) {
      const auto& tok = tokens_[t];
      if (tok.size() > best_len && text.compare(pos, tok.size(), tok) == 0) best = static_cast<std::int32_t>(t), best_len = tok.size();
    }
    if (best < 0)
      throw Error("generator: no token of the vocabulary matches the text at byte " + std::to_string(pos) + " ('" +
                  std::string(text.substr(pos, 8)) + "')");
    ids.push_back(best);
    pos += best_len;
  }
  return ids;
}

std::string Generator::decode(const std::vector<std::int32_t>& ids) const {
  if (tokens_.empty()) throw Error("generator: this model has no vocabulary to decode with");
  check_ids(ids, "ids");
  std::string out;
  for (auto id : ids) out += tokens_[static_cast<std::size_t>(id)];
  return out;
}

}  // namespace cellfuse::generate
