#include "cpu_schedules.h"

namespace bnforge_gen {

Expr units_per_task(const Expr& units, const Expr& unit_values, int value_bytes) {
    const Expr largest = (kTaskBytes / value_bytes) / unit_values, least = kMinTaskValues / unit_values;
    return max(1, min(largest, max(units / kMinTasks, least)));
}

namespace {

// Both entry points: `at` empty for root, where `channels` and `input_bytes`
// size the NCHW tasks.
void schedule_channel_sums(ChannelSums& cs, Layout layout, int vec, const std::optional<LoopLevel>& at,
                           const Expr& channels, int input_bytes) {
    const bool root = !at;
    const LoopLevel level = at ? *at : LoopLevel::root();
    if (layout == Layout::NCHW) {
        // Rows cut into whole vectors of cs.lanes, all in `full` (channel_sums.h).
        if (cs.lanes != 2 * vec || cs.tail.defined())
            throw InternalError("NCHW channel sums cut for " + std::to_string(cs.lanes) + " lanes, scheduled for " +
                                std::to_string(2 * vec));
        Func& f = cs.full;
        f.compute_at(level);
        Var u("u"), v("v");
        Func lanes = f.update().rfactor(cs.r_full, u);
        // A vector's room whatever the row length, so it lives on the stack.
        // The storage only: bound_extent would also compute the lanes past a
        // short row, reading past the tensor.
        lanes.bound_storage(u, cs.lanes);
        lanes.compute_at(f, cs.k).vectorize(u, cs.lanes, TailStrategy::GuardWithIf);
        lanes.update().vectorize(u, cs.lanes, TailStrategy::GuardWithIf);
        // The lanes' horizontal sum in two steps (4 vector adds of 8 lanes,
        // then 8 scalar adds) rather than a chain of 2·vec scalar adds: at
        // short rows (7x7, 14x14) that chain cost as much as the loads.
        RVar qo("qo"), qi("qi");
        f.update().split(cs.r_full, qo, qi, 8);
        Func eighths = f.update().rfactor(qi, v);
        eighths.compute_at(f, cs.k).vectorize(v);
        eighths.update().vectorize(v);
        // Rows of a vector or more use every lane: no predicate, which on
        // shorter rows stores the lanes' partial sums with masked stores that
        // the next loads cannot forward from.
        lanes.specialize(cs.long_rows);
        // Peeling the last vector is up to Halide's loop partitioning, which
        // skipped it inside the one-pass kernels' partitioned channel loop.
        lanes.update().specialize(cs.long_rows).partition(*cs.vectors_full, Partition::Always);
        eighths.update().specialize(cs.long_rows);
        // A group can be the whole batch (rows of 49 at 7x7), so the tasks
        // run over (channel, group) pairs: each takes consecutive channels
        // of one group, which are contiguous rows in memory, sized as the
        // elementwise tasks are (kTaskBytes of x, see schedule_rows_cpu).
        if (root) {
            Var cg("cg"), task("task"), pairs("pairs");
            const Expr per_task = units_per_task(channels * cs.groups, cs.pair_values, input_bytes);
            f.update().fuse(cs.c, cs.g, cg).split(cg, task, pairs, per_task, TailStrategy::GuardWithIf).parallel(task);
        }
        cs.total.compute_at(level);
        return;
    }
    for (Func* f : {&cs.full, &cs.tail}) {
        f->compute_at(level);
        // Channels innermost in the chunk-sum buffer too, so its vectors are dense.
        f->reorder_storage(cs.c, cs.k, cs.g).vectorize(cs.c, vec, TailStrategy::GuardWithIf);
        // A block of four vectors of channels runs the whole chunk, so its
        // accumulators are loop-invariant and live in registers; with
        // channels innermost each position loaded and stored every one.
        Var co("co"), ci("ci");
        const RVar& r = f == &cs.full ? cs.r_full : cs.r_tail;
        f->update()
            .split(cs.c, co, ci, vec * 4, TailStrategy::GuardWithIf)
            .reorder(ci, r, co, cs.k, cs.g)
            .vectorize(ci);
        if (root) f->update().parallel(cs.g);
    }
    cs.total.compute_at(level);
    // Channels are dense in the chunk sums: the float64 combine runs
    // across channel lanes, each channel's additions in the same order.
    // (Scalar, it was a serial C·N·chunks loop after the parallel sums.)
    cs.total.vectorize(cs.c, vec, TailStrategy::GuardWithIf);
    for (int u = 0; u < cs.total.num_update_definitions(); u++)
        cs.total.update(u).vectorize(cs.c, vec, TailStrategy::GuardWithIf);
}

}  // namespace

void schedule_channel_sums_cpu(ChannelSums& cs, Layout layout, int vec, const Expr& channels, int input_bytes) {
    schedule_channel_sums(cs, layout, vec, std::nullopt, channels, input_bytes);
}

void schedule_channel_sums_cpu(ChannelSums& cs, Layout layout, int vec, const LoopLevel& at) {
    schedule_channel_sums(cs, layout, vec, at, Expr(), 0);
}

TaskRows split_rows_into_tasks(Func f, const Var& d0, const Var& d1, const Var& outer, const Expr& rows_per_task,
                               int vec) {
    // A task is a block of d1 within one `outer`: splitting (d1, outer)
    // fused would cost an integer division and a modulo per row to find them
    // again, as much as the row's own work at 7x7 NCHW or 64 NHWC channels.
    Var blocks("blocks"), task("task"), rows("rows"), lanes("lanes");
    f.split(d1, blocks, rows, rows_per_task, TailStrategy::GuardWithIf)
        .fuse(blocks, outer, task)
        .parallel(task)
        .split(d0, d0, lanes, vec, TailStrategy::GuardWithIf)
        .vectorize(lanes);
    return {rows, lanes};
}

Var schedule_rows_cpu(Func f, Layout layout, const Var& d0, const Var& d1, const Var& n, const Expr& row_length,
                      const Expr& rows, int vec, int channel_operands) {
    const Expr rows_per_task = units_per_task(rows, max(row_length, 1), f.type().bytes());
    const TaskRows task = split_rows_into_tasks(f, d0, d1, n, rows_per_task, vec);
    if (layout == Layout::NHWC && channel_operands > 0) {
        // Each vector of channel operands loaded once for kRowGroup rows
        // (see the header). The rows' data stay in memory order, so below the
        // limit rows are not grouped: the interleaved streams measured slower.
        Var group("group"), row("row");
        const int operand_bytes = channel_operands * static_cast<int>(sizeof(float));
        f.specialize(row_length * operand_bytes >= kRowGroupOperandBytes)
            .split(task.rows, group, row, kRowGroup, TailStrategy::GuardWithIf)
            .reorder(task.lanes, row, d0, group)
            .unroll(row);
    }
    return task.rows;
}

namespace {

// A mask's bits (d0, d1, m) for one vector of its row, at the mask's vector
// loop `d0`: in registers, each of the byte's rows under its scalar batch test.
// `value_bytes` is the masked output's: the streaming variants align mask rows
// for vectors of at most abi::max_mask_vector_bytes of it.
void compute_mask_bits_cpu(const MaskBits& b, Func mask, const Var& d0, int vec, int value_bytes) {
    if (vec > bnforge::abi::max_mask_vector_bytes(value_bytes))
        throw InternalError("mask vectors wider than the streaming kernels' alignment");
    Func bits = b.func;
    bits.compute_at(mask, d0).bound_storage(d0, vec).vectorize(d0, vec, TailStrategy::GuardWithIf);
    bits.update().reorder(d0, b.k).vectorize(d0, vec, TailStrategy::GuardWithIf).unroll(b.k);
}

}  // namespace

void schedule_masked_rows_cpu(Func f, Func mask, const MaskBits& bits, Layout layout, const Var& d0, const Var& d1,
                              const Var& n, const Var& m, int vec) {
    Var ni("ni");
    // Tasks sized as schedule_rows_cpu's, a unit being the kMaskRows rows of
    // one mask row (bench/analysis.md, "The masked apply in tasks of 128 KiB").
    const OutputImageParam y = f.output_buffer();
    const Expr units = y.dim(1).extent() * ((y.dim(2).extent() + kMaskRows - 1) / kMaskRows);
    const Expr rows_per_task = units_per_task(units, max(kMaskRows * y.dim(0).extent(), 1), f.type().bytes());
    // ni moves inside d1 so that d1's blocks and m are adjacent for the task
    // fuse, then inside the vector loop once d0 is split.
    f.split(n, m, ni, kMaskRows, TailStrategy::GuardWithIf).reorder(d0, ni, d1, m);
    const TaskRows t = split_rows_into_tasks(f, d0, d1, m, rows_per_task, vec);
    f.reorder(t.lanes, ni, d0).unroll(ni);
    split_rows_into_tasks(mask, d0, d1, m, rows_per_task, vec);
    // NCHW: the mask row after y's 8 rows (its x re-read from L1/L2), as each
    // mask vector beside y's paid the fused loop's setup per 4 vectors at 7x7.
    // NHWC rows are whole vectors of channels, and there the mask vector
    // beside y's measured faster in the DRAM regime (bench/analysis.md, "The
    // mask row after the rows it packs").
    mask.compute_with(f, layout == Layout::NCHW ? t.rows : d0);
    compute_mask_bits_cpu(bits, mask, d0, vec, f.type().bytes());
}

ChannelLoop schedule_channels_cpu(Func f, Layout layout, const Var& d0, const Var& d1, const Var& n, int vec) {
    // (Halide's prefetch directive emits prefetchnta, which leaves the next
    // channel in L1 only: measured 2x slower, so the phases are not overlapped.)
    if (layout != Layout::NCHW) throw CompileError("one-pass kernels are built for NCHW only (see one_pass.h)");
    f.reorder(d0, n, d1).parallel(d1).vectorize(d0, vec, TailStrategy::GuardWithIf);
    return {f};
}

void fuse_with_channels(Func g, const ChannelLoop& channels, const Var& d0, const Var& d1, const Var& n, int vec) {
    const bool per_channel = g.dimensions() < 3;
    if (g.dimensions() == 2) {
        // A per-channel rows output (d1, row), its bounded rows unrolled.
        Var row = g.args()[1];
        g.reorder(row, d1).unroll(row);
    } else if (!per_channel) {
        g.reorder(d0, n, d1).vectorize(d0, vec, TailStrategy::GuardWithIf);
    }
    g.parallel(d1).compute_with(channels.func, per_channel ? d1 : n);
}

void fuse_mask_with_channels(Func mask, const MaskBits& bits, const ChannelLoop& channels, const Var& d0,
                             const Var& d1, const Var& n, const Var& m, int vec) {
    Var ni("ni");
    Func main = channels.func;  // a handle: the split is the main output's
    main.split(n, m, ni, kMaskRows, TailStrategy::GuardWithIf);
    mask.reorder(d0, m, d1).parallel(d1).vectorize(d0, vec, TailStrategy::GuardWithIf).compute_with(channels.func, m);
    compute_mask_bits_cpu(bits, mask, d0, vec, main.type().bytes());
}

void schedule_channel_outputs_cpu(Func f, int vec) {
    if (f.dimensions() == 0) return;
    f.vectorize(f.args()[0], vec, TailStrategy::GuardWithIf);
}

}  // namespace bnforge_gen
