// Per-channel float64 sums of a pair of float32 terms over (s, n), and the
// batch statistics of x built on them (one definition, so the one-pass
// forward's statistics are bn_stats's to the bit).
#pragma once

#include "bn_vocabulary.h"

#include <optional>

namespace bnforge_gen {

// Statistics are accumulated in float32 over chunks of at most this many
// values of one channel (a piece of one (n, c) row, or with the manual NCHW
// schedule whole short rows of consecutive n), and the chunk sums in float64: the
// float32 error stays bounded by the chunk length whatever N·S is. The
// manual NCHW schedule further splits each chunk across vector lanes
// (rfactor); NHWC chunks, and the chunks of every autoscheduled or saved
// schedule (no autoscheduler uses rfactor), are summed one position at a time,
// hence the shorter chunk: 2048 serial float32 additions would miss the 1e-6
// on the mean that 256 keep. `lanes`: the manual schedule's lane split (see
// BnGenerator::sum_lanes; 0: none).
int max_chunk(Layout layout, int lanes);

// Sums accumulated in float32 within chunks and in float64 across chunks. A
// chunk is up to `max_chunk` values: a piece of one row when rows are long,
// or whole rows of a group of consecutive batch rows when they are short
// (rows of 49 at 7x7 take 41 to a chunk), so that the per-chunk work — the
// horizontal sum of the vector lanes, the float64 step — is paid per
// ~max_chunk values, not per row. Each reduction has fixed extents, so no
// clamp reaches the inner loop.
//  - The manual CPU schedule's NCHW sums (`lanes` > 1): `full` alone, each
//    row as whole vectors of `lanes` values, the last one ending at the row's
//    end with the lanes it shares with the one before masked to zero; a row
//    is read once, front to back, and no lane is predicated.
//  - Otherwise: `full` chunks of a row plus a shorter `tail` (the rest of it).
struct ChannelSums {
    Func full;   // (k, c, g): float32 sums of chunk k of the rows of group g
    Func tail;   // (k, c, g), k = 0 only: float32 sums of the rest of those rows; undefined with lanes
    Func total;  // (c): float64 sums
    RVar r_full, r_tail;  // along a row (with lanes: a vector's lanes)
    // With grouped rows (the manual NCHW schedules), the RVars over a group's
    // rows (outside r_full / r_tail); undefined otherwise.
    std::optional<RVar> rows_full, rows_tail;
    // With lanes: a row's vectors in a chunk (between r_full and rows_full),
    // the last of which masks lanes and is peeled off the loop.
    std::optional<RVar> vectors_full;
    Expr pair_values;     // values of x in one (channel, group) pair: a group's rows
    Expr groups;          // groups per channel
    int lanes = 0;        // with lanes: the vector width rows are cut into
    Expr long_rows;       // with lanes: rows at least a vector long, so every lane is in use
    Var k{"k"}, c{"c"}, g{"g"};
};

// `terms(s, c, n)` must be a 2-tuple of floats in logical coordinates.
ChannelSums channel_sums(const Func& terms, const Expr& spatial, const Expr& batch, Layout layout, int lanes);

// The batch statistics of x as bn_stats defines them: the per-channel shift,
// the shifted sums (Σd, Σd²) and the count M = N·S.
struct BatchSums {
    Func shift;
    ChannelSums sums;
    Expr count;
};
// `x` is the generator's x input in memory order, of `spatial` × C × `batch` values.
BatchSums batch_sums(const Func& x, const Expr& spatial, const Expr& batch, Layout layout, int lanes);

}  // namespace bnforge_gen
