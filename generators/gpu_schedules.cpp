#include "gpu_schedules.h"

#include <functional>

namespace bnforge_gen {

namespace {

// Every stage of `f` scheduled by `per_stage`.
void each_stage(Func f, const std::function<void(Stage)>& per_stage) {
    per_stage(Stage(f));
    for (int u = 0; u < f.num_update_definitions(); u++) per_stage(f.update(u));
}

}  // namespace

void schedule_channels_gpu(Func f, const Var& c) {
    Var co("co"), ci("ci");
    f.compute_root();
    each_stage(f, [&](Stage stage) { stage.gpu_tile(c, co, ci, kGpuWarp, TailStrategy::GuardWithIf); });
}

void schedule_channel_outputs_gpu(const std::vector<Func>& outputs, const Var& c) {
    Var co("co"), ci("ci");
    for (size_t i = 0; i < outputs.size(); i++) {
        Func f = outputs[i];
        f.gpu_tile(c, co, ci, kGpuWarp, TailStrategy::GuardWithIf);
        if (i > 0) f.compute_with(outputs[0], ci);
    }
}

void schedule_channel_rows_gpu(Func f, const Var& c, const Var& row, Func per_thread) {
    Var co("co"), ci("ci");
    f.compute_root().reorder(row, c).unroll(row).gpu_tile(c, co, ci, kGpuWarp, TailStrategy::GuardWithIf);
    if (per_thread.defined()) per_thread.compute_at(f, ci);
}

void schedule_scalar_gpu(Func f) {
    f.compute_root();
    each_stage(f, [](Stage stage) { stage.gpu_single_thread(); });
}

void schedule_channel_sums_gpu(ChannelSums& cs, Layout layout, Func rows_out, const Var& c, const Var& row) {
    auto schedule = [&](Func& f, const RVar& r, const std::optional<RVar>& rows) {
        f.compute_root();
        if (layout == Layout::NCHW) {
            // kGpuReduceLanes threads share a chunk: a group's rows and the
            // positions along them as one index (rows of 7x7 give a warp two
            // and a half rows), a few values per thread, then one thread adds
            // the lanes' partials.
            RVar along = r, ro("ro"), ri("ri");
            if (rows) {
                along = RVar("rf");
                f.update().fuse(r, *rows, along);
            }
            Var u("u"), kc("kc");
            f.update().split(along, ro, ri, kGpuReduceLanes, TailStrategy::GuardWithIf);
            Func lanes = f.update().rfactor(ri, u);
            f.fuse(cs.k, cs.c, kc).gpu_blocks(kc, cs.g);
            f.update().fuse(cs.k, cs.c, kc).gpu_blocks(kc, cs.g);
            lanes.compute_at(f, kc).gpu_threads(u);
            lanes.update().gpu_threads(u);
        } else {
            // Both definitions over the whole (c, k, g) grid: one launch each
            // (tiling c alone left k and g as host loops, a launch per point).
            Var co("co"), ci("ci");
            for (Stage stage : {Stage(f), f.update()}) {
                stage.split(cs.c, co, ci, kGpuWarp, TailStrategy::GuardWithIf)
                    .reorder(ci, co, cs.k, cs.g)
                    .gpu_blocks(co, cs.k, cs.g)
                    .gpu_threads(ci);
            }
        }
    };
    schedule(cs.full, cs.r_full, cs.rows_full);
    schedule(cs.tail, cs.r_tail, cs.rows_tail);
    schedule_channel_rows_gpu(rows_out, c, row, cs.total);
}

Var schedule_elementwise_gpu(Func f, const Var& d0, const Var& d1, const Var& n) {
    Var d0o("d0o"), d0i("d0i"), d1o("d1o"), d1i("d1i"), no("no"), ni("ni"), b("b");
    f.split(d0, d0o, d0i, kGpuWarp, TailStrategy::GuardWithIf)
        .split(d1, d1o, d1i, kGpuElementThreads / kGpuWarp, TailStrategy::GuardWithIf)
        .split(n, no, ni, kMaskRows, TailStrategy::GuardWithIf)
        .reorder(ni, d0i, d1i, d0o, d1o, no)
        .unroll(ni)
        .fuse(d0o, d1o, b)
        .fuse(b, no, b)
        .gpu_blocks(b)
        .gpu_threads(d0i, d1i);
    return d0i;
}

namespace {

// A mask's bits (see mask_bits) inside the thread loop `thread` of the mask:
// each thread its own byte, the rows unrolled.
void compute_mask_bits_gpu(const MaskBits& b, Func mask, const Var& thread) {
    Func bits = b.func;
    bits.compute_at(mask, thread).update().unroll(b.k);
}

}  // namespace

void schedule_mask_gpu(Func mask, const MaskBits& bits, Func main, const Var& d0, const Var& d1, const Var& m,
                       const Var& at) {
    Var d0o("d0o"), d0i("d0i"), d1o("d1o"), d1i("d1i"), b("b");
    mask.split(d0, d0o, d0i, kGpuWarp, TailStrategy::GuardWithIf)
        .split(d1, d1o, d1i, kGpuElementThreads / kGpuWarp, TailStrategy::GuardWithIf)
        .reorder(d0i, d1i, d0o, d1o, m)
        .fuse(d0o, d1o, b)
        .fuse(b, m, b)
        .gpu_blocks(b)
        .gpu_threads(d0i, d1i);
    mask.compute_with(main, at);
    compute_mask_bits_gpu(bits, mask, d0i);
}

OnePassGpu schedule_one_pass_gpu(Func f, Layout layout, const Var& d0, const Var& d1, const Var& n) {
    if (layout != Layout::NCHW) throw CompileError("GPU one-pass kernels are built for NCHW only (see gpu_schedules.h)");
    // A block per channel d1: a warp along the row, 8 warps over batch rows,
    // fused into one thread dimension, as every stage in the block: a stage
    // with fewer thread dimensions than another would run once per value of
    // the ones it lacks.
    Var d0o("d0o"), d0i("d0i"), no("no"), ni("ni"), t("t");
    f.split(d0, d0o, d0i, kGpuWarp, TailStrategy::GuardWithIf)
        .split(n, no, ni, kGpuElementThreads / kGpuWarp, TailStrategy::GuardWithIf)
        .reorder(d0o, no, d0i, ni, d1)
        .fuse(d0i, ni, t)
        .gpu_blocks(d1)
        .gpu_threads(t);
    return {f, d1, t};
}

void fuse_batch_output_one_pass_gpu(Func g, const OnePassGpu& b, const Var& d0, const Var& d1, const Var& n) {
    schedule_one_pass_gpu(g, Layout::NCHW, d0, d1, n);
    g.compute_with(b.main, b.block);
}

void fuse_mask_one_pass_gpu(Func mask, const MaskBits& bits, const OnePassGpu& b, const Var& d0, const Var& d1,
                            const Var& m) {
    fuse_batch_output_one_pass_gpu(mask, b, d0, d1, m);
    compute_mask_bits_gpu(bits, mask, b.thread);
}

void fuse_channel_rows_one_pass_gpu(Func rows_out, const OnePassGpu& b, const Var& c, const Var& row) {
    // Block-level code outside a thread loop: one thread writes the rows.
    rows_out.reorder(row, c).unroll(row).gpu_blocks(c).compute_with(b.main, b.block);
}

namespace {

// `f` in the block's shared memory. Halide 21 packs a block's shared
// allocations into one buffer sized from their exact bytes, but places each
// at a multiple of the widest element (the float64 sums) and converts a
// shared group's size with a floor (FuseGPUThreadLoops.cpp): an odd count of
// floats ran past the buffer's end (oclgrind: bench/analysis.md). Narrower
// elements are therefore stored in whole 8-byte words.
void compute_in_block(Func f, const OnePassGpu& b) {
    f.compute_at(b.level());
    const int bytes = f.types()[0].bytes();
    if (bytes < 8) f.align_storage(f.args()[0], 8 / bytes);
}

}  // namespace

void schedule_per_channel_one_pass_gpu(Func f, const OnePassGpu& b) {
    // A thread loop of one thread: block-level code outside any thread loop
    // costs a barrier per statement, inside the stage's loops too.
    compute_in_block(f, b);
    const Var c = f.args()[0];
    Var co("co"), ci("ci");
    each_stage(f, [&](Stage stage) { stage.split(c, co, ci, 1).gpu_threads(ci); });
}

void schedule_channel_sums_one_pass_gpu(ChannelSums& cs, const OnePassGpu& b) {
    // As schedule_channel_sums_gpu: kGpuReduceLanes lanes share a chunk (the
    // same split, so the same partial sums), but every chunk of the channel in
    // one thread loop, each lane looping over the chunks; then a thread per
    // chunk adds that chunk's lanes. One barrier per stage, none in a loop.
    auto schedule = [&](Func& f, const RVar& r, const std::optional<RVar>& rows) {
        compute_in_block(f, b);
        RVar along = r, ro("ro"), ri("ri");
        if (rows) {
            along = RVar("rf");
            f.update().fuse(r, *rows, along);
        }
        Var u("u"), kg("kg"), kgo("kgo"), kgi("kgi");
        f.update().split(along, ro, ri, kGpuReduceLanes, TailStrategy::GuardWithIf);
        Func lanes = f.update().rfactor(ri, u);
        compute_in_block(lanes, b);
        lanes.reorder(cs.k, cs.c, cs.g, u).gpu_threads(u);
        lanes.update().reorder(ro, cs.k, cs.c, cs.g, u).gpu_threads(u);
        each_stage(f, [&](Stage stage) {
            stage.reorder(cs.k, cs.g, cs.c)
                .fuse(cs.k, cs.g, kg)
                .split(kg, kgo, kgi, kGpuElementThreads, TailStrategy::GuardWithIf)
                .gpu_threads(kgi);
        });
    };
    schedule(cs.full, cs.r_full, cs.rows_full);
    schedule(cs.tail, cs.r_tail, cs.rows_tail);
    schedule_per_channel_one_pass_gpu(cs.total, b);
}

}  // namespace bnforge_gen
