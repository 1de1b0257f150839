// The CPU benchmark: every implementation on every case, next to the
// bandwidth floor, in one process, with the same threads for everyone.
//
//   bnforge_bench [--threads=N] [--cases=full|quick] [--regime=dram|cache]
//                 [--read-output] [--impls=a,b,...] [Google Benchmark flags]
//
// Per case (shape, layout, dtype): a copy of |x| into y (the floor's
// bandwidth), then each op for each implementation. In the DRAM regime (the
// default) inputs rotate through enough slots that one round touches three
// times the last-level cache the CPU reports, so an iteration reads its data
// from memory, not from what the previous iteration left in cache; in the
// cache regime every iteration reuses one buffer, as a layer whose tensors
// stay resident in the LLC would. With --read-output every timed call (and
// copy) is followed by a timed read of its main output, as the next layer's:
// what a streaming store saves at the write, that read may pay again. Each (op, implementation) is checked once against the
// float64 reference before it is timed; a failed check is reported, not timed.
#include "bench_api.h"
#include "cpu_caches.h"
#include "kernels.h"
#include "one_pass.h"

#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace bench {
namespace {

struct Config {
    int threads = 2;
    bool quick = false;
    bool cache_regime = false;  // one buffer instead of inputs rotated past the LLC
    bool read_output = false;   // each timed call followed by a read of its output
    std::set<std::string> impls;  // empty: all
};
Config g_config;
// A wrong result from bnforge fails the run, and so does any implementation's
// on the quick cases (the ctest, where it means a wrong setup). A peer's
// float32 statistics may drift past the bound on the long sums of the full
// cases (oneDNN 3.2's NCHW variance: 1.3e-4 at 401K values per channel):
// that case is reported as skipped, with the error, and the run goes on.
int g_failed_checks = 0;

// The last-level cache the CPU reports, as the runtime's streaming-store
// limit reads it; 32 MiB when it reports none.
double llc_bytes() {
    const size_t llc = bnforge::detail::last_level_cache_bytes();
    return llc > 0 ? static_cast<double>(llc) : 32.0 * (1 << 20);
}

// N = 32 batch-norm shapes of ResNet-50 (C x H x W), and one case larger than
// the last-level cache: the stem's BN at batch 256 (822 MB in float32), which
// the cache regime leaves out (one buffer of it is the DRAM regime already);
// the cache regime adds 1x64x7x7, where a call's fixed cost is most of its time.
std::vector<Shape> shapes() {
    if (g_config.quick) return {{4, 16, 10, 10}, {8, 64, 14, 14}};
    std::vector<Shape> all{{32, 64, 112, 112}, {32, 64, 56, 56},   {32, 256, 56, 56}, {32, 128, 28, 28},
                           {32, 512, 28, 28},  {32, 256, 14, 14},  {32, 1024, 14, 14}, {32, 512, 7, 7},
                           {32, 2048, 7, 7}};
    if (g_config.cache_regime) all.push_back({1, 64, 7, 7});
    else all.push_back({256, 64, 112, 112});
    return all;
}

// Enough slots that the x tensors alone exceed the last-level cache three
// times over: x is the one input every op reads, and outputs come from the
// allocator, which may hand back the same blocks every call. (Counting five
// tensors a slot left 32x128x28x28 float32 with two slots on a 32 MiB L3, and
// a train forward found much of its x still cached.) One in the cache regime.
int slots_for(const Shape& s, bnforge::DType dtype) {
    if (g_config.cache_regime) return 1;
    const double tensor = static_cast<double>(s.numel()) * bnforge::element_size(dtype);
    return static_cast<int>(std::clamp(std::ceil(3 * llc_bytes() / tensor), 1.0, 256.0));
}

// Names a case's data: shape, layout and dtype.
std::string data_key(const Shape& s, bnforge::Layout layout, bnforge::DType dtype) {
    return s.str() + to_string(layout) + bnforge::to_string(dtype);
}

// One CaseData alive at a time: the largest case needs gigabytes.
std::shared_ptr<CaseData> data_for(const Shape& s, bnforge::Layout layout, bnforge::DType dtype) {
    static std::shared_ptr<CaseData> current;
    static std::string key;
    const std::string k = data_key(s, layout, dtype);
    if (key != k) {
        current.reset();
        bnforge::empty_host_cache();
        current = make_case_data(s, layout, dtype, g_config.quick ? 2 : slots_for(s, dtype));
        key = k;
    }
    return current;
}

// Whether bnforge's one-pass kernels apply: the floor of a training op is
// then one read of its inputs, else two.
bool slab_fits(const CaseData& d, Op op) {
    bnforge::detail::BatchView v;
    bnforge::detail::make_batch_view(v, d.x[0], d.layout, "x");
    const bool backward = op == Op::backward || op == Op::fused_backward;
    return bnforge::detail::one_pass_fits(v, backward ? 2 : 1, bnforge::Device::cpu());
}

// The fewest bytes an op must move (see the report's definition of the floor).
double floor_bytes(const CaseSpec& spec, bool fits) {
    const double t = static_cast<double>(spec.shape.numel()) * bnforge::element_size(spec.dtype);
    const double mask = static_cast<double>(spec.shape.numel()) / 8;
    const double reads = fits ? 1 : 2;
    switch (spec.op) {
        case Op::train_forward: return reads * t + t;
        case Op::eval_forward: return 2 * t;
        case Op::backward: return reads * 2 * t + t;
        case Op::fused_forward: return reads * t + t /*addend*/ + t + mask;
        case Op::fused_backward: return reads * (2 * t + mask) + 2 * t;
        case Op::relu_forward: return reads * t + t;  // y is the backward's mask
    }
    return 0;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void set_counters(benchmark::State& st, double floor, const Shape& s, int threads) {
    st.counters["floor_bytes"] = floor;
    st.counters["elements"] = static_cast<double>(s.numel());
    st.counters["bench_threads"] = threads;
}

#if defined(__x86_64__)
// A copy whose stores do not read their lines first (non-temporal, as a
// streaming kernel writes): memcpy for the head up to a 32-byte boundary of
// `to` and for the tail.
__attribute__((target("avx"))) void stream_copy(char* to, const char* from, size_t n) {
    const size_t head = std::min(n, (32 - reinterpret_cast<uintptr_t>(to) % 32) % 32);
    std::memcpy(to, from, head);
    to += head, from += head, n -= head;
    const size_t body = n / 128 * 128;
    for (size_t i = 0; i < body; i += 128) {
        for (size_t v = i; v < i + 128; v += 32)
            _mm256_stream_si256(reinterpret_cast<__m256i*>(to + v),
                                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(from + v)));
    }
    _mm_sfence();
    std::memcpy(to + body, from + body, n - body);
}
#endif

// Reads `bytes` at `p` on `threads` threads, as the next layer's first
// touch of an output would (--read-output).
void read_all(const void* p, size_t bytes, int threads) {
    const auto* words = static_cast<const uint64_t*>(p);
    const size_t n = bytes / sizeof(uint64_t);
    uint64_t sum = 0;
#pragma omp parallel for simd num_threads(threads) reduction(+ : sum) schedule(static)
    for (size_t i = 0; i < n; i++) sum += words[i];
    static volatile uint64_t sink;
    sink = sum;
}

// The copy floor: |x| read and written by the faster, on this case, of
// glibc's memcpy and a copy with non-temporal stores. Neither wins
// everywhere: memcpy keeps a cache-resident copy in cache, while on Debian
// 12's glibc its large copies on a Zen 4 VM moved 16 GB/s where bnforge's
// streaming eval moved 42.
void copy_floor(benchmark::State& st, Shape shape, bnforge::Layout layout, bnforge::DType dtype, int threads) {
    auto data = data_for(shape, layout, dtype);
    std::vector<bnforge::Tensor> dst;
    for (int s = 0; s < data->slots; s++) dst.push_back(data->x[s].clone());
    const size_t bytes = data->x[0].nbytes();
    auto copy = [&](int slot, bool streaming) {
        const char* from = static_cast<const char*>(data->x[slot].raw_data());
        char* to = static_cast<char*>(dst[slot].raw_data());
#pragma omp parallel num_threads(threads)
        {
            const size_t k = omp_get_thread_num(), n = omp_get_num_threads();
            const size_t begin = bytes * k / n / 64 * 64, end = k + 1 == n ? bytes : bytes * (k + 1) / n / 64 * 64;
#if defined(__x86_64__)
            if (streaming) stream_copy(to + begin, from + begin, end - begin);
            else
#endif
                std::memcpy(to + begin, from + begin, end - begin);
        }
    };
    // Each way over every slot (at least 3 copies), untimed by the benchmark.
    auto seconds = [&](bool streaming) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < std::max(data->slots, 3); i++) copy(i % data->slots, streaming);
        return seconds_since(t0);
    };
    // Chosen once per case, so that its repetitions time the same copy.
    static std::map<std::string, bool> chosen;
    const std::string key = data_key(shape, layout, dtype) + "/" + std::to_string(threads);
    if (!chosen.count(key)) {
        bool streaming = false;
#if defined(__x86_64__)
        if (__builtin_cpu_supports("avx")) {
            seconds(false), seconds(true);  // first touch of dst, then both ways warm
            streaming = seconds(true) < seconds(false);
        }
#endif
        chosen[key] = streaming;
    }
    const bool streaming = chosen[key];
    int i = 0;
    for (auto _ : st) {
        const int slot = i++ % data->slots;
        const auto t0 = std::chrono::steady_clock::now();
        copy(slot, streaming);
        if (g_config.read_output) read_all(dst[slot].raw_data(), bytes, threads);
        st.SetIterationTime(seconds_since(t0));
    }
    set_counters(st, (g_config.read_output ? 3.0 : 2.0) * static_cast<double>(bytes), shape, threads);
    st.counters["streaming_copy"] = streaming;
}

// bnforge or one of its autoscheduled kernel sets, as opposed to a peer.
bool is_bnforge(const Implementation& impl) { return impl.name().rfind("bnforge", 0) == 0; }

void op_case(benchmark::State& st, CaseSpec spec, Implementation* impl, int threads) {
    static std::map<std::string, std::string> checked;  // case/impl/threads -> "" or what failed
    auto data = data_for(spec.shape, spec.layout, spec.dtype);
    if (const std::string why = impl->unsupported(spec); !why.empty()) {
        st.SkipWithError(why.c_str());
        return;
    }
    impl->set_num_threads(threads);
    std::unique_ptr<Runner> runner;
    try {
        runner = impl->prepare(spec, *data);
        const std::string key = spec.str() + "/" + impl->name() + "/" + std::to_string(threads);
        if (!checked.count(key)) {
            runner->run(0);
            checked[key] = check_outputs(spec, *data, runner->outputs(0));
            if (!checked[key].empty() && (g_config.quick || is_bnforge(*impl)))
                g_failed_checks++;
        }
        if (!checked[key].empty()) {  // every repetition skips alike
            st.SkipWithError(("check against the float64 reference failed: " + checked[key]).c_str());
            impl->set_num_threads(g_config.threads);
            return;
        }
        // Warm up to a training loop's steady state: every slot's outputs touched,
        // and (second round) a released block waiting in an allocator that caches,
        // so a one-slot case does not time the page faults of its first output.
        for (int round = 0; round < 2; round++)
            for (int s = 0; s < data->slots; s++) runner->run(s);
        int i = 0;
        for (auto _ : st) {
            const int slot = i++ % data->slots;
            const auto t0 = std::chrono::steady_clock::now();
            runner->run(slot);
            double seconds = seconds_since(t0);
            if (g_config.read_output) {
                const Outputs out = runner->outputs(slot);  // views, untimed
                const bnforge::Tensor& main = out.y.defined() ? out.y : out.dx;
                const auto t1 = std::chrono::steady_clock::now();
                read_all(main.raw_data(), main.nbytes(), threads);
                seconds += seconds_since(t1);
            }
            st.SetIterationTime(seconds);
        }
    } catch (const std::exception& e) {
        st.SkipWithError(e.what());
        impl->set_num_threads(g_config.threads);
        return;
    }
    const double output_read = g_config.read_output ? static_cast<double>(data->x[0].nbytes()) : 0;
    set_counters(st, floor_bytes(spec, slab_fits(*data, spec.op)) + output_read, spec.shape, threads);
    if (is_bnforge(*impl) && (spec.op == Op::train_forward || spec.op == Op::fused_forward ||
                              spec.op == Op::relu_forward))
        st.counters["fused"] = runner->one_pass() ? 1 : 0;
    impl->set_num_threads(g_config.threads);
}

std::vector<std::unique_ptr<Implementation>>& implementations() {
    static std::vector<std::unique_ptr<Implementation>> all = [] {
        std::vector<std::unique_ptr<Implementation>> v;
        v.push_back(make_bnforge());
#ifdef BNFORGE_BENCH_HAVE_DNNL
        v.push_back(make_onednn());
#endif
#ifdef BNFORGE_BENCH_HAVE_TORCH
        v.push_back(make_pytorch());
#endif
        for (const std::string& s : autoscheduled_schedules()) v.push_back(make_bnforge_autoscheduled(s));
        return v;
    }();
    return all;
}

// Thread scaling is measured on two shapes, both far above L2 (the sweep is long enough).
bool scaling_shape(const Shape& s) {
    return g_config.quick || (s.n == 32 && ((s.c == 64 && s.h == 56) || (s.c == 1024 && s.h == 14)));
}

std::string layout_tag(bnforge::Layout l) { return l == bnforge::Layout::NCHW ? "nchw" : "nhwc"; }

void register_all() {
    const int t = g_config.threads;
    for (const Shape& shape : shapes()) {
        for (bnforge::Layout layout : {bnforge::Layout::NCHW, bnforge::Layout::NHWC}) {
            for (bnforge::DType dtype : {bnforge::DType::Float32, bnforge::DType::BFloat16}) {
                const std::string tail = "/" + layout_tag(layout) + "/" + bnforge::to_string(dtype) + "/" + shape.str();
                const bool f32 = dtype == bnforge::DType::Float32;
                // A fixed iteration count per case (about 40 ms of work at 8 GB/s): Google
                // Benchmark's repetitions must all run the same count.
                const double est = 4.0 * static_cast<double>(shape.numel()) * bnforge::element_size(dtype) / 8e9;
                const auto iterations = static_cast<benchmark::IterationCount>(
                    g_config.quick ? 2 : std::clamp(0.04 / est, 1.0, 1000.0));
                auto reg = [&](const std::string& name, auto fn) {
                    benchmark::RegisterBenchmark(name.c_str(), fn)
                        ->UseManualTime()
                        ->Unit(benchmark::kMillisecond)
                        ->Iterations(iterations);
                };
                reg("copy" + tail + "/floor", [=](benchmark::State& st) { copy_floor(st, shape, layout, dtype, t); });
                if (f32 && t > 1 && scaling_shape(shape))
                    reg("copy" + tail + "/floor-1thread",
                        [=](benchmark::State& st) { copy_floor(st, shape, layout, dtype, 1); });
                for (Op op : {Op::train_forward, Op::eval_forward, Op::backward, Op::relu_forward, Op::fused_forward,
                              Op::fused_backward}) {
                    const CaseSpec spec{shape, layout, dtype, op};
                    for (auto& impl : implementations()) {
                        if (!g_config.impls.empty() && !g_config.impls.count(impl->name())) continue;
                        Implementation* p = impl.get();
                        reg(spec.str() + "/" + impl->name(), [=](benchmark::State& st) { op_case(st, spec, p, t); });
                        const bool scaling_op = op == Op::train_forward || op == Op::eval_forward || op == Op::backward;
                        if (impl->name() == "bnforge" && f32 && scaling_op && t > 1 && scaling_shape(shape))
                            reg(spec.str() + "/bnforge-1thread",
                                [=](benchmark::State& st) { op_case(st, spec, p, 1); });
                    }
                }
            }
        }
    }
}

// The model name, with the family and model numbers that tell a VM's generic
// "Intel(R) Xeon(R) Processor" apart (6/106 Ice Lake, 6/143 Sapphire Rapids, 6/207 Emerald Rapids).
std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string name = "unknown", family, model;
    for (std::string line; std::getline(in, line);) {
        const auto value = [&] { return line.substr(line.find(':') + 2); };
        if (line.rfind("model name", 0) == 0) name = value();
        else if (line.rfind("cpu family", 0) == 0 && family.empty()) family = value();
        else if (line.rfind("model\t", 0) == 0 && model.empty()) model = value();
        if (line.empty()) break;  // the first CPU's block is enough
    }
    return family.empty() ? name : name + " (family " + family + ", model " + model + ")";
}

}  // namespace
}  // namespace bench

int main(int argc, char** argv) {
    using namespace bench;
#ifdef BNFORGE_BENCH_OCL_ICD
    setenv("OCL_ICD_FILENAMES", BNFORGE_BENCH_OCL_ICD, 0);  // before oneDNN's SYCL runtime looks for a CPU device
#endif
    // Our flags first; Google Benchmark rejects what it does not know.
    std::vector<char*> rest{argv[0]};
    bool min_time_given = false, reps_given = false;
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        if (a.rfind("--threads=", 0) == 0) {
            g_config.threads = std::stoi(a.substr(10));
        } else if (a == "--cases=quick") {
            g_config.quick = true;
        } else if (a == "--cases=full") {
            g_config.quick = false;
        } else if (a == "--regime=cache" || a == "--regime=dram") {
            g_config.cache_regime = a == "--regime=cache";
        } else if (a == "--read-output") {
            g_config.read_output = true;
        } else if (a.rfind("--impls=", 0) == 0) {
            std::stringstream list(a.substr(8));
            for (std::string name; std::getline(list, name, ',');) g_config.impls.insert(name);
        } else {
            min_time_given = min_time_given || a.rfind("--benchmark_min_time", 0) == 0;
            reps_given = reps_given || a.rfind("--benchmark_repetitions", 0) == 0;
            rest.push_back(argv[i]);
        }
    }
    std::string min_time = "--benchmark_min_time=0.1";
    std::string reps = "--benchmark_repetitions=3", aggregates = "--benchmark_report_aggregates_only=true";
    if (!min_time_given) rest.push_back(min_time.data());
    // Medians of three runs, the statistic the report uses.
    if (!reps_given) rest.push_back(reps.data());
    rest.push_back(aggregates.data());
    int rest_argc = static_cast<int>(rest.size());
    benchmark::Initialize(&rest_argc, rest.data());
    if (benchmark::ReportUnrecognizedArguments(rest_argc, rest.data())) return 1;

    for (auto& impl : implementations()) impl->set_num_threads(g_config.threads);
    // One kernel call so dispatch has chosen; then say which CPU variant runs.
    {
        auto d = make_case_data({2, 4, 3, 3}, bnforge::Layout::NCHW, bnforge::DType::Float32, 1);
        bnforge::functional::batch_moments(d->x[0]);
    }
    if (const auto level = bnforge::last_cpu_level()) benchmark::AddCustomContext("bnforge_cpu_variant", to_string(*level));
    benchmark::AddCustomContext("cpu_model", cpu_model());
    benchmark::AddCustomContext("threads", std::to_string(g_config.threads));
    benchmark::AddCustomContext("regime", g_config.cache_regime ? "cache" : "dram");
    benchmark::AddCustomContext("read_output", g_config.read_output ? "yes" : "no");
#ifdef BNFORGE_BENCH_JEMALLOC
    benchmark::AddCustomContext("allocator", "jemalloc");
#else
    benchmark::AddCustomContext("allocator", "glibc malloc");
#endif
    benchmark::AddCustomContext("llc_bytes", std::to_string(static_cast<int64_t>(llc_bytes())));
    benchmark::AddCustomContext("bnforge_one_pass_limit_bytes", std::to_string(bnforge::one_pass_limit()));
    benchmark::AddCustomContext("bnforge_one_pass_min_bytes", std::to_string(bnforge::one_pass_min_bytes()));
    for (auto& impl : implementations())
        if (!impl->notes().empty()) benchmark::AddCustomContext("notes_" + impl->name(), impl->notes());

    register_all();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    if (g_failed_checks) std::cerr << g_failed_checks << " implementation(s) failed the reference check\n";
    return g_failed_checks ? 1 : 0;
}
