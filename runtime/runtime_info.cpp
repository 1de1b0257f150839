#include <bnforge/runtime.h>

#include "check.h"
#include "kernels.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <thread>

namespace bnforge {

namespace {
int g_threads = 0;  // 0: Halide's default (one per core, or HL_NUM_THREADS)

// "manual" first, then each schedule the registry has, in registry order.
const std::vector<std::string>& schedule_names() {
    static const std::vector<std::string> names = [] {
        std::vector<std::string> out{"manual"};
        for (const auto& k : detail::kernel_table()) {
            if (std::find(out.begin(), out.end(), k.schedule) == out.end()) out.push_back(k.schedule);
        }
        return out;
    }();
    return names;
}

int schedule_index(const std::string& requested, const char* where) {
    std::string name = requested;
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return std::tolower(ch); });
    const auto& known = schedule_names();
    const auto it = std::find(known.begin(), known.end(), name);
    if (it != known.end()) return static_cast<int>(it - known.begin());
    std::string list;
    for (const auto& s : known) list += (list.empty() ? "" : ", ") + s;
    throw Error(std::string(where) + ": unknown kernel schedule '" + requested + "'; this build has " + list +
                " (autoschedulers come from the CMake options BNFORGE_AUTOSCHEDULERS and BNFORGE_GPU_AUTOSCHEDULERS)");
}

// Index into schedule_names() of the selected schedule; -1 until first used,
// when BNFORGE_KERNEL_SCHEDULE (if set) or "manual" fills it in.
std::atomic<int> g_schedule{-1};

int selected_index() {
    int index = g_schedule.load();
    if (index >= 0) return index;
    const char* env = std::getenv("BNFORGE_KERNEL_SCHEDULE");
    const int initial = env && *env ? schedule_index(env, "BNFORGE_KERNEL_SCHEDULE") : 0;
    g_schedule.compare_exchange_strong(index, initial);  // a concurrent set_kernel_schedule wins
    return g_schedule.load();
}

}  // namespace

namespace detail {
const std::string& selected_kernel_schedule() { return schedule_names()[selected_index()]; }
}  // namespace detail

int set_num_threads(int threads) {
    BNF_CHECK(threads >= 0, "set_num_threads: expected threads >= 0 (0 = one per core), got " << threads);
    const int previous = g_threads;
    // Halide's pool only ever grows: halide_set_num_threads caps the workers it
    // spawns, but workers already spawned keep taking tasks (a 1-thread run
    // measured exactly as fast as a 2-thread one). Fewer threads than before
    // therefore means a fresh pool, respawned at the next parallel kernel.
    const int before = num_threads();
    g_threads = threads;
    if (num_threads() < before) halide_shutdown_thread_pool();
    halide_set_num_threads(threads);
    return previous;
}

int num_threads() {
    if (g_threads > 0) return g_threads;
    // Halide's default: HL_NUM_THREADS, else one per core.
    if (const char* env = std::getenv("HL_NUM_THREADS")) {
        if (const int n = std::atoi(env); n > 0) return n;
    }
    return std::max(1u, std::thread::hardware_concurrency());
}

std::vector<KernelVariant> kernel_variants() {
    std::vector<KernelVariant> out;
    for (const auto& k : detail::kernel_table()) {
        out.push_back({k.name, detail::to_string(k.pipeline), Device{k.device, 0}, k.dtype, k.layout,
                       detail::to_string(k.fusion), k.schedule, k.target(), k.variant});
    }
    return out;
}

void set_kernel_schedule(const std::string& schedule) {
    g_schedule.store(schedule_index(schedule, "set_kernel_schedule"));
}

std::string kernel_schedule() { return detail::selected_kernel_schedule(); }

std::vector<std::string> kernel_schedules() { return schedule_names(); }

std::vector<std::string> kernel_schedules(Device device) {
    std::vector<std::string> out;
    const auto& table = detail::kernel_table();
    for (const auto& name : schedule_names()) {
        if (std::any_of(table.begin(), table.end(),
                        [&](const detail::KernelEntry& k) { return k.device == device.kind && k.schedule == name; })) {
            out.push_back(name);
        }
    }
    return out;
}

}  // namespace bnforge
