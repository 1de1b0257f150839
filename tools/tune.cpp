// bnforge tune: the manual schedules against Halide's autoschedulers, measured.
//
// For each chosen kernel (pipeline x fusion x layout, one dtype, one device:
// the CPU, or a GPU through a CUDA or OpenCL target) it builds the
// generator's pipeline in this process, once with the manual schedule (and
// once with the saved schedule, when the build has one) and once per
// autoscheduler with the estimates set to the requested shape; JIT-compiles
// each for the target; times them on the same random inputs (median of
// --runs, one thread count); checks every output against the manual one; and
// prints a table. When an autoscheduled schedule beats the build's current one
// it is written to generators/schedules/<kernel library>.schedule.h, which the
// next build compiles in instead of the manual schedule (README, "Tuning
// schedules").
#include "Halide.h"
#include "autoschedule.h"
#include "kernel_abi.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace Halide;
using Internal::AbstractGenerator;
using Internal::AbstractGeneratorPtr;
namespace fs = std::filesystem;

// The kernel families as CMake declares them (generators/CMakeLists.txt).
struct Family {
    std::string pipeline, generator, layouts;  // layouts: "nchw nhwc"
    bool gpu;                                  // has a GPU schedule (and CUDA/OpenCL kernels)
    std::string fusion, params;                // params: "name=value ..."
};
const std::vector<Family> kFamilies = {
#define BNFORGE_FAMILY(pipeline, generator, layouts, gpu, fusion, params) \
    {#pipeline, #generator, layouts, gpu, #fusion, params},
#include "kernel_families.inc"
#undef BNFORGE_FAMILY
};

// Every manual-schedule kernel library the build made, by pipeline, device,
// dtype tag, layout and fusion: the names CMake gave them (kernel_registry.inc).
struct Library {
    std::string pipeline, device, dtype, layout, fusion, name;
};
const std::vector<Library> kLibraries = [] {
    std::vector<Library> libs;
#define BNFORGE_KERNEL(pipeline, device, dtype, layout, fusion, schedule, name) \
    if (std::string(#schedule) == "manual") libs.push_back({#pipeline, #device, #dtype, #layout, #fusion, #name});
#define BNFORGE_CHANNEL_KERNEL(pipeline, device, variant, schedule, name)
#define BNFORGE_STREAMING_KERNEL(pipeline, device, dtype, layout, fusion, name)  // the manual one's copy
#include "kernel_registry.inc"
#undef BNFORGE_STREAMING_KERNEL
#undef BNFORGE_CHANNEL_KERNEL
#undef BNFORGE_KERNEL
    return libs;
}();

const std::map<std::string, std::string> kDtypeTags = {{"float32", "f32"}, {"float16", "f16"}, {"bfloat16", "bf16"}};
// Halide's autoschedulers: those that schedule CPUs, those that schedule GPUs, and all of them.
const std::vector<std::string> kCpuSchedulers = {"Adams2019", "Mullapudi2016", "Li2018"};
const std::vector<std::string> kGpuSchedulers = {"Anderson2021", "Li2018"};
const std::vector<std::string> kAllSchedulers = [] {
    std::vector<std::string> all = kCpuSchedulers;
    for (const auto& s : kGpuSchedulers)
        if (std::find(all.begin(), all.end(), s) == all.end()) all.push_back(s);
    return all;
}();
// The GPU autoschedulers' parallelism, as in the AOT build: BNFORGE_GPU_SM_COUNT.
constexpr int kGpuParallelism = BNFORGE_GPU_SM_COUNT;

struct Options {
    std::string pipeline = "all", layout = "nchw", dtype = "float32", fusion = "all";
    std::vector<int64_t> shape = {32, 64, 56, 56};
    std::string target = "host";
    std::vector<std::string> schedulers;  // empty: those of the target's kind
    int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    int parallelism = 0;  // the autoschedulers'; 0: --threads on a CPU, kGpuParallelism on a GPU
    int runs = 15;
    double min_gain = 0.05;  // a schedule must be this much faster to replace the build's one: timing noise is not a win
    std::string out_dir = BNFORGE_SOURCE_DIR "/generators/schedules";
    bool force = false, dry_run = false;
};

const char* kUsage = R"(usage: bnforge tune [options]

Times the manual schedule of bnforge's kernels against Halide's autoschedulers
(JIT, in this process) for one shape and target, checks every result against
the manual one, and saves the winning autoscheduled schedule as
<out-dir>/<kernel library>.schedule.h, which the next build compiles in
instead of the manual one (nothing is written when the build's schedule wins).
A CUDA or OpenCL target tunes the GPU kernels (bnk_<pipeline>_cuda_... or
_opencl_...) on that device: run it where the GPU is.

  --pipeline P     stats, apply, backward_reduce, backward_apply or all    [all]
  --layout L       nchw, nhwc or all                                       [nchw]
  --dtype D        float32, float16 or bfloat16                            [float32]
  --fusion F       none, relu, add_relu, masked or all (a pipeline
                   without F is skipped)                                   [all]
  --shape N,C,...  logical shape (N, C, spatial...), e.g. 32,64,56,56      [32,64,56,56]
  --target T       Halide target to JIT for, e.g. host, or
                   host-cuda-cuda_capability_80 or host-opencl for a GPU
                   (large_buffers, and cl_doubles for OpenCL, are added,
                   as in the AOT build)                                    [host]
  --schedulers S   comma list of Adams2019, Mullapudi2016, Li2018 (CPU)
                   or Anderson2021, Li2018 (GPU)          [all of the target's kind]
  --threads K      threads for the CPU kernels                             [hardware threads]
  --parallelism P  the autoschedulers' parallelism
                   [CPU: --threads; GPU: the build's BNFORGE_GPU_SM_COUNT]
  --runs R         timed runs per schedule (the median is reported)        [15]
  --min-gain G     how much faster than the build's current schedule a
                   schedule must be to be written (0.05 = 5%)              [0.05]
  --out-dir DIR    where schedules are written       [<source>/generators/schedules]
  --force          write the fastest autoscheduled schedule even when the
                   build's current schedule is faster
  --dry-run        print the plan (kernels, schedules, files) and stop
  --help           this text

A progress line on stderr says what is running. Exit status: 0 done, 1 an
autoscheduled result differed from the manual one or a kernel failed, 2 bad usage.
)";

[[noreturn]] void usage_error(const std::string& message) {
    std::fprintf(stderr, "bnforge tune: %s (see --help)\n", message.c_str());
    std::exit(2);
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    for (std::string item; std::getline(ss, item, sep);) {
        if (!item.empty()) out.push_back(item);
    }
    return out;
}

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return std::tolower(ch); });
    return s;
}

Options parse_args(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; i++) {
        const std::string arg = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage_error(arg + " needs a value");
            return argv[++i];
        };
        auto number = [&](const std::string& text, const std::string& what) -> int64_t {
            try {
                size_t used = 0;
                const long long v = std::stoll(text, &used);
                if (used == text.size() && v > 0) return v;
            } catch (const std::exception&) {
            }
            usage_error(what + ": expected a positive integer, got '" + text + "'");
        };
        if (arg == "--help" || arg == "-h") {
            std::fputs(kUsage, stdout);
            std::exit(0);
        } else if (arg == "--pipeline") {
            o.pipeline = value();
        } else if (arg == "--layout") {
            o.layout = value();
        } else if (arg == "--dtype") {
            o.dtype = value();
        } else if (arg == "--fusion") {
            o.fusion = value();
        } else if (arg == "--shape") {
            o.shape.clear();
            for (const auto& d : split(value(), ',')) o.shape.push_back(number(d, "--shape"));
        } else if (arg == "--target") {
            o.target = value();
        } else if (arg == "--schedulers") {
            o.schedulers.clear();
            for (const auto& s : split(value(), ',')) {
                const auto it = std::find_if(kAllSchedulers.begin(), kAllSchedulers.end(),
                                             [&](const std::string& k) { return lower(k) == lower(s); });
                if (it == kAllSchedulers.end()) usage_error("--schedulers: unknown autoscheduler '" + s + "'");
                o.schedulers.push_back(*it);
            }
        } else if (arg == "--threads") {
            o.threads = static_cast<int>(number(value(), "--threads"));
        } else if (arg == "--parallelism") {
            o.parallelism = static_cast<int>(number(value(), "--parallelism"));
        } else if (arg == "--runs") {
            o.runs = static_cast<int>(number(value(), "--runs"));
        } else if (arg == "--min-gain") {
            const std::string text = value();
            char* end = nullptr;
            o.min_gain = std::strtod(text.c_str(), &end);
            if (end == text.c_str() || *end || o.min_gain < 0) usage_error("--min-gain: expected a fraction >= 0, got '" + text + "'");
        } else if (arg == "--out-dir") {
            o.out_dir = value();
        } else if (arg == "--force") {
            o.force = true;
        } else if (arg == "--dry-run") {
            o.dry_run = true;
        } else {
            usage_error("unknown option '" + arg + "'");
        }
    }
    if (o.shape.size() < 2 || o.shape.size() > 5) usage_error("--shape: expected 2 to 5 dimensions N,C[,spatial...]");
    if (!kDtypeTags.count(o.dtype)) usage_error("--dtype: expected float32, float16 or bfloat16, got '" + o.dtype + "'");
    if (o.layout != "nchw" && o.layout != "nhwc" && o.layout != "all") {
        usage_error("--layout: expected nchw, nhwc or all, got '" + o.layout + "'");
    }
    return o;
}

// The device of the kernels a target builds: "cpu", "cuda" or "opencl" (the
// device tags of cmake/BnforgeKernels.cmake's library names).
std::string device_of(const Target& target) {
    if (target.has_feature(Target::CUDA)) return "cuda";
    if (target.has_feature(Target::OpenCL)) return "opencl";
    if (target.has_gpu_feature()) usage_error("--target: bnforge builds CUDA and OpenCL GPU kernels; got " + target.to_string());
    return "cpu";
}

// The target's autoschedulers: the requested ones, each checked against the
// device kind, or all of that kind.
std::vector<std::string> schedulers_for(const Options& o, const std::string& device) {
    const std::vector<std::string>& of_kind = device == "cpu" ? kCpuSchedulers : kGpuSchedulers;
    if (o.schedulers.empty()) return of_kind;
    for (const auto& s : o.schedulers) {
        if (std::find(of_kind.begin(), of_kind.end(), s) == of_kind.end()) {
            usage_error("--schedulers: " + s + " does not schedule " + (device == "cpu" ? "CPUs" : "GPUs"));
        }
    }
    return o.schedulers;
}

// One kernel to tune: a family member at one layout and dtype.
struct Case {
    Family family;
    std::string layout;
    std::string library;  // the AOT kernel library's name, e.g. bnk_apply_cpu_f32_nchw_relu
    std::string label() const {
        return family.generator + (family.fusion == "none" ? "" : " " + family.fusion) + " " + layout;
    }
};

std::vector<Case> select_cases(const Options& o, const std::string& device) {
    std::vector<Case> cases;
    bool pipeline_known = o.pipeline == "all";
    for (const Family& f : kFamilies) {
        pipeline_known |= f.pipeline == o.pipeline;
        if (o.pipeline != "all" && f.pipeline != o.pipeline) continue;
        if (device != "cpu" && !f.gpu) continue;  // CPU-only (the one-pass pipelines)
        if (o.fusion != "all" && f.fusion != o.fusion) continue;
        for (const std::string layout : {"nchw", "nhwc"}) {
            if (o.layout != "all" && layout != o.layout) continue;
            if (f.layouts.find(layout) == std::string::npos) continue;  // the build has no such kernel
            // The AOT library CMake built for it, by its registry entry.
            for (const Library& lib : kLibraries) {
                if (lib.pipeline == f.pipeline && lib.device == device && lib.dtype == kDtypeTags.at(o.dtype) &&
                    lib.layout == layout && lib.fusion == f.fusion) {
                    cases.push_back({f, layout, lib.name});
                }
            }
        }
    }
    if (!pipeline_known) usage_error("--pipeline: unknown pipeline '" + o.pipeline + "'");
    if (cases.empty()) {
        usage_error("no " + device + " kernel has pipeline " + o.pipeline + " with fusion " + o.fusion);
    }
    return cases;
}

// The progress line: rewritten in place on a terminal, one line per step otherwise.
class Progress {
public:
    explicit Progress(int total) : total_(total), tty_(isatty(STDERR_FILENO)) {}
    void step() { current_++; }
    void say(const std::string& what) {
        const std::string line = "[" + std::to_string(current_) + "/" + std::to_string(total_) + "] " + what;
        if (tty_) {
            std::fprintf(stderr, "\r\033[K%s", line.c_str());
        } else {
            std::fprintf(stderr, "%s\n", line.c_str());
        }
        std::fflush(stderr);
    }
    void clear() {
        if (tty_) std::fprintf(stderr, "\r\033[K");
    }

private:
    int total_, current_ = 0;
    bool tty_;
};

// Logical (N, C, S) of the requested shape.
struct Ncs {
    int n, c, s;
};

Ncs ncs_of(const std::vector<int64_t>& shape) {
    int64_t s = 1;
    for (size_t i = 2; i < shape.size(); i++) s *= shape[i];
    return {static_cast<int>(shape[0]), static_cast<int>(shape[1]), static_cast<int>(s)};
}

// The memory-order extents of a generator argument, by its kind: a batch
// tensor (3-D, the activation dtype), a ReLU mask (3-D uint8, 8 batch rows
// a byte), per-channel rows (2-D (C, rows): moments or sums, kernel_abi.h) or
// a per-channel vector (1-D).
std::vector<int> extents_of(const AbstractGenerator::ArgInfo& a, const Ncs& ncs, const std::string& layout) {
    const bool nchw = layout == "nchw";
    const int d0 = nchw ? ncs.s : ncs.c, d1 = nchw ? ncs.c : ncs.s;
    if (a.dimensions == 1) return {ncs.c};
    if (a.dimensions == 2 && a.name == bnforge::abi::arg::moments) return {ncs.c, bnforge::abi::kMomentRows};
    if (a.dimensions == 2 && a.name == bnforge::abi::arg::sums) return {ncs.c, bnforge::abi::kSumRows};
    if (a.dimensions == 3 && a.types.at(0) == UInt(8)) {
        return {d0, d1, (ncs.n + bnforge::abi::kMaskRows - 1) / bnforge::abi::kMaskRows};
    }
    if (a.dimensions == 3) return {d0, d1, ncs.n};
    throw std::runtime_error("argument " + a.name + " has an unexpected shape");
}

template <class T>
void fill_typed(Buffer<> buf, std::mt19937& rng, double mean, double stddev) {
    std::normal_distribution<double> normal(mean, stddev);
    Buffer<T> b = buf.as<T>();
    b.for_each_value([&](T& v) { v = static_cast<T>(normal(rng)); });
}

// Random values (never zeros: time on data): batch tensors around 0.5, per-channel values around 1.
void fill_random(Buffer<> buf, std::mt19937& rng) {
    const Type t = buf.type();
    const double mean = buf.dimensions() == 1 ? 1.0 : 0.5, stddev = buf.dimensions() == 1 ? 0.3 : 2.0;
    if (t == Float(32)) {
        fill_typed<float>(buf, rng, mean, stddev);
    } else if (t == Float(64)) {
        fill_typed<double>(buf, rng, mean, stddev);
    } else if (t == Float(16)) {
        fill_typed<float16_t>(buf, rng, mean, stddev);
    } else if (t == BFloat(16)) {
        fill_typed<bfloat16_t>(buf, rng, mean, stddev);
    } else if (t == UInt(8)) {
        std::uniform_int_distribution<int> byte(0, 255);
        buf.as<uint8_t>().for_each_value([&](uint8_t& v) { v = static_cast<uint8_t>(byte(rng)); });
    } else {
        throw std::runtime_error("no random fill for type " + type_to_c_type(t, false));
    }
}

std::vector<double> values_of(Buffer<> buf) {
    std::vector<double> out;
    out.reserve(buf.number_of_elements());
    const Type t = buf.type();
    auto take = [&](auto typed) { typed.for_each_value([&](auto v) { out.push_back(static_cast<double>(v)); }); };
    if (t == Float(32)) take(buf.as<float>());
    else if (t == Float(64)) take(buf.as<double>());
    else if (t == Float(16)) take(buf.as<float16_t>());
    else if (t == BFloat(16)) take(buf.as<bfloat16_t>());
    else if (t == UInt(8)) take(buf.as<uint8_t>());
    else throw std::runtime_error("cannot compare outputs of type " + type_to_c_type(t, false));
    return out;
}

// ‖a − b‖ / ‖b‖ (a mask counts as wrong if any byte differs).
double difference(Buffer<> a, Buffer<> b) {
    const std::vector<double> va = values_of(a), vb = values_of(b);
    if (a.type() == UInt(8)) return va == vb ? 0.0 : 1.0;
    double num = 0, den = 0;
    for (size_t i = 0; i < va.size(); i++) {
        num += (va[i] - vb[i]) * (va[i] - vb[i]);
        den += vb[i] * vb[i];
    }
    return std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
}

double tolerance(const std::string& dtype) {
    return dtype == "float32" ? 1e-5 : dtype == "float16" ? 2e-3 : 1.6e-2;
}

// One schedule of one case: its pipeline, inputs bound, outputs allocated.
struct Variant {
    std::string schedule;  // "manual", "saved" or an autoscheduler's name
    AbstractGeneratorPtr generator;
    Pipeline pipeline;
    AutoSchedulerResults results;
    std::vector<Buffer<>> outputs;
    std::vector<double> runs_ms;
    std::optional<double> ms;  // the median run; unset if it failed
    double error = 0;
    std::string failure;  // why it has no time
    std::string note;     // e.g. why it cannot be saved
};

// The autoscheduler plugins are built without unwind tables, so an internal
// error inside one (Adams2019 on the NHWC statistics: "Error: 0 -1 0")
// terminates the process instead of reaching attempt(). Each is therefore
// run once in a child process first; its failure, with the last line it
// wrote to stderr, fails only that variant. (The child only schedules: no
// kernel runs there, so the runtime's thread pool is not involved.)
void autoscheduler_survives(const Pipeline& pipeline, const Target& target, const AutoschedulerParams& asp,
                            const std::string& label) {
    int err[2];
    if (pipe(err) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
        close(err[0]);
        dup2(err[1], STDERR_FILENO);
        // The first error is the one to report: unwinding without unwind
        // tables can raise others (a destructor's), and then terminates.
        struct FirstError : CompileTimeErrorReporter {
            void warning(const char*) override {}
            void error(const char* msg) override {
                std::fprintf(stderr, "%s\n", msg);
                _exit(3);
            }
        };
        static FirstError reporter;
        set_custom_compile_time_error_reporter(&reporter);
        pipeline.apply_autoscheduler(target, asp);
        _exit(0);
    }
    close(err[1]);
    std::string message;
    char chunk[4096];
    for (ssize_t got; (got = read(err[0], chunk, sizeof chunk)) != 0;) {
        if (got > 0) message.append(chunk, static_cast<size_t>(got));
        else if (errno != EINTR) break;
    }
    close(err[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
    // The last non-empty line: the error itself, after any progress output.
    while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
    const size_t newline = message.find_last_of('\n');
    const std::string last = newline == std::string::npos ? message : message.substr(newline + 1);
    const std::string how = WIFSIGNALED(status) ? "crashed (" + std::string(strsignal(WTERMSIG(status))) + ")"
                                                : "failed";
    throw std::runtime_error(label + " " + how + (last.empty() ? "" : ": " + last));
}

class Tuner {
public:
    Tuner(const Options& o, Target target, int parallelism)
        : o_(o), target_(target), parallelism_(parallelism), ncs_(ncs_of(o.shape)) {}

    Variant build(const Case& c, const std::string& schedule) {
        Variant v;
        v.schedule = schedule;
        const bool autoscheduled = schedule != "manual" && schedule != "saved";
        // The tail-guarded registration the AOT build uses too (generators/autoschedule.h).
        const AutoschedulerParams asp =
            autoscheduled ? AutoschedulerParams(bnforge_gen::guarded_autoscheduler(schedule),
                                                {{"parallelism", std::to_string(parallelism_)}})
                          : AutoschedulerParams();
        v.generator = Internal::GeneratorRegistry::create(c.family.generator, GeneratorContext(target_, asp));
        if (!v.generator) throw std::runtime_error("generator " + c.family.generator + " is not linked in");
        std::vector<std::pair<std::string, std::string>> params = {
            {"dtype", o_.dtype}, {"layout", c.layout}, {"est_n", std::to_string(ncs_.n)},
            {"est_c", std::to_string(ncs_.c)}, {"est_s", std::to_string(ncs_.s)}};
        for (const auto& p : split(c.family.params, ' ')) {
            const auto eq = p.find('=');
            params.emplace_back(p.substr(0, eq), p.substr(eq + 1));
        }
        if (schedule == "saved") params.emplace_back("saved_schedule", c.library);
        for (const auto& [name, value] : params) v.generator->set_generatorparam_value(name, value);
        v.pipeline = v.generator->build_pipeline();
        if (autoscheduled) {
            autoscheduler_survives(v.pipeline, target_, asp, schedule);
            v.results = v.pipeline.apply_autoscheduler(target_, asp);
        }
        return v;
    }

    // Binds the case's inputs (the same random data for every schedule) and allocates the outputs.
    void bind(const Case& c, Variant& v) {
        for (const auto& a : v.generator->arginfos()) {
            const std::vector<int> extents = extents_of(a, ncs_, c.layout);
            if (a.dir == Internal::ArgInfoDirection::Input) {
                Buffer<>& in = inputs_[c.library + "/" + a.name];
                if (!in.defined()) {
                    in = Buffer<>(a.types.at(0), extents);
                    fill_random(in, rng_);
                    in.set_host_dirty();  // on a GPU target the first run uploads it
                }
                for (Parameter& p : v.generator->input_parameter(a.name)) p.set_buffer(in);
            } else {
                v.outputs.emplace_back(a.types.at(0), extents);
            }
        }
    }

    // One run of the compiled pipeline, in milliseconds; on a GPU, until its kernels are done.
    double run_ms(Variant& v) {
        Realization r(v.outputs);
        const auto t0 = std::chrono::steady_clock::now();
        v.pipeline.realize(r, target_);
        for (Buffer<>& out : v.outputs) out.device_sync();
        return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }

    void forget_inputs() { inputs_.clear(); }

private:
    const Options& o_;
    Target target_;
    int parallelism_;
    Ncs ncs_;
    std::mt19937 rng_{20240607};
    std::map<std::string, Buffer<>> inputs_;
};

// Halide 21's Anderson2021 writes `auto pipeline = get_pipeline();` into the
// body of apply_schedule_<name>(Pipeline pipeline, Target target): a second
// `pipeline`, which does not compile. The parameter is the same pipeline, so
// the line goes; every other line of the source is Halide's own.
void repair_schedule_source(const fs::path& path) {
    std::ifstream in(path);
    std::string text, line;
    while (std::getline(in, line)) {
        if (line.find("auto pipeline = get_pipeline();") == std::string::npos) text += line + "\n";
    }
    in.close();
    std::ofstream(path) << text;
}

// Halide's own `.schedule.h` text for an autoscheduled pipeline, named after
// the kernel library (so it defines apply_schedule_<library>).
void write_schedule_file(Variant& v, const std::string& library, const Target& target, const fs::path& path) {
    Module m = v.pipeline.compile_to_module(v.pipeline.infer_arguments(), library, target);
    m.set_auto_scheduler_results(v.results);
    m.compile({{OutputFileType::schedule, path.string()}});
    repair_schedule_source(path);
}

// Whether the schedule file compiles as C++. Halide 21's Li2018 emits a
// description rather than code, and Mullapudi2016 sometimes names a loop
// variable it never declares; such a file would break the build.
std::optional<std::string> schedule_file_problem(const fs::path& path) {
    std::string includes;
    for (const auto& dir : split(BNFORGE_HALIDE_INCLUDE, ':')) includes += " -I'" + dir + "'";
    const fs::path log = path.string() + ".log";
    const std::string cmd = std::string("'") + BNFORGE_CXX + "' -std=c++17 -fsyntax-only" + includes + " -include '" +
                            path.string() + "' -x c++ /dev/null > '" + log.string() + "' 2>&1";
    const int rc = std::system(cmd.c_str());
    if (rc == 0) return std::nullopt;
    std::ifstream in(log);
    std::string first;
    for (std::string line; std::getline(in, line);) {
        if (line.find("error") != std::string::npos) {
            first = line.substr(line.find("error"));
            break;
        }
    }
    return "its schedule source does not compile (" + (first.empty() ? "compiler exit " + std::to_string(rc) : first) + ")";
}

std::string format_ms(const std::optional<double>& ms) {
    if (!ms) return "-";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", *ms);
    return buf;
}

void print_table(const Case& c, const Options& o, const std::vector<Variant>& variants, double manual_ms) {
    std::printf("\n%s %s, shape", c.label().c_str(), o.dtype.c_str());
    for (size_t i = 0; i < o.shape.size(); i++) std::printf("%s%lld", i ? "x" : " ", static_cast<long long>(o.shape[i]));
    std::printf(" (%s)\n", c.library.c_str());
    std::printf("  %-14s %10s %10s %12s  %s\n", "schedule", "ms", "vs manual", "rel. diff", "notes");
    for (const Variant& v : variants) {
        char speedup[32] = "-", diff[32] = "-";
        if (v.ms && manual_ms > 0) std::snprintf(speedup, sizeof speedup, "%.2fx", manual_ms / *v.ms);
        if (v.ms && v.schedule != "manual") std::snprintf(diff, sizeof diff, "%.1e", v.error);
        const std::string notes = v.failure.empty() ? v.note : "FAILED: " + v.failure;
        std::printf("  %-14s %10s %10s %12s  %s\n", v.schedule.c_str(), format_ms(v.ms).c_str(), speedup, diff,
                    notes.c_str());
    }
}

bool has_saved_schedule(const std::string& library) {
    for (const auto& s : bnforge_gen::saved_schedules()) {
        if (library == s.name) return true;
    }
    return false;
}

std::string first_line(const std::string& s) {
    const auto nl = s.find('\n');
    return nl == std::string::npos ? s : s.substr(0, nl);
}

// Runs `f`; a Halide or C++ exception marks the variant failed with its message.
template <class F>
bool attempt(Variant& v, F&& f) {
    try {
        f();
        return true;
    } catch (const Halide::Error& e) {
        v.failure = first_line(e.what());
    } catch (const std::exception& e) {
        v.failure = first_line(e.what());
    }
    return false;
}

// Loads the autoscheduler plugins the build knows about (BNFORGE_AUTOSCHEDULER_PLUGINS: name=path,...).
void load_plugins(const std::vector<std::string>& wanted) {
    std::map<std::string, std::string> paths;
    for (const auto& entry : split(BNFORGE_AUTOSCHEDULER_PLUGINS, ',')) {
        const auto eq = entry.find('=');
        paths[entry.substr(0, eq)] = entry.substr(eq + 1);
    }
    for (const auto& s : wanted) {
        if (!paths.count(s)) throw std::runtime_error("no plugin for autoscheduler " + s);
        load_plugin(paths.at(s));
    }
}

int run(const Options& o) {
    Target target(o.target);
    const std::string device = device_of(target);
    // The features of the AOT build (CMakeLists.txt: BNFORGE_*_TARGET, cmake/BnforgeKernels.cmake).
    target = target.with_feature(Target::LargeBuffers);
    if (device == "opencl") {
        if (o.dtype != "float32") usage_error("--dtype: the build's OpenCL kernels are float32 only");
        target = target.with_feature(Target::CLDoubles);
    }
    const std::vector<std::string> schedulers = schedulers_for(o, device);
    const int parallelism = o.parallelism ? o.parallelism : device == "cpu" ? o.threads : kGpuParallelism;
    const std::vector<Case> cases = select_cases(o, device);
    const Ncs ncs = ncs_of(o.shape);

    std::printf("bnforge tune: %zu %s kernel(s), %s, target %s, %d thread(s), median of %d runs\n", cases.size(),
                device.c_str(), o.dtype.c_str(), target.to_string().c_str(), o.threads, o.runs);
    std::printf("estimates N=%d C=%d S=%d, parallelism %d; schedules: manual", ncs.n, ncs.c, ncs.s, parallelism);
    for (const auto& s : schedulers) std::printf(", %s", s.c_str());
    std::printf("; schedules go to %s\n", o.out_dir.c_str());
    if (o.dry_run) {
        for (const Case& c : cases) {
            std::printf("  %-32s -> %s/%s.schedule.h%s\n", c.label().c_str(), o.out_dir.c_str(), c.library.c_str(),
                        has_saved_schedule(c.library) ? " (the build has a saved schedule for it)" : "");
        }
        std::printf("dry run: nothing compiled, nothing written\n");
        return 0;
    }

    // The kernels' thread pool (Halide's JIT runtime reads this on first use).
    setenv("HL_NUM_THREADS", std::to_string(o.threads).c_str(), 1);
    load_plugins(schedulers);
    fs::create_directories(o.out_dir);
    const fs::path scratch = fs::temp_directory_path() / ("bnforge_tune." + std::to_string(getpid()));
    fs::create_directories(scratch);

    int total = 0;
    for (const Case& c : cases) total += 1 + static_cast<int>(has_saved_schedule(c.library)) + schedulers.size();
    Progress progress(total);
    Tuner tuner(o, target, parallelism);
    int status = 0;
    for (const Case& c : cases) {
        std::vector<std::string> schedules = {"manual"};
        if (has_saved_schedule(c.library)) schedules.push_back("saved");
        schedules.insert(schedules.end(), schedulers.begin(), schedulers.end());

        // Build, compile and run each schedule once (its outputs are compared below).
        std::vector<Variant> variants;
        for (const std::string& schedule : schedules) {
            progress.step();
            const std::string what = c.label() + " " + kDtypeTags.at(o.dtype) + ": " + schedule;
            Variant v;
            v.schedule = schedule;
            attempt(v, [&] {
                progress.say(what + (schedule == "manual" || schedule == "saved" ? " building…" : " autoscheduling…"));
                v = tuner.build(c, schedule);
                tuner.bind(c, v);
                progress.say(what + " compiling…");
                v.pipeline.compile_jit(target);
                tuner.run_ms(v);  // also the first-call set-up and page faults, out of the timing
            });
            variants.push_back(std::move(v));
        }
        // Time in rounds, every schedule once a round, so that load from
        // elsewhere on the machine falls on all of them alike.
        for (int round = 0; round < o.runs; round++) {
            progress.say(c.label() + " " + kDtypeTags.at(o.dtype) + ": timing, round " + std::to_string(round + 1) +
                         "/" + std::to_string(o.runs) + "…");
            for (Variant& v : variants) {
                if (v.failure.empty()) attempt(v, [&] { v.runs_ms.push_back(tuner.run_ms(v)); });
            }
        }
        for (Variant& v : variants) {
            if (!v.failure.empty()) continue;
            std::nth_element(v.runs_ms.begin(), v.runs_ms.begin() + v.runs_ms.size() / 2, v.runs_ms.end());
            v.ms = v.runs_ms[v.runs_ms.size() / 2];
            for (Buffer<>& out : v.outputs) out.copy_to_host();  // a GPU's results, for the comparison below
        }
        if (!variants.front().ms) status = 1;
        for (Variant& v : variants) {
            if (!v.ms || &v == &variants.front() || !variants.front().ms) continue;
            for (size_t i = 0; i < v.outputs.size(); i++) {
                v.error = std::max(v.error, difference(v.outputs[i], variants.front().outputs[i]));
            }
            if (v.error > tolerance(o.dtype)) {
                v.failure = "outputs differ from the manual schedule's";
                v.ms.reset();
                status = 1;
            }
        }
        progress.clear();

        // The schedule to beat is what the build uses now: the saved one if any, else manual.
        const Variant& current = variants.size() > 1 && variants[1].schedule == "saved" ? variants[1] : variants[0];
        const double manual_ms = variants[0].ms.value_or(0);
        std::vector<Variant*> candidates;
        for (Variant& v : variants) {
            if (v.ms && &v != &variants[0] && v.schedule != "saved") candidates.push_back(&v);
        }
        std::sort(candidates.begin(), candidates.end(), [](Variant* a, Variant* b) { return *a->ms < *b->ms; });

        std::string verdict;
        if (!current.ms) {
            verdict = "no verdict: the " + current.schedule + " schedule failed";
        } else {
            const fs::path out = fs::path(o.out_dir) / (c.library + ".schedule.h");
            for (Variant* v : candidates) {
                const bool wins = *v->ms * (1 + o.min_gain) < *current.ms;
                if (!wins && !o.force) break;
                progress.say(c.label() + ": checking " + v->schedule + "'s schedule source…");
                const fs::path tmp = scratch / (c.library + ".schedule.h");
                write_schedule_file(*v, c.library, target, tmp);
                if (auto problem = schedule_file_problem(tmp)) {
                    v->note = "not saveable: " + *problem;
                    continue;
                }
                fs::copy_file(tmp, out, fs::copy_options::overwrite_existing);
                v->note = "saved";
                verdict = v->schedule + (wins ? " wins" : " written (--force)") + "; wrote " + out.string();
                break;
            }
            progress.clear();
            if (verdict.empty()) {
                verdict = "the " + current.schedule + " schedule stays (nothing written)";
                if (!candidates.empty() && *candidates.front()->ms * (1 + o.min_gain) < *current.ms) {
                    verdict += ": the faster autoscheduled schedules cannot be saved";
                } else if (!candidates.empty() && *candidates.front()->ms < *current.ms) {
                    verdict += ": " + candidates.front()->schedule + " is faster by less than --min-gain";
                }
            }
            if (current.schedule == "saved" && manual_ms > 0 && manual_ms < *current.ms) {
                verdict += "; note: the manual schedule beats the saved one, consider deleting generators/schedules/" +
                           c.library + ".schedule.h";
            }
        }
        print_table(c, o, variants, manual_ms);
        std::printf("  -> %s\n", verdict.c_str());
        std::fflush(stdout);
        tuner.forget_inputs();
    }
    fs::remove_all(scratch);
    return status;
}

}  // namespace

int main(int argc, char** argv) {
    const Options options = parse_args(argc, argv);
    try {
        return run(options);
    } catch (const Halide::Error& e) {
        std::fprintf(stderr, "\nbnforge tune: %s\n", e.what());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "\nbnforge tune: %s\n", e.what());
    }
    return 1;
}
