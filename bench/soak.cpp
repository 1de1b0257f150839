// A long training run over changing shapes and layouts, watching resident
// memory: after a warm-up in which every shape has been seen, RSS must stay
// flat (the host block cache is bounded by its limit; nothing else may grow).
// Each step is a forward and backward of one of 2 x 12 modules (BatchNorm2d
// with momentum=None, FusedBatchNorm2d with an addend; NCHW and NHWC, 12
// shapes of 0.3 to 4 MB), with an eval forward every 10 steps and a
// checkpoint saved and loaded back every 500. The cache limit is set to 64 MB
// so that blocks are evicted throughout.
//
//   bnforge_soak [--steps=10000] [--slack-mb=16]   (exit 1 if RSS grew; make soak)
#include <bnforge/bnforge.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace bnforge;

double resident_mb() {
    std::ifstream statm("/proc/self/statm");
    long pages = 0, resident = 0;
    statm >> pages >> resident;
    return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1 << 20);
}

Tensor random_tensor(const std::vector<int64_t>& shape, Layout layout, std::mt19937& rng, float mean) {
    Tensor t = Tensor::empty(shape, DType::Float32, Device::cpu(), layout);
    std::normal_distribution<float> normal(mean, 1.0f);
    for (int64_t i = 0; i < t.numel(); i++) t.data<float>()[i] = normal(rng);
    return t;
}

struct Case {
    std::vector<int64_t> shape;
    Layout layout;
    std::unique_ptr<BatchNorm2d> plain;
    std::unique_ptr<FusedBatchNorm2d> fused;
    Tensor x, dy, addend;
};

}  // namespace

int main(int argc, char** argv) {
    long steps = 10000;
    double slack_mb = 16;
    for (int i = 1; i < argc; i++) {
        if (std::strncmp(argv[i], "--steps=", 8) == 0) steps = std::atol(argv[i] + 8);
        else if (std::strncmp(argv[i], "--slack-mb=", 11) == 0) slack_mb = std::atof(argv[i] + 11);
        else {
            std::fprintf(stderr, "usage: bnforge_soak [--steps=N] [--slack-mb=MB]\n");
            return 2;
        }
    }
    set_host_cache_limit(size_t{64} << 20);
    const std::vector<std::vector<int64_t>> shapes = {
        {16, 64, 28, 28}, {8, 128, 28, 28}, {32, 32, 20, 20}, {8, 64, 30, 30}, {4, 256, 14, 14}, {12, 48, 33, 17},
        {2, 512, 7, 7},   {16, 16, 56, 40}, {1, 64, 112, 96}, {6, 96, 25, 31}, {32, 8, 64, 64}, {3, 200, 19, 23}};
    std::mt19937 rng(2026);
    std::vector<Case> cases;
    for (const auto& shape : shapes)
        for (Layout layout : {Layout::NCHW, Layout::NHWC}) {
            Case c;
            c.shape = shape;
            c.layout = layout;
            c.plain = std::make_unique<BatchNorm2d>(
                BatchNormOptions::pytorch(shape[1]).momentum(std::nullopt).layout(layout));
            c.fused = std::make_unique<FusedBatchNorm2d>(BatchNormOptions::oneflow(shape[1]).layout(layout));
            c.x = random_tensor(shape, layout, rng, 2.0f);
            c.dy = random_tensor(shape, layout, rng, 0.0f);
            c.addend = random_tensor(shape, layout, rng, 0.0f);
            cases.push_back(std::move(c));
        }
    const std::string checkpoint = "/tmp/bnforge_soak_" + std::to_string(getpid()) + ".safetensors";
    const long warm_up = std::min<long>(steps / 5, 2000);
    double warm_mb = 0, peak_mb = 0;
    std::printf("%8s %10s\n", "step", "RSS MB");
    for (long step = 0; step < steps; step++) {
        Case& c = cases[static_cast<size_t>(rng() % cases.size())];
        if (step % 2 == 0) {
            c.plain->train();
            c.plain->backward(c.plain->forward(c.x));
            if (step % 10 == 0) {
                c.plain->eval();
                c.plain->forward(c.x);
            }
        } else {
            c.fused->backward(c.fused->forward(c.x, &c.addend));
        }
        if (step % 500 == 499) {
            save_safetensors(checkpoint, c.plain->state_dict());
            c.plain->load_state_dict(load_safetensors(checkpoint));
        }
        const double rss = resident_mb();
        if (step == warm_up) warm_mb = rss;
        if (step >= warm_up) peak_mb = std::max(peak_mb, rss);
        if (step % 1000 == 0 || step == steps - 1) std::printf("%8ld %10.1f\n", step, rss);
    }
    std::remove(checkpoint.c_str());
    const bool flat = peak_mb <= warm_mb + slack_mb;
    std::printf("soak: %ld steps over %zu modules; RSS %.1f MB after %ld warm-up steps, peak %.1f MB after: %s "
                "(slack %.0f MB)\n",
                steps, cases.size() * 2, warm_mb, warm_up, peak_mb, flat ? "flat" : "GREW", slack_mb);
    return flat ? 0 : 1;
}
