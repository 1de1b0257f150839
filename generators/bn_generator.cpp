#include "bn_generator.h"

#include <cstdlib>

namespace bnforge_gen {

void apply_saved_schedule(const std::string& name, const Pipeline& pipeline, const Target& target) {
    std::string known;
    for (const SavedSchedule& s : saved_schedules()) {
        if (name == s.name) {
            s.apply(pipeline, target);
            guard_tails(pipeline);
            return;
        }
        known += std::string(known.empty() ? "" : ", ") + s.name;
    }
    throw CompileError("saved_schedule=" + name + ": no generators/schedules/" + name +
                       ".schedule.h was compiled into this generator (saved schedules: " +
                       (known.empty() ? "none" : known) + ")");
}

void permit_estimate_unrolls() { setenv("HL_PERMIT_FAILED_UNROLL", "1", 0); }

void cpu_only_pipeline(const std::string& generator) {
    throw CompileError(generator + " is a CPU pipeline (one pass per L2-resident channel slab); "
                       "GPU builds use the two-pass pipelines");
}

}  // namespace bnforge_gen
