// Test-wide set-up: every tensor the runtime allocates starts as NaN, so an
// output element no kernel wrote fails the comparisons that follow.
#include <gtest/gtest.h>

#include <bnforge/bnforge.h>

#include <cmath>

namespace {

class PoisonAllocations : public ::testing::Environment {
public:
    void SetUp() override { bnforge::poison_new_tensors(true); }
};

const auto* const kRegistered = ::testing::AddGlobalTestEnvironment(new PoisonAllocations);

TEST(Poison, NewTensorsStartAsNaN) {
    const bnforge::Tensor t = bnforge::Tensor::empty({2, 3, 4, 5}, bnforge::DType::Float32);
    for (int64_t i = 0; i < t.numel(); i++) ASSERT_TRUE(std::isnan(t.data<float>()[i]));
    const bnforge::Tensor h = bnforge::Tensor::empty({7}, bnforge::DType::BFloat16);
    EXPECT_TRUE(std::isnan(h.item({6})));
}

}  // namespace
