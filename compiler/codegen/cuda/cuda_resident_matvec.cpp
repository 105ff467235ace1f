#include "compiler/codegen/cuda/cuda_resident_matvec.h"

#include <algorithm>

#include "compiler/codegen/cuda/cuda_text.h"

namespace cellfuse::cuda_codegen {

// Registers a thread spends on accumulators: one per row of a group.
constexpr std::int64_t kMaxRowsPerGroup = 8;

int ResidentProduct::splits() const {
  if (n >= threads) return 1;
  return static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(threads / n, k)));
}

std::int64_t ResidentProduct::rows_per_group() const { return std::min(batch, kMaxRowsPerGroup); }

std::int64_t ResidentProduct::part_elements() const {
  const int s = splits();
  return s == 1 ? 0 : s * rows_per_group() * n;
}

void emit_resident_product(const std::function<void(const std::string&)>& line, const ResidentProduct& p) {
  const std::string T = p.dtype == DType::f32 ? "float" : "double";
  const std::string fma = p.dtype == DType::f32 ? "fmaf" : "fma";
  const int S = p.splits();
  const std::int64_t R = p.rows_per_group(), chunk = (p.k + S - 1) / S;
  const std::string K = str(p.k), N = str(p.n), th = str(p.threads), XS = str(p.x_stride), OS = str(p.out_stride);
  auto result = [&](const std::string& sum) { return p.bias ? p.bias("n") + " + " + sum : sum; };
  // One group of `rows` rows from row r0 (a variable of the enclosing code).
  auto group = [&](std::int64_t rows) {
    line("for (int u = threadIdx.x; u < " + str(p.n * S) + "; u += " + th + ") {");
    line("  const int n = u % " + N + ";");
    line("  const int kb = (u / " + N + ") * " + str(chunk) + ";");
    line("  const int ke = kb + " + str(chunk) + " < " + K + " ? kb + " + str(chunk) + " : " + K + ";");
    line("  const " + T + "* xr = " + p.x + " + r0 * " + XS + ";");
    std::string declare = "  " + T + " a0 = 0";
    for (std::int64_t i = 1; i < rows; ++i) declare += ", a" + str(i) + " = 0";
    line(declare + ";");
    line("  for (int k = kb; k < ke; ++k) {");
    line("    const " + T + " w = " + p.weight + "[k * " + N + " + n];");
    for (std::int64_t i = 0; i < rows; ++i)
      line("    a" + str(i) + " = " + fma + "(xr[" + (i ? str(i * p.x_stride) + " + " : "") + "k], w, a" + str(i) + ");");
    line("  }");
    for (std::int64_t i = 0; i < rows; ++i) {
      if (S == 1) line("  " + p.out + "[(r0 + " + str(i) + ") * " + OS + " + n] = " + result("a" + str(i)) + ";");
      else line("  " + p.part + "[((u / " + N + ") * " + str(R) + " + " + str(i) + ") * " + N + " + n] = a" + str(i) + ";");
    }
    line("}");
    if (S == 1) return;
    line("__syncthreads();");
    line("for (int e = threadIdx.x; e < " + str(rows * p.n) + "; e += " + th + ") {");
    line("  const int i = e / " + N + ", n = e % " + N + ";");
    line("  " + T + " sum = " + p.part + "[i * " + N + " + n];");
    line("  for (int s = 1; s < " + str(S) + "; ++s) sum += " + p.part + "[(s * " + str(R) + " + i) * " + N + " + n];");
    line("  " + p.out + "[(r0 + i) * " + OS + " + n] = " + result("sum") + ";");
    line("}");
    line("__syncthreads();");  // the next group writes the partial sums again
  };
  line("{  // resident product: out[r, n] = x[r, k] W[k, n], k < " + K + ", n < " + N + ", " + str(S) +
       " thread(s) a column, " + str(R) + " row(s) a group");
  const std::int64_t whole = p.batch / R * R;
  line("  for (long long r0 = 0; r0 < " + str(whole) + "; r0 += " + str(R) + ") {");
  group(R);
  line("  }");
  if (whole < p.batch) {
    line("  {");
    line("    const long long r0 = " + str(whole) + ";");
    group(p.batch - whole);
    line("  }");
  }
  line("}");
}

}  // namespace cellfuse::cuda_codegen
