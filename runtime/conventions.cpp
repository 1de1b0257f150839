#include "conventions.h"

namespace bnforge {

namespace detail {

const ConventionRules& rules(Convention c) {
    //                                    name         momentum  weights_running cumulative nbt    freeze 4d
    static const ConventionRules pytorch{"PyTorch", 0.1, false, true, true, false, false};
    static const ConventionRules megengine{"MegEngine", 0.9, true, false, false, true, true};
    static const ConventionRules oneflow{"OneFlow", 0.1, false, false, false, false, false};
    switch (c) {
        case Convention::PyTorch: return pytorch;
        case Convention::MegEngine: return megengine;
        case Convention::OneFlow: return oneflow;
    }
    return pytorch;
}

}  // namespace detail

const char* to_string(Convention c) { return detail::rules(c).name; }

BatchNormOptions::BatchNormOptions(int64_t num_features, Convention convention)
    : num_features_(num_features), convention_(convention), momentum_(detail::rules(convention).default_momentum) {}

}  // namespace bnforge
