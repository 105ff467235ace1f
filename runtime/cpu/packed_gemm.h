#pragma once
// The recurrent product of a time step, out[m, n] = x[m, k] W (+ bias), with W rearranged once
// per sequence into column panels that cellfuse's own vector kernel reads straight through.
// A BLAS packs W again on every call, which for the small products of one step (64 x 512 x 2048
// in the W2 LSTM) costs half its speed; here the packing is paid once for all T steps.
//
// Float only, on CPUs with AVX-512F or AVX2+FMA (checked at run time; supported() says whether
// this one has either). Every output element is summed in the same order whatever the team's
// size (the team splits panels, never the sum), so results do not depend on the thread count.
#include <cstdint>
#include <memory>
#include <vector>

namespace cellfuse::cpu {

class Team;

class PackedWeights {
 public:
  enum class Isa { None, Avx2, Avx512 };

  // Whether this CPU has a kernel for packed products (else callers use the BLAS).
  static bool supported();
  // Tests: pack (and so multiply) with the AVX2 kernel on an AVX-512 CPU, so that both run in CI.
  static void use_avx2_for_testing(bool on);

  // Rearranges W, given as [n, k] (n_by_k, nn.Linear's layout) or [k, n], into panels of the
  // kernel's width. Reuses the memory of an earlier packing of the same size.
  void pack(const float* w, bool n_by_k, std::int64_t k, std::int64_t n);

  // out[m, n] = x[m, k] W (+ bias[n]); rows of x and out are k and n long. Shared among the team
  // by panels when the product is large enough to be worth waking it.
  void multiply(Team& team, const float* x, const float* bias, float* out, std::int64_t m);

 private:
  struct Deleter {
    void operator()(float* p) const;
  };
  Isa isa_ = Isa::None;  // the kernel this packing is for (its panel width)
  std::int64_t k_ = 0, n_ = 0, panels_ = 0;
  std::size_t capacity_ = 0;
  std::unique_ptr<float, Deleter> data_;  // panels_ x [k_, width], 64-byte aligned
  std::vector<std::vector<float>> packed_rows_;  // per team member: rows of x, tile by tile
};

}  // namespace cellfuse::cpu
