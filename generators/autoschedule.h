// What bnforge adds to Halide's autoschedulers and to saved schedules.
//
// Tails. Autoschedulers split loops with ShiftInwards or RoundUp tails (or
// Auto, which means those), and both assume every extent is at least the
// split factor: a kernel autoscheduled for 256 channels then fails its bounds
// checks on 3 channels ("Output buffer m2 is accessed at -13"). The runtime
// cannot promise sizes, so every autoscheduled or saved schedule is followed
// by guard_tails(), which turns those tails into GuardWithIf: the same loop
// nests and vectors, with a guarded (scalar) last tile instead of a
// constraint on the shape.
//
// Saved schedules: the `.schedule.h` files in generators/schedules/ (see its
// README.md), each defining apply_schedule_<name>(Pipeline, Target). CMake
// compiles every one into the generators and lists it in saved_schedules()
// (saved_schedules.cpp in the build tree); the GeneratorParam
// saved_schedule=<name> applies one instead of the manual schedule.
#pragma once

#include "Halide.h"

#include <string>
#include <vector>

namespace bnforge_gen {

void guard_tails(const Halide::Pipeline& pipeline);

// Halide's autoschedulers (Adams2019, Mullapudi2016, Li2018 for CPUs;
// Anderson2021, Li2018 for GPUs) are also registered as "bnforge_<name>": the
// same search, then guard_tails. Their results name the real autoscheduler.
// Load the real one's plugin first.
std::string guarded_autoscheduler(const std::string& name);

struct SavedSchedule {
    const char* name;  // the file's stem: the kernel library it was tuned for
    void (*apply)(Halide::Pipeline, Halide::Target);
};
const std::vector<SavedSchedule>& saved_schedules();

}  // namespace bnforge_gen
