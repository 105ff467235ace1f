"""The state-independent part of a captured step: computations on parameters and constants.

Everything in the step's ATen graph that depends on neither the per-step input nor the states
(`W * 2`, `W / W.norm()`, a mask times a weight, `torch.cat` of weights, `v[0]` of a packed
parameter, a transpose) is kept as a small FX graph and run by PyTorch once per sequence, before
the cell's native code runs, on the module's current parameters: so it is hoisted out of the time
loop, sees training updates and load_state_dict, and PyTorch's autograd carries the gradients
that cellfuse computes for its results back to the parameters. Its results are the cell's
parameter leaves (contiguous, and shaped as the cell reads them: vectors [F] aligned with a
per-step value's features, matrices for products).
"""
from __future__ import annotations

import torch
import torch.fx


class Prelude:
    """Collects the prelude's results while a step is lowered, then compiles them into a
    GraphModule over the lifted module tensors."""

    def __init__(self, gm, lifted_placeholders, lifted_names):
        self.gm = gm
        self.lifted_placeholders = list(lifted_placeholders)
        self.lifted_names = list(lifted_names)
        self.results = []  # (node, transform or None)
        self._index = {}
        self.module = None

    def add(self, node, transform, key):
        """Index of the result `transform(value of node)`; `key` identifies the transform."""
        k = (node, key)
        if k not in self._index:
            self._index[k] = len(self.results)
            self.results.append((node, transform))
        return self._index[k]

    def lifted_name(self, node):
        """The module path of a lifted parameter or buffer placeholder (else None)."""
        for p, name in zip(self.lifted_placeholders, self.lifted_names):
            if p is node:
                return name
        return None

    def finish(self):
        graph = torch.fx.Graph()
        env = {}
        needed = set()
        stack = [node for node, _ in self.results]
        while stack:
            node = stack.pop()
            if node in needed:
                continue
            needed.add(node)
            stack.extend(node.all_input_nodes)
        for node in self.gm.graph.nodes:
            if node.op == "placeholder" and node in self.lifted_placeholders:
                env[node] = graph.placeholder(node.name)
            elif node in needed and node.op != "placeholder":
                env[node] = graph.node_copy(node, lambda n: env[n])
        graph.output(tuple(env[node] for node, _ in self.results))
        self.module = torch.fx.GraphModule(self.gm, graph)
        self.transforms = [t for _, t in self.results]

    def run(self, lifted, dtype=None):
        """The parameter tensors the cell reads, from the current lifted tensors (in order);
        boolean ones (masks) as `dtype`, the run's (float32 when None)."""
        values = self.module(*lifted) if self.results else ()
        out = []
        for v, t in zip(values, self.transforms):
            v = v if t is None else t(v)
            if v.dtype == torch.bool:
                v = v.to(torch.float32 if dtype is None else dtype)
            out.append(v if v.is_contiguous() else v.contiguous())
        return out
