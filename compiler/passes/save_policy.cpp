#include "compiler/passes/save_policy.h"

#include <algorithm>
#include <cstdint>
#include <queue>

namespace cellfuse::autodiff_detail {
namespace {

// Max flow (Edmonds-Karp) on a small graph, and the cut it leaves.
class MaxFlow {
 public:
  static constexpr std::int64_t kInfinite = std::int64_t{1} << 56;

  explicit MaxFlow(std::size_t nodes) : out_(nodes) {}

  void edge(std::size_t from, std::size_t to, std::int64_t capacity) {
    out_[from].push_back(edges_.size());
    edges_.push_back({to, capacity});
    out_[to].push_back(edges_.size());
    edges_.push_back({from, 0});
  }

  void run(std::size_t source, std::size_t sink) {
    for (;;) {
      std::vector<std::size_t> via(out_.size(), kNone);  // the edge that reached each node
      std::vector<std::size_t> queue{source};
      for (std::size_t q = 0; q < queue.size() && via[sink] == kNone; ++q)
        for (std::size_t e : out_[queue[q]]) {
          std::size_t to = edges_[e].to;
          if (edges_[e].capacity > 0 && via[to] == kNone && to != source) {
            via[to] = e;
            queue.push_back(to);
          }
        }
      if (via[sink] == kNone) return;
      std::int64_t push = kInfinite;
      for (std::size_t v = sink; v != source; v = edges_[via[v] ^ 1].to)
        push = std::min(push, edges_[via[v]].capacity);
      for (std::size_t v = sink; v != source; v = edges_[via[v] ^ 1].to) {
        edges_[via[v]].capacity -= push;
        edges_[via[v] ^ 1].capacity += push;
      }
    }
  }

  // The nodes reachable from `source` through edges with capacity left: the source side of the
  // minimum cut closest to the source.
  std::vector<bool> source_side(std::size_t source) const {
    std::vector<bool> seen(out_.size(), false);
    std::vector<std::size_t> queue{source};
    seen[source] = true;
    for (std::size_t q = 0; q < queue.size(); ++q)
      for (std::size_t e : out_[queue[q]])
        if (edges_[e].capacity > 0 && !seen[edges_[e].to]) {
          seen[edges_[e].to] = true;
          queue.push_back(edges_[e].to);
        }
    return seen;
  }

 private:
  static constexpr std::size_t kNone = static_cast<std::size_t>(-1);
  struct Edge {
    std::size_t to;
    std::int64_t capacity;
  };
  std::vector<std::vector<std::size_t>> out_;
  std::vector<Edge> edges_;
};

}  // namespace

bool must_save(const Node& n, bool active) {
  return op_info(n.op).op_class == OpClass::Contraction && n.shape.is_batched() && active;
}

// The cheapest set of forward values to save (bytes per batch row) such that every value the
// backward reads (`needed`) can be recomputed from step inputs and saves, contractions never
// being recomputed: a minimum vertex cut between the contractions and the needed values. Each
// value is split into in -> out with its cost as capacity; a contraction's `in` hangs off the
// source (it cannot come from its operands), a needed value's `out` feeds the sink; leaves
// (inputs, states at t, parameters) and constants are free and take no part. Among cuts of equal
// bytes, contraction outputs and then fewer values are preferred.
std::vector<bool> min_bytes_saves(const Cell& f, const std::vector<bool>& active,
                                  const std::vector<bool>& needed) {
  const Graph& g = f.graph;
  const std::size_t n = g.size(), source = 2 * n, sink = 2 * n + 1;
  auto in = [](std::size_t i) { return 2 * i; };
  auto out = [](std::size_t i) { return 2 * i + 1; };
  MaxFlow flow(2 * n + 2);
  const auto bytes = static_cast<std::int64_t>(dtype_size(g.dtype()));
  for (std::size_t i = 0; i < n; ++i) {
    const Node& node = g.nodes()[i];
    if (is_leaf(node.op) || !active[i]) continue;
    const bool batched = node.shape.is_batched();
    const bool contraction = must_save(node, active[i]);
    flow.edge(in(i), out(i),
              batched ? node.shape.features() * bytes * 1024 + (contraction ? 0 : 1)
                      : MaxFlow::kInfinite);
    if (contraction) flow.edge(source, in(i), MaxFlow::kInfinite);
    for (ValueId operand : node.inputs)
      if (!is_leaf(g.node(operand).op) && active[operand.index])
        flow.edge(out(operand.index), in(i), MaxFlow::kInfinite);
    if (needed[i]) flow.edge(out(i), sink, MaxFlow::kInfinite);
  }
  flow.run(source, sink);
  std::vector<bool> side = flow.source_side(source);
  std::vector<bool> saves(n, false);
  for (std::size_t i = 0; i < n; ++i) saves[i] = side[in(i)] && !side[out(i)];
  return saves;
}

}  // namespace cellfuse::autodiff_detail
