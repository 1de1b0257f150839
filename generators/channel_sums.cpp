#include "channel_sums.h"

#include "bn_math.h"

namespace bnforge_gen {

int max_chunk(Layout layout, bool lanes_split) { return layout == Layout::NCHW && lanes_split ? 2048 : 256; }

ChannelSums channel_sums(const Func& terms, const Expr& spatial, const Expr& batch, Layout layout, bool lanes_split) {
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

    auto chunk_sum = [&](Func& f, const char* name, const Expr& start, const Expr& extent, RVar& rvar,
                         std::optional<RVar>& rows) {
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

BatchSums batch_sums(const Func& x, const Expr& spatial, const Expr& batch, Layout layout, bool lanes_split) {
    Var s("s"), c("c"), n("n");
    Func xf("xf");
    xf(s, c, n) = widen_to_float(at(x, layout, s, c, n));
    BatchSums out;
    out.shift = Func("shift");
    out.shift(c) = channel_shift(xf, c, spatial, batch);
    Func terms("terms");
    Expr d = xf(s, c, n) - out.shift(c);
    terms(s, c, n) = Tuple(d, d * d);
    out.sums = channel_sums(terms, spatial, batch, layout, lanes_split);
    out.count = cast<double>(spatial) * cast<double>(batch);
    return out;
}

}  // namespace bnforge_gen
