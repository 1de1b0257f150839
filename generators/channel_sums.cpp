#include "channel_sums.h"

#include "bn_math.h"

namespace bnforge_gen {

int max_chunk(Layout layout, int lanes) { return layout == Layout::NCHW && lanes > 0 ? 2048 : 256; }

namespace {

// Float32 chunk sums f(k, c, g) of `value`, an expression in the reduction's RVars.
void define_chunk_sums(const ChannelSums& cs, Func& f, const char* name, const Tuple& value) {
    f = Func(name);
    f(cs.k, cs.c, cs.g) = Tuple(0.0f, 0.0f);
    f(cs.k, cs.c, cs.g) = Tuple(f(cs.k, cs.c, cs.g)[0] + value[0], f(cs.k, cs.c, cs.g)[1] + value[1]);
}

// A group's rows: those of batch rows g·rows_per_group + r_rows, the last
// group's missing rows dropped by a predicate, the clamp keeping bounds
// inference inside the batch (a scalar, per row).
Expr group_row(const ChannelSums& cs, RDom& r, const RVar& r_rows, const Expr& rows_per_group, const Expr& batch) {
    Expr row = cs.g * rows_per_group + r_rows;
    r.where(row < batch);
    return min(row, batch - 1);
}

// The manual CPU schedule's NCHW sums: each row as whole vectors of `w`
// lanes, so no lane is ever predicated (a predicated tail stored its partial
// sums with masked stores the next loads could not forward from: half the
// statistics' time at 7x7, bench/analysis.md). The last vector ends at the
// row's end, overlapping the one before; its lanes already summed are masked
// to zero (49 = lanes 0..31, then 17..48 with 17..31 masked). A row is read
// once, front to back, in one loop. Rows shorter than w take fewer lanes,
// with the predicate (the schedule specializes on `long_rows`).
ChannelSums vector_channel_sums(const Func& terms, const Expr& spatial, const Expr& batch, int w) {
    ChannelSums cs;
    const int max = max_chunk(Layout::NCHW, w);
    cs.lanes = w;
    cs.long_rows = spatial >= w;
    Expr lanes = min(spatial, w);
    Expr vectors = (spatial + lanes - 1) / lanes;  // per row
    Expr per_chunk = min(vectors, max / w);        // vectors of a row per chunk
    Expr chunks = (vectors + per_chunk - 1) / per_chunk;
    Expr rows_per_group = Halide::max(1, max / spatial);
    Expr groups = (batch + rows_per_group - 1) / rows_per_group;
    cs.pair_values = rows_per_group * spatial;
    cs.groups = groups;

    RDom r(0, lanes, 0, per_chunk, 0, rows_per_group, "chunk_sums_r");
    Expr vector = cs.k * per_chunk + r.y;
    r.where(vector < vectors);
    Expr row = group_row(cs, r, r.z, rows_per_group, batch);
    // Only the last vector starts before vector·lanes and masks lanes; `likely`
    // lets Halide peel it off the loop (the schedule insists), so the others
    // carry no mask (a blend per vector measured ~5% at 14x14 in the DRAM
    // regime). The clamp shows bounds inference every load inside the row;
    // the select repeats it for the last vector because Halide partitions on
    // a likely select, not on the `||` below (without it: no partition).
    Expr inner = likely(vector < vectors - 1);
    Expr start = min(vector * lanes, spatial - lanes);
    Expr position = select(inner, start, spatial - lanes) + r.x;
    Tuple t = terms(position, cs.c, row);
    Expr kept = inner || position >= vector * lanes;
    define_chunk_sums(cs, cs.full, "chunk_sums", Tuple(select(kept, t[0], 0.0f), select(kept, t[1], 0.0f)));
    cs.r_full = r.x;
    cs.vectors_full = r.y;
    cs.rows_full = r.z;

    RDom kg(0, chunks, 0, groups, "kg");
    cs.total = Func("channel_sums");
    cs.total(cs.c) = Tuple(cast<double>(0), cast<double>(0));
    cs.total(cs.c) = Tuple(cs.total(cs.c)[0] + cast<double>(cs.full(kg.x, cs.c, kg.y)[0]),
                           cs.total(cs.c)[1] + cast<double>(cs.full(kg.x, cs.c, kg.y)[1]));
    return cs;
}

}  // namespace

ChannelSums channel_sums(const Func& terms, const Expr& spatial, const Expr& batch, Layout layout, int lanes) {
    if (layout == Layout::NCHW && lanes > 1) return vector_channel_sums(terms, spatial, batch, lanes);
    ChannelSums cs;
    const int max = max_chunk(layout, lanes);
    // Only the lane-split (manual NCHW) schedule groups rows: elsewhere a row
    // is summed serially or across channels, with no per-row horizontal sum to save.
    const bool group_rows = layout == Layout::NCHW && lanes > 0;
    Expr chunk = min(spatial, max);
    Expr full_chunks = spatial / chunk;
    Expr tail_start = full_chunks * chunk;
    Expr rows_per_group = group_rows ? Halide::max(1, max / spatial) : Expr(1);
    Expr groups = (batch + rows_per_group - 1) / rows_per_group;
    cs.pair_values = rows_per_group * spatial;
    cs.groups = groups;

    auto chunk_sum = [&](Func& f, const char* name, const Expr& start, const Expr& extent, RVar& rvar,
                         std::optional<RVar>& rows) {
        const std::string rname = std::string(name) + "_r";
        RDom r = group_rows ? RDom(0, extent, 0, rows_per_group, rname) : RDom(0, extent, rname);
        Expr row = group_rows ? group_row(cs, r, r.y, rows_per_group, batch) : Expr(cs.g);
        define_chunk_sums(cs, f, name, terms(start + r.x, cs.c, row));
        rvar = r.x;
        if (group_rows) rows = r.y;
    };
    chunk_sum(cs.full, "chunk_sums", cs.k * chunk, chunk, cs.r_full, cs.rows_full);
    chunk_sum(cs.tail, "tail_sums", tail_start, spatial - tail_start, cs.r_tail, cs.rows_tail);

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

BatchSums batch_sums(const Func& x, const Expr& spatial, const Expr& batch, Layout layout, int lanes) {
    Var s("s"), c("c"), n("n");
    Func xf("xf");
    xf(s, c, n) = widen_to_float(at(x, layout, s, c, n));
    BatchSums out;
    out.shift = Func("shift");
    out.shift(c) = channel_shift(xf, c, spatial, batch);
    Func terms("terms");
    Expr d = xf(s, c, n) - out.shift(c);
    terms(s, c, n) = Tuple(d, d * d);
    out.sums = channel_sums(terms, spatial, batch, layout, lanes);
    out.count = cast<double>(spatial) * cast<double>(batch);
    return out;
}

}  // namespace bnforge_gen
