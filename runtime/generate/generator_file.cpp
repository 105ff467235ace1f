// The generator file: one versioned binary holding everything a Generator needs, weights in
// their format (an int8 file is about a quarter of the fp32 one). Layout, little-endian:
//
//   "CFGEN\0\0\0" u32 version  u8 format
//   u64 vocab  u64 embed_dim  f32[vocab * embed_dim]         the embedding (always fp32)
//   u32 tokens, each: u32 bytes, the bytes                    the vocabulary (0: ids only)
//   u32 layers, each: str cell text  u32 params, each: u8 kept, (u64 n, f32[n]) when kept
//                     u32 matrices, each: u32 param  u8 linear  matrix
//   matrix (decoder)  u64 n  f32[n] (bias)
//   u64 FNV-1a of every byte before it
//
// matrix = u8 format  u64 k  u64 n  u64 bytes, the bytes  u64 scales, f32[scales] (QuantMatrix's
// raw_data and raw_scales: int8's row scales are f32, int4's fp16 group scales are in its bytes).
// Reading checks the checksum first, then every length against what is left, so a truncated or
// corrupt file is an Error that says so, never a crash or a huge allocation.
#include <cstring>
#include <fstream>
#include <sstream>

#include "compiler/ir/error.h"
#include "compiler/ir/text.h"
#include "runtime/generate/generator.h"

namespace cellfuse::generate {
namespace {

using cpu::quant::Format;
using cpu::quant::QuantMatrix;

constexpr char kMagic[8] = {'C', 'F', 'G', 'E', 'N', 0, 0, 0};
constexpr std::uint32_t kVersion = 2;  // 2: int4 scales in fp16, inside the matrix's bytes

std::uint64_t fnv1a(const std::string& bytes, std::size_t size) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < size; ++i) h = (h ^ static_cast<unsigned char>(bytes[i])) * 0x100000001b3ull;
  return h;
}

struct Writer {
  std::string out;
  template <class T>
  void put(T v) {
    out.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void bytes(const void* p, std::size_t n) {
    if (n) out.append(static_cast<const char*>(p), n);  // an empty vector's data() may be null
  }
  void str(const std::string& s) {
    put<std::uint32_t>(static_cast<std::uint32_t>(s.size()));
    bytes(s.data(), s.size());
  }
  void floats(const std::vector<float>& v) {
    put<std::uint64_t>(v.size());
    bytes(v.data(), v.size() * sizeof(float));
  }
  void matrix(const QuantMatrix& m) {
    put<std::uint8_t>(static_cast<std::uint8_t>(m.format()));
    put<std::uint64_t>(static_cast<std::uint64_t>(m.k()));
    put<std::uint64_t>(static_cast<std::uint64_t>(m.n()));
    const std::vector<std::uint8_t> data = m.raw_data();
    put<std::uint64_t>(data.size());
    bytes(data.data(), data.size());
    floats(m.raw_scales());
  }
};

struct Reader {
  const std::string& in;
  std::size_t pos, end;
  const std::string& path;
  void need(std::size_t n, const char* what) {
    if (n > end - pos)
      throw Error("generator file '" + path + "' is truncated or corrupt: " + what + " needs " + std::to_string(n) +
                  " bytes at offset " + std::to_string(pos) + ", " + std::to_string(end - pos) + " are left");
  }
  template <class T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, in.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string str(const char* what) {
    const auto n = get<std::uint32_t>(what);
    need(n, what);
    std::string s = in.substr(pos, n);
    pos += n;
    return s;
  }
  std::vector<float> floats(const char* what) {
    const auto n = get<std::uint64_t>(what);
    if (n > (end - pos) / sizeof(float)) need(SIZE_MAX, what);
    std::vector<float> v(static_cast<std::size_t>(n));
    if (n) std::memcpy(v.data(), in.data() + pos, v.size() * sizeof(float));
    pos += v.size() * sizeof(float);
    return v;
  }
  Format format(const char* what) {
    const auto f = get<std::uint8_t>(what);
    if (f > static_cast<std::uint8_t>(Format::Int4))
      throw Error("generator file '" + path + "' is corrupt: " + what + " has unknown weight format " + std::to_string(f));
    return static_cast<Format>(f);
  }
  QuantMatrix matrix(const char* what) {
    const Format f = format(what);
    const auto k = get<std::uint64_t>(what), n = get<std::uint64_t>(what), size = get<std::uint64_t>(what);
    need(size, what);
    std::vector<std::uint8_t> data(in.begin() + static_cast<std::ptrdiff_t>(pos),
                                   in.begin() + static_cast<std::ptrdiff_t>(pos + size));
    pos += size;
    auto scales = floats(what);
    if (k > (1ull << 31) || n > (1ull << 31))
      throw Error("generator file '" + path + "' is corrupt: " + what + " claims " + std::to_string(n) + " x " + std::to_string(k));
    return QuantMatrix::from_raw(f, static_cast<std::int64_t>(k), static_cast<std::int64_t>(n), std::move(data),
                                 std::move(scales));
  }
};

}  // namespace

struct GeneratorFile {
  static void save(const Generator& g, const std::string& path) {
    Writer w;
    w.bytes(kMagic, sizeof(kMagic));
    w.put<std::uint32_t>(kVersion);
    w.put<std::uint8_t>(static_cast<std::uint8_t>(g.format_));
    w.put<std::uint64_t>(static_cast<std::uint64_t>(g.vocab_));
    w.put<std::uint64_t>(static_cast<std::uint64_t>(g.embed_dim_));
    w.bytes(g.embedding_.data(), g.embedding_.size() * sizeof(float));
    w.put<std::uint32_t>(static_cast<std::uint32_t>(g.tokens_.size()));
    for (const auto& t : g.tokens_) w.str(t);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(g.layers_.size()));
    for (const auto& layer : g.layers_) {
      w.str(print_cell(layer.cell()));
      const LayerWeights& lw = layer.weights();
      w.put<std::uint32_t>(static_cast<std::uint32_t>(lw.fp32.size()));
      for (const auto& p : lw.fp32) {
        w.put<std::uint8_t>(p ? 1 : 0);
        if (p) w.floats(*p);
      }
      w.put<std::uint32_t>(static_cast<std::uint32_t>(lw.matrices.size()));
      for (const auto& [key, m] : lw.matrices) {
        w.put<std::uint32_t>(static_cast<std::uint32_t>(key.first));
        w.put<std::uint8_t>(key.second ? 1 : 0);
        w.matrix(m);
      }
    }
    w.matrix(g.decoder_);
    w.floats(g.decoder_bias_);
    w.put<std::uint64_t>(fnv1a(w.out, w.out.size()));
    // Written next to the target and renamed: a crash mid-write never leaves a half file there.
    const std::string tmp = path + ".tmp";
    {
      std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
      if (!f) throw Error("generator: cannot write '" + tmp + "'");
      f.write(w.out.data(), static_cast<std::streamsize>(w.out.size()));
      if (!f) throw Error("generator: writing '" + tmp + "' failed");
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) throw Error("generator: cannot rename '" + tmp + "' to '" + path + "'");
  }

  static std::unique_ptr<Generator> load(const std::string& path, int threads) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw Error("generator: cannot open '" + path + "'");
    std::stringstream ss;
    ss << f.rdbuf();
    const std::string in = ss.str();
    const std::size_t header = sizeof(kMagic) + 4;
    if (in.size() < header || std::memcmp(in.data(), kMagic, sizeof(kMagic)) != 0)
      throw Error("generator: '" + path + "' is not a cellfuse generator file (no CFGEN header)");
    std::uint32_t version;
    std::memcpy(&version, in.data() + sizeof(kMagic), 4);
    if (version != kVersion)
      throw Error("generator: '" + path + "' is version " + std::to_string(version) + "; this cellfuse reads version " +
                  std::to_string(kVersion));
    if (in.size() < header + 8) throw Error("generator file '" + path + "' is truncated (" + std::to_string(in.size()) + " bytes)");
    std::uint64_t stored;
    std::memcpy(&stored, in.data() + in.size() - 8, 8);
    if (stored != fnv1a(in, in.size() - 8))
      throw Error("generator file '" + path + "' is truncated or corrupt: its checksum does not match (" +
                  std::to_string(in.size()) + " bytes)");
    Reader r{in, header, in.size() - 8, path};
    std::unique_ptr<Generator> g(new Generator());
    g->format_ = r.format("the weight format");
    g->vocab_ = static_cast<std::int64_t>(r.get<std::uint64_t>("the vocabulary size"));
    g->embed_dim_ = static_cast<std::int64_t>(r.get<std::uint64_t>("the embedding width"));
    if (g->vocab_ < 1 || g->embed_dim_ < 1 || g->vocab_ > (1 << 30) || g->embed_dim_ > (1 << 30))
      throw Error("generator file '" + path + "' is corrupt: embedding " + std::to_string(g->vocab_) + " x " +
                  std::to_string(g->embed_dim_));
    const std::size_t emb = static_cast<std::size_t>(g->vocab_ * g->embed_dim_);
    r.need(emb * sizeof(float), "the embedding");
    g->embedding_.resize(emb);
    std::memcpy(g->embedding_.data(), in.data() + r.pos, emb * sizeof(float));
    r.pos += emb * sizeof(float);
    const auto tokens = r.get<std::uint32_t>("the vocabulary");
    for (std::uint32_t t = 0; t < tokens; ++t) g->tokens_.push_back(r.str("a token"));
    const auto layers = r.get<std::uint32_t>("the layer count");
    for (std::uint32_t l = 0; l < layers; ++l) {
      const std::string text = r.str("a layer's cell");
      Cell cell = parse_cell(text, path + ": layer " + std::to_string(l));
      LayerWeights lw;
      const auto params = r.get<std::uint32_t>("a layer's parameter count");
      for (std::uint32_t p = 0; p < params; ++p) {
        lw.fp32.emplace_back();
        if (r.get<std::uint8_t>("a parameter")) lw.fp32.back() = r.floats("a parameter");
      }
      const auto matrices = r.get<std::uint32_t>("a layer's matrix count");
      for (std::uint32_t i = 0; i < matrices; ++i) {
        const auto param = static_cast<int>(r.get<std::uint32_t>("a matrix"));
        const bool linear = r.get<std::uint8_t>("a matrix") != 0;
        lw.matrices.emplace(WeightKey{param, linear}, r.matrix("a layer's matrix"));
      }
      g->layers_.emplace_back(cell, std::move(lw));
    }
    if (g->layers_.empty()) throw Error("generator file '" + path + "' is corrupt: it has no layers");
    g->decoder_ = r.matrix("the decoder");
    g->decoder_bias_ = r.floats("the decoder bias");
    if (r.pos != r.end)
      throw Error("generator file '" + path + "' is corrupt: " + std::to_string(r.end - r.pos) + " bytes after the decoder");
    g->finish_setup(threads);
    return g;
  }
};

void Generator::save(const std::string& path) const { GeneratorFile::save(*this, path); }
std::unique_ptr<Generator> Generator::load(const std::string& path, int threads) { return GeneratorFile::load(path, threads); }

}  // namespace cellfuse::generate
