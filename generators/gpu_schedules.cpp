#include "gpu_schedules.h"

namespace bnforge_gen {

void schedule_channels_gpu(Func f, const Var& c) {
    Var co("co"), ci("ci");
    f.compute_root().gpu_tile(c, co, ci, kGpuWarp, TailStrategy::GuardWithIf);
    for (int u = 0; u < f.num_update_definitions(); u++) {
        f.update(u).gpu_tile(c, co, ci, kGpuWarp, TailStrategy::GuardWithIf);
    }
}

void schedule_channel_outputs_gpu(const std::vector<Func>& outputs, const Var& c) {
    Var co("co"), ci("ci");
    for (size_t i = 0; i < outputs.size(); i++) {
        Func f = outputs[i];
        f.gpu_tile(c, co, ci, kGpuWarp, TailStrategy::GuardWithIf);
        if (i > 0) f.compute_with(outputs[0], ci);
    }
}

void schedule_channel_rows_gpu(Func f, const Var& c, const Var& row) {
    Var co("co"), ci("ci");
    f.compute_root().reorder(row, c).unroll(row).gpu_tile(c, co, ci, kGpuWarp, TailStrategy::GuardWithIf);
}

void schedule_scalar_gpu(Func f) {
    f.compute_root().gpu_single_thread();
    for (int u = 0; u < f.num_update_definitions(); u++) f.update(u).gpu_single_thread();
}

void schedule_channel_sums_gpu(ChannelSums& cs, Layout layout) {
    auto schedule = [&](Func& f, const RVar& r) {
        f.compute_root();
        if (layout == Layout::NCHW) {
            RVar ro("ro"), ri("ri");
            Var u("u"), kc("kc");
            f.update().split(r, ro, ri, kGpuWarp, TailStrategy::GuardWithIf);
            Func lanes = f.update().rfactor(ri, u);
            f.fuse(cs.k, cs.c, kc).gpu_blocks(kc, cs.g);
            f.update().fuse(cs.k, cs.c, kc).gpu_blocks(kc, cs.g);
            lanes.compute_at(f, kc).gpu_threads(u);
            lanes.update().gpu_threads(u);
        } else {
            Var co("co"), ci("ci");
            f.gpu_tile(cs.c, co, ci, kGpuWarp, TailStrategy::GuardWithIf);
            f.update().split(cs.c, co, ci, kGpuWarp, TailStrategy::GuardWithIf).reorder(ci, co, cs.k, cs.g);
            f.update().gpu_blocks(co, cs.k, cs.g).gpu_threads(ci);
        }
    };
    schedule(cs.full, cs.r_full);
    schedule(cs.tail, cs.r_tail);
    schedule_channels_gpu(cs.total, cs.c);
}

Var schedule_elementwise_gpu(Func f, const Var& d0, const Var& d1, const Var& n, bool mask_rows) {
    Var row("row"), t("t"), blk("blk"), thr("thr"), rest("rest"), u("u");
    if (mask_rows) {
        Var m("m"), ni("ni");
        f.split(n, m, ni, kMaskRows, TailStrategy::GuardWithIf)
            .fuse(d0, d1, row)
            .fuse(row, m, t)
            .reorder(ni, t)
            .unroll(ni)
            .gpu_tile(t, blk, thr, kGpuElementThreads, TailStrategy::GuardWithIf);
        return thr;
    }
    const int per_thread = 4;
    f.fuse(d0, d1, row)
        .fuse(row, n, t)
        .split(t, blk, rest, kGpuElementThreads * per_thread, TailStrategy::GuardWithIf)
        .split(rest, u, thr, kGpuElementThreads)
        .reorder(u, thr, blk)
        .unroll(u)
        .gpu_blocks(blk)
        .gpu_threads(thr);
    return thr;
}

void schedule_mask_gpu(Func mask, Func main, const Var& d0, const Var& d1, const Var& m, const Var& at) {
    Var row("row"), t("t"), blk("blk"), thr("thr");
    mask.fuse(d0, d1, row).fuse(row, m, t).gpu_tile(t, blk, thr, kGpuElementThreads, TailStrategy::GuardWithIf);
    mask.compute_with(main, at);
}

}  // namespace bnforge_gen
