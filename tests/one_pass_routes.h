// The two training routes (one pass over memory, or two) side by side: the
// CPU and GPU one-pass suites run both and check which kernels each took.
#pragma once
#include "kernels.h"
#include "test_util.h"

#include <string>

namespace testutil {

// A training forward and backward by one route (one pass or two), and the
// batch kernels each ran (last_invoked_kernel skips the per-channel ones).
struct TrainingRoute {
    functional::BatchNormForward fwd;
    functional::BatchNormBackward bwd;
    std::string forward_kernel, backward_kernel;
};
inline TrainingRoute run_training_route(const Tensor& x, const Tensor& dy, const Tensor& w, const Tensor& b,
                                        const VariantCase& tc, const Tensor& addend) {
    TrainingRoute r;
    r.fwd = functional::batch_norm_forward(x, Tensor(), Tensor(), w, b, true, 1e-5, tc.activation,
                                           tc.addend ? &addend : nullptr);
    r.forward_kernel = detail::last_invoked_kernel()->name;
    r.bwd = functional::batch_norm_backward(dy, r.fwd.result.saved, w);
    r.backward_kernel = detail::last_invoked_kernel()->name;
    return r;
}
// `r` ran the one-pass forward (train_forward) or the two-pass one (apply),
// and likewise backward (train_backward or backward_apply).
inline void expect_route(const TrainingRoute& r, bool forward_one_pass, bool backward_one_pass) {
    EXPECT_NE(r.forward_kernel.find(forward_one_pass ? "_train_forward_" : "_apply_"), std::string::npos)
        << r.forward_kernel;
    EXPECT_NE(r.backward_kernel.find(backward_one_pass ? "_train_backward_" : "_backward_apply_"),
              std::string::npos)
        << r.backward_kernel;
}
// `two` ran the two-pass kernels; `one` the one-pass ones where `one_pass`, else the two passes too.
inline void expect_routes(const TrainingRoute& two, const TrainingRoute& one, bool one_pass) {
    expect_route(two, false, false);
    expect_route(one, one_pass, one_pass);
}

}  // namespace testutil
