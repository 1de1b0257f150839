// One training step of a BatchNorm2d layer, as an application would write it.
#include <bnforge/bnforge.h>

#include <cmath>
#include <cstdio>
#include <random>

int main() {
    using namespace bnforge;
    const int64_t N = 8, C = 4, H = 6, W = 6;

    BatchNorm2d bn(BatchNormOptions::pytorch(C).momentum(0.1));
    Tensor x = Tensor::empty({N, C, H, W}, DType::Float32);
    Tensor dy = Tensor::empty({N, C, H, W}, DType::Float32);
    std::mt19937 rng(42);
    std::normal_distribution<float> normal(3.0f, 2.0f);
    for (int64_t i = 0; i < x.numel(); i++) x.data<float>()[i] = normal(rng);
    for (int64_t i = 0; i < dy.numel(); i++) dy.data<float>()[i] = normal(rng) - 3.0f;

    Tensor y = bn.forward(x);     // normalise with batch statistics, update running stats
    Tensor dx = bn.backward(dy);  // input gradient; weight/bias grads accumulate
    const float lr = 0.1f;
    for (int64_t c = 0; c < C; c++) {  // plain SGD on gamma/beta
        bn.weight().data<float>()[c] -= lr * bn.weight_grad().data<float>()[c];
        bn.bias().data<float>()[c] -= lr * bn.bias_grad().data<float>()[c];
    }
    bn.zero_grad();

    // y has zero mean per channel; the running mean moved 10% toward the batch mean.
    double y_mean = 0;
    for (int64_t i = 0; i < y.numel(); i++) y_mean += y.data<float>()[i];
    y_mean /= static_cast<double>(y.numel());
    std::printf("train_step: y mean %.2e, running_mean[0] %.4f, weight[0] %.4f, num_batches_tracked %lld\n", y_mean,
                bn.running_mean().data<float>()[0], bn.weight().data<float>()[0],
                static_cast<long long>(bn.num_batches_tracked()));
    const bool ok = std::fabs(y_mean) < 1e-4 && std::fabs(bn.running_mean().data<float>()[0] - 0.3f) < 0.1f &&
                    bn.num_batches_tracked() == 1 && std::isfinite(dx.data<float>()[0]);
    std::printf("%s\n", ok ? "train_step: OK" : "train_step: FAILED");
    return ok ? 0 : 1;
}
