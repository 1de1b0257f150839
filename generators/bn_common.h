// Shared vocabulary of the batch-norm generators: layouts, fusions, the
// logical (s, c, n) view of a memory-order buffer, and the base class that
// carries estimates and the choice of a saved schedule.
//
// Every batch tensor reaches a generator as a 3-D buffer in memory order:
//   NCHW: (s, c, n)  — spatial innermost (all spatial dims merged into s)
//   NHWC: (c, s, n)  — channels innermost
// The algorithms are written once against logical coordinates (s, c, n);
// only the schedules look at the memory order.
#pragma once

#include "Halide.h"
#include "autoschedule.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <map>
#include <optional>
#include <string>

namespace bnforge_gen {

using namespace Halide;

enum class Layout { NCHW, NHWC };
inline const std::map<std::string, Layout> kLayoutNames = {
    {"nchw", Layout::NCHW}, {"nhwc", Layout::NHWC}};

// What follows the normalisation: nothing, ReLU, or an added tensor then ReLU
// (OneFlow's FusedBatchNorm2d). With ReLU a 1-bit mask records which outputs
// were positive, so backward never needs y.
enum class Fusion { None, Relu, AddRelu };
inline const std::map<std::string, Fusion> kFusionNames = {
    {"none", Fusion::None}, {"relu", Fusion::Relu}, {"add_relu", Fusion::AddRelu}};

// Statistics are accumulated in float32 over chunks of at most this many
// values of one channel (a piece of one (n, c) row, or with the manual NCHW
// schedule whole short rows of consecutive n), and the chunk sums in float64: the
// float32 error stays bounded by the chunk length whatever N·S is. The
// manual NCHW schedule further splits each chunk across vector lanes
// (rfactor); NHWC chunks, and the chunks of every autoscheduled or saved
// schedule (no autoscheduler uses rfactor), are summed one position at a time,
// hence the shorter chunk: 2048 serial float32 additions would miss the 1e-6
// on the mean that 256 keep.
inline int max_chunk(Layout layout, bool lanes_split) { return layout == Layout::NCHW && lanes_split ? 2048 : 256; }

// Values are shifted by a per-channel estimate of the mean before summing
// (the mean of up to 8 of the channel's first values), so the sums see small
// numbers when the data sit far from zero, and M2 = Σd² − (Σd)²/M loses
// little to cancellation.
constexpr int kShiftSamples = 8;

// Rows of the batch packed into one byte of the ReLU mask (see pack_mask_bits).
constexpr int kMaskRows = 8;

// Threads along the coalesced dimension of a GPU schedule: one warp.
constexpr int kGpuWarp = 32;

// Typical ResNet-50 stage sizes: the default estimates (autoschedulers need them).
constexpr int kEstN = 32, kEstC = 256, kEstS = 56 * 56;

// The one-pass pipelines keep a channel's slab in a CPU core's L2; a GPU
// runs the two passes (its stats and apply kernels stream at full bandwidth
// across all SMs), so these generators have no GPU schedule, and a GPU target
// is a configuration error rather than a silently unscheduled pipeline.
[[noreturn]] inline void cpu_only_pipeline(const char* generator) {
    throw CompileError(std::string(generator) + " is a CPU pipeline (one pass per L2-resident channel slab); "
                       "GPU builds use the two-pass pipelines");
}

// A stored activation widened to float32. bfloat16 is the top half of a
// float32, so its bits shifted up are the exact value: the same result as
// cast<float>, and it sidesteps Halide 21's PTX backend, whose bfloat16
// conversion fails an LLVM assertion ("Invalid cast").
inline Expr widen_to_float(const Expr& v) {
    if (!v.type().is_bfloat()) return cast<float>(v);
    return reinterpret<float>(cast<uint32_t>(reinterpret<uint16_t>(v)) << 16);
}

// A float32 value stored as `type`. bfloat16 is rounded to nearest even on
// the bits, exactly as Halide lowers the cast on CPUs, so CPU and GPU kernels
// store the same values (and the PTX backend's bfloat16 cast is avoided, see
// widen_to_float).
inline Expr narrow_from_float(const Type& type, const Expr& v) {
    if (!type.is_bfloat()) return cast(type, v);
    Expr bits = reinterpret<uint32_t>(strict_float(v));
    bits = bits + ((bits >> 16) & 1) + 0x7fff;
    return reinterpret(BFloat(16), cast<uint16_t>(bits >> 16));
}

// x − mean with the mean split as shift + offset (shift = the mean rounded to
// float32, offset = the rest). x − shift is exact for data near the mean;
// strict_float stops Halide and LLVM from reassociating it into
// x − (shift + offset), which would throw that exactness away.
inline Expr centred(const Expr& x, const Expr& shift, const Expr& offset) {
    return strict_float((x - shift) - offset);
}

// The pre-activation ((x − shift) − offset)·scale + beta [+ addend], in IEEE
// order: the two-pass and one-pass pipelines, scheduled differently, must
// round it the same way (no FMA contraction in one and not the other).
inline Expr normalized(const Expr& x, const Expr& shift, const Expr& offset, const Expr& scale, const Expr& beta,
                       const Expr& addend = Expr()) {
    Expr v = (x - shift - offset) * scale + beta;
    if (addend.defined()) v = v + addend;
    return strict_float(v);
}

// dx = g·k_dy − (x − mean)·k_xmu − k_bias, in IEEE order for the same reason.
inline Expr input_grad(const Expr& g, const Expr& xmu, const Expr& k_dy, const Expr& k_xmu, const Expr& k_bias) {
    return strict_float(g * k_dy - xmu * k_xmu - k_bias);
}

// Memory-order <-> logical coordinates.
inline Expr at(const Func& f, Layout layout, const Expr& s, const Expr& c, const Expr& n) {
    return layout == Layout::NCHW ? f(s, c, n) : f(c, s, n);
}

template <class Buf>
Expr spatial_extent(const Buf& b, Layout layout) {
    return b.dim(layout == Layout::NCHW ? 0 : 1).extent();
}
template <class Buf>
Expr channel_extent(const Buf& b, Layout layout) {
    return b.dim(layout == Layout::NCHW ? 1 : 0).extent();
}

// What every bnforge generator has besides its algorithm and manual schedule:
//  - the estimate shape, as GeneratorParams, so that a build or `bnforge tune`
//    can autoschedule for the (N, C, S) that matters rather than one fixed guess;
//  - saved_schedule=<name>: apply generators/schedules/<name>.schedule.h (compiled
//    into the generator, see autoschedule.h) instead of the manual CPU schedule.
template <class T>
class BnGenerator : public Generator<T> {
public:
    GeneratorParam<int> est_n{"est_n", kEstN, 1, std::numeric_limits<int>::max()};
    GeneratorParam<int> est_c{"est_c", kEstC, 1, std::numeric_limits<int>::max()};
    GeneratorParam<int> est_s{"est_s", kEstS, 1, std::numeric_limits<int>::max()};
    GeneratorParam<std::string> saved_schedule{"saved_schedule", ""};

protected:
    // Estimates for a batch tensor in memory order, a per-channel vector, and a
    // ReLU mask (bits packed across the batch, see pack_mask_bits).
    template <class Buf>
    void set_batch_estimates(Buf& b, Layout layout) {
        const int n = est_n, c = est_c, s = est_s;
        if (layout == Layout::NCHW) {
            b.set_estimates({{0, s}, {0, c}, {0, n}});
        } else {
            b.set_estimates({{0, c}, {0, s}, {0, n}});
        }
    }
    template <class Buf>
    void set_channel_estimates(Buf& b) {
        const int c = est_c;
        b.set_estimates({{0, c}});
    }
    template <class Buf>
    void set_mask_estimates(Buf& b, Layout layout) {
        const int n = est_n, c = est_c, s = est_s;
        const int inner = layout == Layout::NCHW ? s : c, outer = layout == Layout::NCHW ? c : s;
        b.set_estimates({{0, inner}, {0, outer}, {0, (n + kMaskRows - 1) / kMaskRows}});
    }

    bool has_saved_schedule() const { return !saved_schedule.value().empty(); }
    // The manual CPU schedules, as opposed to an autoscheduled or saved one.
    bool manual_schedule() const { return !this->using_autoscheduler() && !has_saved_schedule(); }

    void apply_saved_schedule() {
        const std::string name = saved_schedule;
        std::string known;
        for (const SavedSchedule& s : saved_schedules()) {
            if (name == s.name) {
                permit_estimate_unrolls();
                s.apply(this->get_pipeline(), this->get_target());
                guard_tails(this->get_pipeline());
                return;
            }
            known += std::string(known.empty() ? "" : ", ") + s.name;
        }
        throw CompileError("saved_schedule=" + name + ": no generators/schedules/" + name +
                           ".schedule.h was compiled into this generator (saved schedules: " +
                           (known.empty() ? "none" : known) + ")");
    }

    // Adams2019 sometimes unrolls a loop whose extent it took as constant
    // because it substituted an estimate for an input's size (the chunk loops
    // of bn_stats NCHW: "Can only unroll for loops over a constant extent").
    // HL_PERMIT_FAILED_UNROLL=1 is Halide's documented escape hatch for exactly
    // this: such a loop stays a serial loop. Only autoscheduled and saved
    // schedules get it (the manual ones never unroll), and a value the user set wins.
    static void permit_estimate_unrolls() { setenv("HL_PERMIT_FAILED_UNROLL", "1", 0); }
};

// The ReLU mask keeps one bit per element, packed across the batch: bit k of
// byte (d0, d1, m) is element (d0, d1, 8m + k), in memory order. Packed along
// a row instead, each byte vector would need 8 stride-8 reads of the row, and
// the row's last, partial byte a clamped index: Halide turns both into
// shuffles or gathers, which cost the fused forward half its speed. Across
// the batch, a byte vector lines up with one dense vector of each of 8 rows,
// and only a batch that is not a multiple of 8 leaves a partial byte, guarded
// by a scalar test on the row.
// `pre` is the pre-activation in memory order; a bit is set where it is > 0.
inline Expr pack_mask_bits(const Func& pre, const Expr& d0, const Expr& d1, const Expr& m, const Expr& batch) {
    Expr byte = cast<uint8_t>(0);
    for (int k = 0; k < kMaskRows; k++) {
        Expr row = m * kMaskRows + k;
        Expr bit = pre(d0, d1, min(row, batch - 1)) > 0.0f && row < batch;
        byte = byte | (cast<uint8_t>(bit) << k);
    }
    return byte;
}

// ReLU as select(v < 0, 0, v) rather than max(): NaN propagates, as in PyTorch.
inline Expr relu(const Expr& v) { return select(v < 0.0f, 0.0f, v); }

inline Expr mask_bit(const Func& mask, const Expr& d0, const Expr& d1, const Expr& n) {
    return ((mask(d0, d1, n / kMaskRows) >> cast<uint8_t>(n % kMaskRows)) & cast<uint8_t>(1)) != cast<uint8_t>(0);
}

// Per-channel float64 sums of a pair of float32 terms over (s, n), accumulated
// in float32 within chunks and in float64 across chunks. A chunk is up to
// `max_chunk` values: a piece of one row when rows are long, or whole rows of
// a group of consecutive batch rows when they are short (rows of 49 at 7x7
// take 41 to a chunk), so that the per-chunk work — the horizontal sum of the
// vector lanes, the float64 step — is paid per ~max_chunk values, not per row.
// `terms(s, c, n)` must be a 2-tuple of floats in logical coordinates.
// A group's rows are `full` chunks plus a shorter `tail`, each with a
// fixed-extent reduction, so no predicate or clamp ever reaches the inner loop.
struct ChannelSums {
    Func full;   // (k, c, g): float32 sums of chunk k of the rows of group g
    Func tail;   // (k, c, g), k = 0 only: float32 sums of the rest of those rows
    Func total;  // (c): float64 sums
    RVar r_full, r_tail;  // along a row (a group's rows are the outer RVar)
    Expr pairs_per_task;  // (channel, group) pairs per parallel task of a root schedule
    Var k{"k"}, c{"c"}, g{"g"};
};

inline ChannelSums channel_sums(const Func& terms, const Expr& spatial, const Expr& batch, Layout layout,
                               bool lanes_split) {
    ChannelSums cs;
    const int max = max_chunk(layout, lanes_split);
    // Only the lane-split (manual NCHW) schedule groups rows: elsewhere a row
    // is summed serially or across channels, with no per-row horizontal sum to save.
    const bool group_rows = layout == Layout::NCHW && lanes_split;
    Expr chunk = min(spatial, max);
    Expr full_chunks = spatial / chunk;
    Expr tail_start = full_chunks * chunk;
    Expr rows_per_group = group_rows ? Halide::max(1, max / spatial) : Expr(1);
    Expr groups = (batch + rows_per_group - 1) / rows_per_group;
    cs.pairs_per_task = Halide::max(1, 16384 / (rows_per_group * spatial));

    auto chunk_sum = [&](Func& f, const char* name, const Expr& start, const Expr& extent, RVar& rvar) {
        const std::string rname = std::string(name) + "_r";
        RDom r = group_rows ? RDom(0, extent, 0, rows_per_group, rname) : RDom(0, extent, rname);
        Expr row = cs.g;
        if (group_rows) {
            // The last group may have fewer rows: the predicate drops the rest,
            // the clamp keeps bounds inference inside the batch (a scalar, per row).
            row = cs.g * rows_per_group + r.y;
            r.where(row < batch);
            row = min(row, batch - 1);
        }
        Tuple t = terms(start + r.x, cs.c, row);
        f = Func(name);
        f(cs.k, cs.c, cs.g) = Tuple(0.0f, 0.0f);
        f(cs.k, cs.c, cs.g) = Tuple(f(cs.k, cs.c, cs.g)[0] + t[0], f(cs.k, cs.c, cs.g)[1] + t[1]);
        rvar = r.x;
    };
    chunk_sum(cs.full, "chunk_sums", cs.k * chunk, chunk, cs.r_full);
    chunk_sum(cs.tail, "tail_sums", tail_start, spatial - tail_start, cs.r_tail);

    RDom kg(0, full_chunks, 0, groups, "kg");
    RDom tg(0, groups, "tg");
    cs.total = Func("channel_sums");
    cs.total(cs.c) = Tuple(cast<double>(0), cast<double>(0));
    cs.total(cs.c) = Tuple(cs.total(cs.c)[0] + cast<double>(cs.full(kg.x, cs.c, kg.y)[0]),
                           cs.total(cs.c)[1] + cast<double>(cs.full(kg.x, cs.c, kg.y)[1]));
    cs.total(cs.c) = Tuple(cs.total(cs.c)[0] + cast<double>(cs.tail(0, cs.c, tg)[0]),
                           cs.total(cs.c)[1] + cast<double>(cs.tail(0, cs.c, tg)[1]));
    return cs;
}

// (mean, M2) of channel c from the shifted sums (Σd, Σd²), d = x − shift:
// mean = shift + Σd/M, M2 = Σd² − Σd·(Σd/M). Strict: every pipeline that
// forms them (bn_stats, bn_train_forward) must agree to the bit.
inline Tuple channel_moments(const Expr& shift, const Expr& sum_d, const Expr& sum_d2, const Expr& count) {
    return Tuple(strict_float(cast<double>(shift) + sum_d / count),
                 strict_float(max(sum_d2 - sum_d * (sum_d / count), cast<double>(0))));
}

// CPU schedule of channel_sums, vectorised along the contiguous dimension
// (rfactor across lanes for NCHW, across channels for NHWC); the float64 pass
// over chunks is O(C·N·S/chunk).
//  - at root: the chunk sums run in parallel over the batch (the two-pass
//    pipelines, whatever the size);
//  - at a channel loop of a fused pipeline (`at` = that loop): the channel's
//    sums are computed inside it, serially, just before its elementwise
//    outputs re-read the same slab from cache.
// Both orders add the same float32 values in the same order, so fused and
// two-pass pipelines give bitwise identical statistics.
inline void schedule_channel_sums_cpu(ChannelSums& cs, Layout layout, int vec,
                                      const std::optional<LoopLevel>& at = std::nullopt) {
    const bool root = !at;
    const LoopLevel level = at ? *at : LoopLevel::root();
    auto schedule = [&](Func& f, const RVar& r) {
        f.compute_at(level);
        if (layout == Layout::NCHW) {
            RVar ro("ro"), ri("ri");
            Var u("u");
            f.update().split(r, ro, ri, vec * 2);
            Func lanes = f.update().rfactor(ri, u);
            lanes.compute_at(f, cs.k).vectorize(u);
            lanes.update().vectorize(u);
            // The lanes' horizontal sum in two steps (4 vector adds of 8 lanes,
            // then 8 scalar adds) rather than a chain of 2·vec scalar adds: at
            // short rows (7x7, 14x14) that chain cost as much as the loads.
            RVar qo("qo"), qi("qi");
            Var v("v");
            f.update().split(ri, qo, qi, 8);
            Func eighths = f.update().rfactor(qi, v);
            eighths.compute_at(f, cs.k).vectorize(v);
            eighths.update().vectorize(v);
            // A group can be the whole batch (rows of 49 at 7x7), so the tasks
            // run over (channel, group) pairs: each takes consecutive channels
            // of one group, ~16K values, which are contiguous rows in memory.
            if (root) {
                Var cg("cg"), task("task"), pairs("pairs");
                f.update()
                    .fuse(cs.c, cs.g, cg)
                    .split(cg, task, pairs, cs.pairs_per_task, TailStrategy::GuardWithIf)
                    .parallel(task);
            }
        } else {
            // Channels innermost in the chunk-sum buffer too, so its vectors are dense.
            f.reorder_storage(cs.c, cs.k, cs.g).vectorize(cs.c, vec, TailStrategy::GuardWithIf);
            f.update().reorder(cs.c, r, cs.k, cs.g).vectorize(cs.c, vec, TailStrategy::GuardWithIf);
            if (root) f.update().parallel(cs.g);
        }
    };
    schedule(cs.full, cs.r_full);
    schedule(cs.tail, cs.r_tail);
    cs.total.compute_at(level);
}

// One thread per channel, a warp of channels per block: per-channel outputs,
// small per-channel Funcs, and every update definition of them.
inline void schedule_channels_gpu(Func f, const Var& c) {
    Var co("co"), ci("ci");
    f.compute_root().gpu_tile(c, co, ci, kGpuWarp, TailStrategy::GuardWithIf);
    for (int u = 0; u < f.num_update_definitions(); u++) {
        f.update(u).gpu_tile(c, co, ci, kGpuWarp, TailStrategy::GuardWithIf);
    }
}

// GPU schedule of channel_sums: one block per chunk, no atomics, so the
// sums are deterministic. NCHW: a chunk is read by a warp of 32 threads along
// the row (coalesced), each keeping a float32 partial in a register (rfactor),
// then one thread adds the 32 partials. NHWC: threads run along the channels
// (coalesced), each summing its channel's chunk serially. The float64 pass
// over chunks is one thread per channel.
inline void schedule_channel_sums_gpu(ChannelSums& cs, Layout layout) {
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

// GPU schedule of an elementwise output in memory order (d0, d1, n). d0 and
// d1 are fused: one batch row of a dense tensor is contiguous in either
// layout, so consecutive threads touch consecutive elements whatever the
// shape (7x7 rows or 3-channel NHWC alike), and the channel is recovered by a
// division per element, free in a memory-bound kernel. Blocks of
// kGpuElementThreads threads; each thread handles 4 elements
// kGpuElementThreads apart (unrolled: independent loads in flight, each one
// coalesced across the warp). With `mask_rows`, the batch is taken kMaskRows
// rows at a time instead: each thread takes one position of the 8 rows that
// one ReLU-mask byte packs, so the mask's stage (schedule_mask_gpu) and any
// sibling output join its thread loop, which this returns, with compute_with.
constexpr int kGpuElementThreads = 256;

inline Var schedule_elementwise_gpu(Func f, const Var& d0, const Var& d1, const Var& n, bool mask_rows = false) {
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

// The ReLU mask (d0, d1, m) beside an output scheduled with mask_rows: the
// same blocks and threads, each thread packing the byte of the 8 rows it
// has just written.
inline void schedule_mask_gpu(Func mask, Func main, const Var& d0, const Var& d1, const Var& m, const Var& at) {
    Var row("row"), t("t"), blk("blk"), thr("thr");
    mask.fuse(d0, d1, row).fuse(row, m, t).gpu_tile(t, blk, thr, kGpuElementThreads, TailStrategy::GuardWithIf);
    mask.compute_with(main, at);
}

// The per-channel shift of the statistics: a float32 mean of the first
// kShiftSamples values of channel c in (s, n) order.
inline Expr channel_shift(const Func& xf, const Expr& c, const Expr& spatial, const Expr& batch) {
    Expr samples = min(spatial * batch, kShiftSamples);
    Expr sum = 0.0f;
    for (int i = 0; i < kShiftSamples; i++) {
        Expr s = min(i, samples - 1) % spatial, n = min(i, samples - 1) / spatial;
        sum += select(i < samples, xf(s, c, n), 0.0f);
    }
    // Strict: the statistics must see one shift whatever schedule evaluates it
    // (a reassociated sum would differ by an ulp of the data, an error in the mean).
    return strict_float(sum / cast<float>(samples));
}

// The batch statistics of x as bn_stats defines them: the per-channel shift,
// the shifted sums (Σd, Σd²) and the count. One definition, so the one-pass
// forward's statistics are bn_stats's to the bit. `Buf` is the generator's
// x input (a Func in memory order with dim()).
struct BatchSums {
    Func shift;
    ChannelSums sums;
    Expr count;
};

template <class Buf>
BatchSums batch_sums(const Buf& x, Layout layout, bool manual_schedule) {
    Var s("s"), c("c"), n("n");
    Func xf("xf");
    xf(s, c, n) = widen_to_float(at(x, layout, s, c, n));
    const Expr spatial = spatial_extent(x, layout), batch = x.dim(2).extent();
    BatchSums out;
    out.shift = Func("shift");
    out.shift(c) = channel_shift(xf, c, spatial, batch);
    Func terms("terms");
    Expr d = xf(s, c, n) - out.shift(c);
    terms(s, c, n) = Tuple(d, d * d);
    out.sums = channel_sums(terms, spatial, batch, layout, manual_schedule);
    out.count = cast<double>(spatial) * cast<double>(batch);
    return out;
}

// Rows (d1, outer) of `f` fused and cut into parallel tasks of `rows_per_task`,
// each row vectorised along d0. Returns the per-task row loop, where siblings
// can be fused with compute_with.
inline Var split_rows_into_tasks(Func f, const Var& d0, const Var& d1, const Var& outer, const Expr& rows_per_task,
                                 int vec) {
    Var row("row"), task("task"), rows("rows");
    f.fuse(d1, outer, row)
        .split(row, task, rows, rows_per_task, TailStrategy::GuardWithIf)
        .parallel(task)
        .vectorize(d0, vec, TailStrategy::GuardWithIf);
    return rows;
}

// CPU schedule of an elementwise output in memory order (d0, d1, n): each
// parallel task takes whole d0 rows of several (d1, n), enough to amortise the
// task overhead when rows are short (NHWC with few channels).
inline Var schedule_rows_cpu(Func f, const Var& d0, const Var& d1, const Var& n, const Expr& row_length,
                             int vec) {
    return split_rows_into_tasks(f, d0, d1, n, max(1, 16384 / max(row_length, 1)), vec);
}

// schedule_rows_cpu for an output `f` and its ReLU mask (d0, d1, m): rows
// taken kMaskRows batch rows at a time, and each mask row computed right
// after the rows of f it packs, which it re-reads from cache.
inline void schedule_masked_rows_cpu(Func f, Func mask, const Var& d0, const Var& d1, const Var& n, const Var& m,
                                     const Expr& row_length, int vec) {
    Var ni("ni");
    const Expr rows_per_task = max(1, 16384 / max(kMaskRows * row_length, 1));
    f.split(n, m, ni, kMaskRows, TailStrategy::GuardWithIf).reorder(d0, ni, d1, m);
    Var rows = split_rows_into_tasks(f, d0, d1, m, rows_per_task, vec);
    split_rows_into_tasks(mask, d0, d1, m, rows_per_task, vec);
    mask.compute_with(f, rows);
}

// CPU schedule of a one-pass pipeline's elementwise output `f` (NCHW, memory
// order d0, d1, n): one parallel task per channel, its batch and spatial
// loops inside. Whatever is computed at level() sees one channel, which the
// runtime only sends here when the channel's N·S slab fits in L2: the
// statistics read it from memory, the outputs re-read it from cache.
// Sibling outputs join the same loops with fuse_with_channels.
struct ChannelLoop {
    Func func;  // the output whose loop nest the others join
    LoopLevel level() const { return LoopLevel(func, Var("d1")); }
};

inline ChannelLoop schedule_channels_cpu(Func f, Layout layout, const Var& d0, const Var& d1, const Var& n, int vec) {
    // (Halide's prefetch directive emits prefetchnta, which leaves the next
    // channel in L1 only: measured 2x slower, so the phases are not overlapped.)
    if (layout != Layout::NCHW) throw CompileError("one-pass kernels are built for NCHW only (see one_pass.h)");
    f.reorder(d0, n, d1).parallel(d1).vectorize(d0, vec, TailStrategy::GuardWithIf);
    return {f};
}

// Puts `g` — another output over (d0, d1, n), or a per-channel output over
// d1 alone — in the loop nest of `channels`: per-channel outputs once per
// channel, batch outputs row by row beside the main output. Halide matches
// fused loops by name, which is why per-channel outputs are defined over d1 too.
inline void fuse_with_channels(Func g, const ChannelLoop& channels, const Var& d0, const Var& d1, const Var& n,
                               int vec) {
    const bool per_channel = g.dimensions() == 1;
    if (!per_channel) g.reorder(d0, n, d1).vectorize(d0, vec, TailStrategy::GuardWithIf);
    g.parallel(d1).compute_with(channels.func, per_channel ? d1 : n);
}

// Puts the ReLU mask (d0, d1, m) in the loop nest of `channels`: the main
// output's batch loop is taken kMaskRows rows at a time, and each mask row is
// computed right after the rows it packs, which it re-reads from L1.
inline void fuse_mask_with_channels(Func mask, const ChannelLoop& channels, const Var& d0, const Var& d1, const Var& n,
                                    const Var& m, int vec) {
    Var ni("ni");
    Func main = channels.func;  // a handle: the split is the main output's
    main.split(n, m, ni, kMaskRows, TailStrategy::GuardWithIf);
    mask.reorder(d0, m, d1).parallel(d1).vectorize(d0, vec, TailStrategy::GuardWithIf).compute_with(channels.func, m);
}

}  // namespace bnforge_gen
