// The semantics presets — the one place that says how the frameworks differ.
#pragma once
#include <bnforge/options.h>

namespace bnforge::detail {

struct ConventionRules {
    const char* name;
    double default_momentum;
    // PyTorch/OneFlow: r = (1 − m)·r + m·b.  MegEngine: r = m·r + (1 − m)·b.
    bool momentum_weights_running;
    bool supports_cumulative_average;  // momentum = None
    bool has_num_batches_tracked;
    bool supports_freeze;
    bool params_are_4d;                // state-dict shapes (1, C, 1, 1) rather than (C)
};

const ConventionRules& rules(Convention);

}  // namespace bnforge::detail
