// An independent float64 batch-norm reference, written from the formulas in
// DESIGN.md with plain loops over logical (n, c, s) — nothing shared with the
// kernels or the runtime.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

namespace ref {

struct Shape {
    int64_t n, c, s;
    int64_t size() const { return n * c * s; }
    int64_t at(int64_t in, int64_t ic, int64_t is) const { return (in * c + ic) * s + is; }
};

struct Forward {
    std::vector<double> y;
    std::vector<double> mean, var;  // what x was normalised with (biased batch var, or running var)
    std::vector<double> batch_mean, batch_var_unbiased;
};

// training: batch statistics; otherwise mean/var are the running statistics.
inline Forward forward(const std::vector<double>& x, Shape sh, const std::vector<double>& weight,
                       const std::vector<double>& bias, bool batch_stats, const std::vector<double>& running_mean,
                       const std::vector<double>& running_var, double eps, bool relu = false,
                       const std::vector<double>* addend = nullptr) {
    Forward f;
    f.y.resize(x.size());
    f.mean.resize(sh.c);
    f.var.resize(sh.c);
    f.batch_mean.resize(sh.c);
    f.batch_var_unbiased.resize(sh.c);
    const double m = static_cast<double>(sh.n * sh.s);
    for (int64_t c = 0; c < sh.c; c++) {
        double sum = 0;
        for (int64_t n = 0; n < sh.n; n++)
            for (int64_t s = 0; s < sh.s; s++) sum += x[sh.at(n, c, s)];
        const double mean = sum / m;
        double m2 = 0;
        for (int64_t n = 0; n < sh.n; n++)
            for (int64_t s = 0; s < sh.s; s++) m2 += (x[sh.at(n, c, s)] - mean) * (x[sh.at(n, c, s)] - mean);
        f.batch_mean[c] = mean;
        f.batch_var_unbiased[c] = m > 1 ? m2 / (m - 1) : NAN;
        f.mean[c] = batch_stats ? mean : running_mean[c];
        f.var[c] = batch_stats ? m2 / m : running_var[c];
        const double invstd = 1.0 / std::sqrt(f.var[c] + eps);
        for (int64_t n = 0; n < sh.n; n++) {
            for (int64_t s = 0; s < sh.s; s++) {
                const int64_t i = sh.at(n, c, s);
                double v = (x[i] - f.mean[c]) * invstd * weight[c] + bias[c];
                if (addend) v += (*addend)[i];
                if (relu) v = v > 0 ? v : 0;
                f.y[i] = v;
            }
        }
    }
    return f;
}

struct Backward {
    std::vector<double> dx, dweight, dbias, daddend;
};

// `y` is the forward output (for the ReLU mask when relu). batch_stats: the
// forward used batch statistics, so gradients flow through mean and var.
inline Backward backward(const std::vector<double>& x, const std::vector<double>& dy, const std::vector<double>& y,
                         Shape sh, const std::vector<double>& weight, const Forward& fwd, bool batch_stats, double eps,
                         bool relu) {
    Backward b;
    b.dx.resize(x.size());
    b.daddend.resize(x.size());
    b.dweight.assign(sh.c, 0);
    b.dbias.assign(sh.c, 0);
    const double m = static_cast<double>(sh.n * sh.s);
    std::vector<double> g(dy);
    if (relu)
        for (size_t i = 0; i < g.size(); i++) g[i] = y[i] > 0 ? dy[i] : 0;
    b.daddend = g;
    for (int64_t c = 0; c < sh.c; c++) {
        const double invstd = 1.0 / std::sqrt(fwd.var[c] + eps);
        double sum_g = 0, sum_g_xhat = 0;
        for (int64_t n = 0; n < sh.n; n++) {
            for (int64_t s = 0; s < sh.s; s++) {
                const int64_t i = sh.at(n, c, s);
                sum_g += g[i];
                sum_g_xhat += g[i] * (x[i] - fwd.mean[c]) * invstd;
            }
        }
        b.dweight[c] = sum_g_xhat;
        b.dbias[c] = sum_g;
        for (int64_t n = 0; n < sh.n; n++) {
            for (int64_t s = 0; s < sh.s; s++) {
                const int64_t i = sh.at(n, c, s);
                const double xhat = (x[i] - fwd.mean[c]) * invstd;
                b.dx[i] = batch_stats ? weight[c] * invstd * (g[i] - sum_g / m - xhat * sum_g_xhat / m)
                                      : weight[c] * invstd * g[i];
            }
        }
    }
    return b;
}

// r ← (1 − f)·r + f·b, where f is the weight of the batch statistic.
inline void blend(std::vector<double>& running, const std::vector<double>& batch, double f) {
    for (size_t c = 0; c < running.size(); c++) running[c] = (1 - f) * running[c] + f * batch[c];
}

// ‖a − b‖ / ‖b‖ (absolute when b is all zeros).
inline double rel_error(const std::vector<double>& a, const std::vector<double>& b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    if (a.size() != b.size()) return INFINITY;
    return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace ref
