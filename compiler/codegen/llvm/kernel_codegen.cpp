#include "compiler/codegen/llvm/kernel_codegen.h"

#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/Intrinsics.h>
#include <llvm/IR/Module.h>

#include <algorithm>
#include <functional>
#include <map>
#include <utility>

#include "compiler/codegen/llvm/host_target.h"
#include "compiler/codegen/llvm/vector_math.h"
#include "compiler/ir/composite_ops.h"
#include "compiler/ir/error.h"

namespace cellfuse::llvm_codegen {
namespace {

using llvm::Value;

class KernelEmitter {
 public:
  KernelEmitter(llvm::Module& module, const kernel::Kernel& k)
      : module_(module), k_(k), ctx_(module.getContext()), b_(ctx_) {
    elem_ = k.dtype == DType::f32 ? llvm::Type::getFloatTy(ctx_) : llvm::Type::getDoubleTy(ctx_);
    lanes_ = host_target().lanes(static_cast<int>(dtype_size(k.dtype)));
    vec_ = llvm::FixedVectorType::get(elem_, static_cast<unsigned>(lanes_));
    i64_ = llvm::Type::getInt64Ty(ctx_);
  }

  void run() {
    auto* ptr = llvm::Type::getInt8PtrTy(ctx_);
    auto* barrier_type = llvm::FunctionType::get(llvm::Type::getVoidTy(ctx_), {ptr}, false);
    auto* fn_type = llvm::FunctionType::get(
        llvm::Type::getVoidTy(ctx_),
        {llvm::PointerType::getUnqual(ptr), i64_, i64_, i64_, i64_, llvm::PointerType::getUnqual(barrier_type), ptr},
        false);
    fn_ = llvm::Function::Create(fn_type, llvm::Function::ExternalLinkage, k_.name, module_);
    fn_->addFnAttr(llvm::Attribute::NoUnwind);
    fn_->addFnAttr("target-cpu", host_target().cpu);
    fn_->addFnAttr("target-features", host_target().features);
    auto args = fn_->arg_begin();
    Value* buffers = &*args++;
    row_begin_ = &*args++;
    row_end_ = &*args++;
    part_ = &*args++;
    parts_ = &*args++;
    Value* barrier = &*args++;
    Value* barrier_context = &*args++;
    b_.SetInsertPoint(llvm::BasicBlock::Create(ctx_, "entry", fn_));
    for (std::size_t i = 0; i < k_.buffers.size(); ++i) {
      Value* slot = b_.CreateConstInBoundsGEP1_64(ptr, buffers, i);
      Value* raw = b_.CreateLoad(ptr, slot);
      bases_.push_back(b_.CreatePointerCast(raw, llvm::PointerType::getUnqual(elem_)));
    }
    last_part_ = b_.CreateICmpEQ(part_, b_.CreateSub(parts_, b_.getInt64(1)));
    for (std::size_t i = 0; i < k_.body.size(); ++i) {
      const auto& s = k_.body[i];
      if (s.kind == kernel::Statement::Kind::Loop) emit_loop(s.loop);
      else emit_matvec(s.matvec);
      if (i + 1 < k_.body.size())
        when(b_.CreateICmpSGT(parts_, b_.getInt64(1)),
             [&] { b_.CreateCall(barrier_type, barrier, {barrier_context}); });
    }
    b_.CreateRetVoid();
  }

 private:
  // A counted loop `for (i = begin; i < end; i += step)` whose body may carry values from one
  // iteration to the next; returns the carried values after the loop.
  std::vector<Value*> emit_for(Value* begin, Value* end, std::int64_t step, std::vector<Value*> init,
                               const std::function<std::vector<Value*>(Value*, const std::vector<Value*>&)>& body) {
    llvm::BasicBlock* pre = b_.GetInsertBlock();
    auto* header = llvm::BasicBlock::Create(ctx_, "loop", fn_);
    auto* inner = llvm::BasicBlock::Create(ctx_, "body", fn_);
    auto* exit = llvm::BasicBlock::Create(ctx_, "exit", fn_);
    b_.CreateBr(header);
    b_.SetInsertPoint(header);
    llvm::PHINode* i = b_.CreatePHI(i64_, 2);
    i->addIncoming(begin, pre);
    std::vector<llvm::PHINode*> phis;
    std::vector<Value*> carried;
    for (Value* v : init) {
      llvm::PHINode* p = b_.CreatePHI(v->getType(), 2);
      p->addIncoming(v, pre);
      phis.push_back(p);
      carried.push_back(p);
    }
    // i + step <= end, written so that it cannot overflow.
    Value* more = b_.CreateICmpSLE(i, b_.CreateSub(end, b_.getInt64(step)));
    b_.CreateCondBr(more, inner, exit);
    b_.SetInsertPoint(inner);
    std::vector<Value*> next = body(i, carried);
    Value* i_next = b_.CreateAdd(i, b_.getInt64(step));
    llvm::BasicBlock* latch = b_.GetInsertBlock();
    b_.CreateBr(header);
    i->addIncoming(i_next, latch);
    for (std::size_t p = 0; p < phis.size(); ++p) phis[p]->addIncoming(next[p], latch);
    b_.SetInsertPoint(exit);
    // The loop's final index is the header's phi, which the caller can continue from.
    last_index_ = i;
    return carried;
  }

  // if (cond) body();
  void when(Value* cond, const std::function<void()>& body) {
    auto* then = llvm::BasicBlock::Create(ctx_, "then", fn_);
    auto* done = llvm::BasicBlock::Create(ctx_, "done", fn_);
    b_.CreateCondBr(cond, then, done);
    b_.SetInsertPoint(then);
    body();
    b_.CreateBr(done);
    b_.SetInsertPoint(done);
  }

  // This part's share [first, last) of `count` units, in the same order for every part count.
  std::pair<Value*, Value*> share(Value* count) {
    Value* first = b_.CreateSDiv(b_.CreateMul(count, part_), parts_);
    Value* last = b_.CreateSDiv(b_.CreateMul(count, b_.CreateAdd(part_, b_.getInt64(1))), parts_);
    return {first, last};
  }

  // Pointer to element (row, col) of buffer b; `row` is a batch row (ignored when unbatched).
  Value* element_ptr(int b, Value* row, Value* col) {
    const kernel::Buffer& buf = k_.buffers[b];
    Value* index = col;
    if (buf.batched) {
      Value* r = buf.role == kernel::BufferRole::Scratch ? b_.CreateSub(row, row_begin_) : row;
      index = b_.CreateAdd(b_.CreateMul(r, b_.getInt64(buf.cols)), col);
    }
    return b_.CreateInBoundsGEP(elem_, bases_[b], index);
  }

  Value* load(llvm::Type* type, Value* ptr) {
    auto* cast = b_.CreatePointerCast(ptr, llvm::PointerType::getUnqual(type));
    return b_.CreateAlignedLoad(type, cast, llvm::Align(dtype_size(k_.dtype)));
  }
  void store(Value* value, Value* ptr) {
    auto* cast = b_.CreatePointerCast(ptr, llvm::PointerType::getUnqual(value->getType()));
    b_.CreateAlignedStore(value, cast, llvm::Align(dtype_size(k_.dtype)));
  }

  Value* splat(llvm::Type* type, Value* scalar) {
    if (type == elem_) return scalar;
    return b_.CreateVectorSplat(static_cast<unsigned>(lanes_), scalar);
  }
  Value* constant(llvm::Type* type, double v) { return llvm::ConstantFP::get(type, v); }

  Value* intrinsic(llvm::Intrinsic::ID id, std::vector<Value*> args) {
    llvm::Function* f = llvm::Intrinsic::getDeclaration(&module_, id, {args[0]->getType()});
    return b_.CreateCall(f, args);
  }

  // The scalar semantics are compiler/ir/pointwise_math.h's (ops.def's math column), NaN handling
  // included; a composite op (composite_ops.h) is its formula over these.
  Value* compute(OpKind op, const std::vector<Value*>& a) {
    llvm::Type* t = a[0]->getType();
    auto is_nan = [&](Value* x) { return b_.CreateFCmpUNO(x, x); };
    auto as_float = [&](Value* cond) { return b_.CreateSelect(cond, constant(t, 1), constant(t, 0)); };
    switch (op) {
      case OpKind::neg: return b_.CreateFNeg(a[0]);
      case OpKind::abs: return intrinsic(llvm::Intrinsic::fabs, {a[0]});
      case OpKind::sigmoid: return emit_sigmoid(b_, a[0]);
      case OpKind::tanh: return emit_tanh(b_, a[0]);
      case OpKind::relu: return b_.CreateSelect(b_.CreateFCmpOLT(a[0], constant(t, 0)), constant(t, 0), a[0]);
      case OpKind::exp: return emit_exp(b_, a[0]);
      case OpKind::log: return emit_log(b_, a[0]);
      case OpKind::log1p: return emit_log1p(b_, a[0]);
      case OpKind::expm1: return emit_expm1(b_, a[0]);
      case OpKind::sqrt: return intrinsic(llvm::Intrinsic::sqrt, {a[0]});
      case OpKind::rsqrt: return b_.CreateFDiv(constant(t, 1), intrinsic(llvm::Intrinsic::sqrt, {a[0]}));
      case OpKind::softplus: return emit_softplus(b_, a[0]);
      case OpKind::erf: return emit_erf(b_, a[0]);
      case OpKind::add: return b_.CreateFAdd(a[0], a[1]);
      case OpKind::sub: return b_.CreateFSub(a[0], a[1]);
      case OpKind::mul: return b_.CreateFMul(a[0], a[1]);
      case OpKind::div: return b_.CreateFDiv(a[0], a[1]);
      case OpKind::min:
      case OpKind::max: {
        // std::min(a, b) = b < a ? b : a; std::max(a, b) = a < b ? b : a; NaN wins.
        Value* pick_b = op == OpKind::min ? b_.CreateFCmpOLT(a[1], a[0]) : b_.CreateFCmpOLT(a[0], a[1]);
        Value* v = b_.CreateSelect(pick_b, a[1], a[0]);
        v = b_.CreateSelect(is_nan(a[1]), a[1], v);
        return b_.CreateSelect(is_nan(a[0]), a[0], v);
      }
      case OpKind::gt: return as_float(b_.CreateFCmpOGT(a[0], a[1]));
      case OpKind::ge: return as_float(b_.CreateFCmpOGE(a[0], a[1]));
      case OpKind::lt: return as_float(b_.CreateFCmpOLT(a[0], a[1]));
      case OpKind::le: return as_float(b_.CreateFCmpOLE(a[0], a[1]));
      case OpKind::where: return b_.CreateSelect(b_.CreateFCmpUNE(a[0], constant(t, 0)), a[1], a[2]);
      default: {
        if (!is_composite(op) || a.size() != 1) throw InternalError("no LLVM lowering for " + std::string(op_name(op)));
        LlvmDomain d{*this};
        return composite_value(d, op, a[0]);
      }
    }
  }

  // LLVM values as a domain of composite_ops.h: a composite op is emitted as its formula.
  struct LlvmDomain {
    using Value = llvm::Value*;
    KernelEmitter& e;
    Value op(OpKind k, Value a) { return e.compute(k, {a}); }
    Value op(OpKind k, Value a, Value b) { return e.compute(k, {a, b}); }
    Value constant(double value, Value like) { return e.constant(like->getType(), value); }
  };

  // One iteration of a loop's body at column j, `type` wide (the vector or the scalar type).
  // Returns the value of every instruction.
  std::vector<Value*> emit_body(const kernel::Loop& loop, llvm::Type* type, Value* row, Value* j,
                                const std::vector<Value*>& uniforms) {
    std::vector<Value*> v(loop.insts.size(), nullptr);
    for (std::size_t i = 0; i < loop.insts.size(); ++i) {
      const kernel::Inst& in = loop.insts[i];
      switch (in.kind) {
        case kernel::Inst::Kind::Load:
          if (in.uniform) v[i] = splat(type, uniforms[i]);
          else v[i] = load(type, element_ptr(in.buffer, row, b_.CreateAdd(j, b_.getInt64(in.offset))));
          break;
        case kernel::Inst::Kind::Const: v[i] = constant(type, in.value); break;
        case kernel::Inst::Kind::Compute: {
          std::vector<Value*> args;
          for (int a : in.args) args.push_back(v[a]);
          v[i] = compute(in.op, args);
          break;
        }
      }
    }
    for (const auto& s : loop.stores)
      store(v[s.value], element_ptr(s.buffer, row, b_.CreateAdd(j, b_.getInt64(s.offset))));
    return v;
  }

  void emit_loop(const kernel::Loop& loop) {
    const bool reduces = !loop.reductions.empty();
    const std::int64_t vectors = loop.extent / lanes_;
    // A loop with reductions needs every column in one place: part 0 runs it whole. Other loops
    // split their whole vectors among the parts; the last part also takes the scalar tail.
    Value* run_it = reduces ? b_.CreateICmpEQ(part_, b_.getInt64(0)) : b_.getTrue();
    auto [first, last] = share(b_.getInt64(vectors));
    Value* j_begin = reduces ? b_.getInt64(0) : b_.CreateMul(first, b_.getInt64(lanes_));
    Value* j_end = reduces ? b_.getInt64(vectors * lanes_) : b_.CreateMul(last, b_.getInt64(lanes_));
    Value* takes_tail = reduces ? b_.getTrue() : last_part_;
    when(run_it, [&] {
      emit_for(row_begin_, row_end_, 1, {}, [&](Value* row, const std::vector<Value*>&) {
        // Per-row scalars (uniform loads) are read once, before the element loop.
        std::vector<Value*> uniforms(loop.insts.size(), nullptr);
        for (std::size_t i = 0; i < loop.insts.size(); ++i)
          if (loop.insts[i].kind == kernel::Inst::Kind::Load && loop.insts[i].uniform)
            uniforms[i] = load(elem_, element_ptr(loop.insts[i].buffer, row, b_.getInt64(loop.insts[i].offset)));
        const std::size_t nred = loop.reductions.size();
        auto accumulate = [&](llvm::Type* type, Value* j, const std::vector<Value*>& carried) {
          auto v = emit_body(loop, type, row, j, uniforms);
          std::vector<Value*> next;
          for (std::size_t r = 0; r < nred; ++r)
            next.push_back(compute(loop.reductions[r].combine, {carried[r], v[loop.reductions[r].value]}));
          return next;
        };
        std::vector<Value*> init;
        for (const auto& red : loop.reductions) init.push_back(constant(vec_, kernel::reduction_identity(red.combine)));
        std::vector<Value*> acc = emit_for(j_begin, j_end, lanes_, init,
                                           [&](Value* j, const std::vector<Value*>& c) { return accumulate(vec_, j, c); });
        std::vector<Value*> sums;
        for (std::size_t r = 0; r < nred; ++r) sums.push_back(horizontal(loop.reductions[r].combine, acc[r]));
        Value* tail_begin = b_.CreateSelect(takes_tail, b_.getInt64(vectors * lanes_), b_.getInt64(loop.extent));
        sums = emit_for(tail_begin, b_.getInt64(loop.extent), 1, sums,
                        [&](Value* j, const std::vector<Value*>& c) { return accumulate(elem_, j, c); });
        for (std::size_t r = 0; r < nred; ++r) {
          const auto& red = loop.reductions[r];
          if (red.combine == OpKind::add)
            store(b_.CreateFMul(sums[r], constant(elem_, red.scale)), element_ptr(red.buffer, row, b_.getInt64(red.column)));
          else
            store(sums[r], element_ptr(red.buffer, row, b_.getInt64(red.column)));
        }
        return std::vector<Value*>{};
      });
    });
  }

  // Lanes combined (added, or the maximum taken) one after another in a fixed order: the same
  // result on every run.
  Value* horizontal(OpKind combine, Value* v) {
    Value* sum = b_.CreateExtractElement(v, std::uint64_t{0});
    for (int l = 1; l < lanes_; ++l)
      sum = compute(combine, {sum, b_.CreateExtractElement(v, static_cast<std::uint64_t>(l))});
    return sum;
  }

  // Accumulators for `rows` rows x `count` column groups of `width` (lanes or 1), over k;
  // bias or zero first, then acc = x[r,k] * W[k,n] + acc in order of k: every element of the
  // product is the same chain of fused multiply-adds whichever way the work is split.
  void emit_product_tile(const kernel::MatVec& m, Value* first_row, int rows, Value* n0, llvm::Type* type, int count) {
    const std::int64_t width = type == elem_ ? 1 : lanes_;
    std::vector<Value*> acc;
    for (int r = 0; r < rows; ++r) {
      Value* row = b_.CreateAdd(first_row, b_.getInt64(r));
      for (int u = 0; u < count; ++u) {
        Value* col = b_.CreateAdd(n0, b_.getInt64(u * width));
        acc.push_back(m.bias >= 0 ? load(type, element_ptr(m.bias, row, col)) : constant(type, 0));
      }
    }
    // Where the tile's columns start at k = 0 and how far apart consecutive k are, computed once
    // per tile: in the loop the weight is one pointer stepping by a constant-per-tile stride
    // (computed per k, the layout's division and select cost three scalar instructions per
    // vector of the product at batch 1, where the loop streams W_hh from L2).
    // (Named, not a structured binding: clang 14, the fuzz build's compiler, cannot capture one.)
    const std::pair<Value*, Value*> layout = weight_layout(m, n0);
    Value* const tile_base = layout.first;
    Value* const k_stride = layout.second;
    acc = emit_for(b_.getInt64(0), b_.getInt64(m.k), 1, acc, [&](Value* kk, const std::vector<Value*>& a) {
      Value* wbase = b_.CreateAdd(tile_base, b_.CreateMul(kk, k_stride));
      std::vector<Value*> w;
      for (int u = 0; u < count; ++u)
        w.push_back(load(type, b_.CreateInBoundsGEP(elem_, bases_[m.weight], b_.CreateAdd(wbase, b_.getInt64(u * width)))));
      std::vector<Value*> next;
      for (int r = 0; r < rows; ++r) {
        Value* row = b_.CreateAdd(first_row, b_.getInt64(r));
        Value* x = load(elem_, element_ptr(m.x, row, b_.CreateAdd(kk, b_.getInt64(m.x_offset))));
        Value* xs = splat(type, x);
        for (int u = 0; u < count; ++u)
          next.push_back(intrinsic(llvm::Intrinsic::fmuladd, {xs, w[u], a[r * count + u]}));
      }
      return next;
    });
    for (int r = 0; r < rows; ++r) {
      Value* row = b_.CreateAdd(first_row, b_.getInt64(r));
      for (int u = 0; u < count; ++u)
        store(acc[r * count + u], element_ptr(m.out, row, b_.CreateAdd(n0, b_.getInt64(m.out_offset + u * width))));
    }
  }

  // Index of weight element (0, n0) in its layout (see kernel::Buffer::panel), and the distance
  // from element (k, n0) to (k + 1, n0). Tiles start on panel boundaries, so a tile's columns
  // are consecutive inside one panel.
  std::pair<Value*, Value*> weight_layout(const kernel::MatVec& m, Value* n0) {
    const std::int64_t panel = k_.buffers[m.weight].panel;
    if (panel <= 0) return {n0, b_.getInt64(m.n)};
    const std::int64_t packed = m.n / panel * panel, rest = m.n - packed;
    Value* in_panels = b_.CreateICmpSLT(n0, b_.getInt64(packed));
    // In the panels: n0 = p*panel + c  ->  p*k*panel + c, then panel per k.
    Value* c = b_.CreateSRem(n0, b_.getInt64(panel));
    Value* p = b_.CreateSDiv(n0, b_.getInt64(panel));
    Value* panel_base = b_.CreateAdd(b_.CreateMul(p, b_.getInt64(m.k * panel)), c);
    // After them: one [k, rest] block.
    Value* rest_base = b_.CreateAdd(b_.getInt64(packed * m.k), b_.CreateSub(n0, b_.getInt64(packed)));
    return {b_.CreateSelect(in_panels, panel_base, rest_base),
            b_.CreateSelect(in_panels, b_.getInt64(panel), b_.getInt64(rest))};
  }

  // The columns of a product, `rows` rows at a time from `first_row`: whole tiles of `unroll`
  // vectors split among the parts, then single vectors and single columns in the last part.
  void emit_product_columns(const kernel::MatVec& m, Value* first_row, int rows) {
    const std::int64_t panel = k_.buffers[m.weight].panel;
    const int unroll = panel > 0 ? static_cast<int>(panel / lanes_) : product_unroll(rows);
    const std::int64_t tile = unroll * lanes_, tiles = m.n / tile;
    auto [first, last] = share(b_.getInt64(tiles));
    emit_for(b_.CreateMul(first, b_.getInt64(tile)), b_.CreateMul(last, b_.getInt64(tile)), tile, {},
             [&](Value* n0, const std::vector<Value*>&) {
               emit_product_tile(m, first_row, rows, n0, vec_, unroll);
               return std::vector<Value*>{};
             });
    when(last_part_, [&] {
      emit_for(b_.getInt64(tiles * tile), b_.getInt64(m.n), lanes_, {}, [&](Value* n0, const std::vector<Value*>&) {
        emit_product_tile(m, first_row, rows, n0, vec_, 1);
        return std::vector<Value*>{};
      });
      emit_for(last_index_, b_.getInt64(m.n), 1, {}, [&](Value* n0, const std::vector<Value*>&) {
        emit_product_tile(m, first_row, rows, n0, elem_, 1);
        return std::vector<Value*>{};
      });
    });
  }

  void emit_matvec(const kernel::MatVec& m) {
    const int hint = static_cast<int>(k_.rows_hint);
    auto by_row = [&] {
      emit_for(row_begin_, row_end_, 1, {}, [&](Value* row, const std::vector<Value*>&) {
        emit_product_columns(m, row, 1);
        return std::vector<Value*>{};
      });
    };
    if (hint < 2 || hint > 8) {
      by_row();
      return;
    }
    // All rows at once: each weight vector is loaded once for every row.
    Value* exact = b_.CreateICmpEQ(b_.CreateSub(row_end_, row_begin_), b_.getInt64(hint));
    auto* blocked = llvm::BasicBlock::Create(ctx_, "blocked", fn_);
    auto* generic = llvm::BasicBlock::Create(ctx_, "by_row", fn_);
    auto* done = llvm::BasicBlock::Create(ctx_, "product_done", fn_);
    b_.CreateCondBr(exact, blocked, generic);
    b_.SetInsertPoint(blocked);
    emit_product_columns(m, row_begin_, hint);
    b_.CreateBr(done);
    b_.SetInsertPoint(generic);
    by_row();
    b_.CreateBr(done);
    b_.SetInsertPoint(done);
  }

  llvm::Module& module_;
  const kernel::Kernel& k_;
  llvm::LLVMContext& ctx_;
  llvm::IRBuilder<> b_;
  llvm::Type* elem_;
  llvm::FixedVectorType* vec_;
  llvm::IntegerType* i64_;
  int lanes_;
  llvm::Function* fn_ = nullptr;
  Value* row_begin_ = nullptr;
  Value* row_end_ = nullptr;
  Value* part_ = nullptr;
  Value* parts_ = nullptr;
  Value* last_part_ = nullptr;
  Value* last_index_ = nullptr;
  std::vector<Value*> bases_;
};

}  // namespace

int product_unroll(std::int64_t rows) {
  return static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(4, 24 / std::max<std::int64_t>(rows, 1))));
}

void emit_kernel(llvm::Module& module, const kernel::Kernel& kernel) {
  kernel::verify_kernel(kernel);
  KernelEmitter(module, kernel).run();
}

}  // namespace cellfuse::llvm_codegen
