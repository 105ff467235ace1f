#pragma once
// cellfuse's public C++ API, in one header:   #include <cellfuse/cellfuse.h>
//
//   CellBuilder, Val and the ops (frontend/builder.h)   write a cell
//   cells::lstm, gru, ... (frontend/cells.h)             the standard cells
//   print_cell, parse_cell, load_cell_file               the .cell text form
//   optimize                                             the graph passes
//   HostTensor, SequenceArgs, SequenceResult             data on the host
//   interpret_sequence, reference_bptt                   the reference interpreter (the oracle)
//   random_sequence_args                                 seeded random inputs and parameters
//   compile_cpu, compile_cpu_bptt                        the CPU backend (when built with LLVM)
//   Generator                                            native sampling of a language model (CPU)
//   compile_cuda, compile_cuda_bptt                      the CUDA backend (when built with CUDA)
//   Profiler                                             trace and overhead report of what runs
//   Error                                                what every bad input throws
//
// Each line includes the header that declares it: those headers (and what they include) are
// installed under include/cellfuse/ beside this one. CELLFUSE_HAVE_LLVM / CELLFUSE_HAVE_CUDA come
// with the cellfuse::cellfuse target, so the backends' headers are there only when built.
// docs/USER_GUIDE.md describes the API.

#include "compiler/ir/error.h"
#include "compiler/ir/graph.h"
#include "compiler/ir/text.h"
#include "compiler/lower.h"
#include "compiler/passes/autodiff.h"
#include "frontend/builder.h"
#include "frontend/cells.h"
#include "runtime/random_args.h"
#include "runtime/reference/bptt.h"
#include "runtime/reference/interpreter.h"
#include "runtime/profile/profiler.h"
#include "runtime/tensor.h"

#if CELLFUSE_HAVE_LLVM
#include "runtime/cpu/cpu_bptt.h"
#include "runtime/cpu/cpu_cell.h"
#include "runtime/generate/generator.h"
#endif

#if CELLFUSE_HAVE_CUDA
#include "runtime/cuda/cuda_bptt.h"
#include "runtime/cuda/cuda_cell.h"
#endif
