#include "autoschedule.h"

namespace bnforge_gen {

using namespace Halide;

void guard_tails(const Pipeline& pipeline) {
    std::vector<Internal::Function> outputs;
    for (const Func& f : pipeline.outputs()) outputs.push_back(f.function());
    auto guard = [](Internal::StageSchedule schedule) {
        for (Internal::Split& split : schedule.splits()) {
            if (split.split_type == Internal::Split::SplitVar &&
                (split.tail == TailStrategy::Auto || split.tail == TailStrategy::RoundUp ||
                 split.tail == TailStrategy::ShiftInwards)) {
                split.tail = TailStrategy::GuardWithIf;
            }
        }
    };
    for (auto& [name, function] : Internal::build_environment(outputs)) {
        guard(function.definition().schedule());
        for (size_t i = 0; i < function.updates().size(); i++) guard(function.update(static_cast<int>(i)).schedule());
    }
}

std::string guarded_autoscheduler(const std::string& name) { return "bnforge_" + name; }

namespace {

[[maybe_unused]] const bool kRegistered = [] {
    for (const std::string real : {"Adams2019", "Mullapudi2016", "Li2018", "Anderson2021"}) {
        Pipeline::add_autoscheduler(
            guarded_autoscheduler(real),
            [real](const Pipeline& pipeline, const Target& target, const AutoschedulerParams& params,
                   AutoSchedulerResults* results) {
                AutoschedulerParams real_params = params;
                real_params.name = real;
                *results = pipeline.apply_autoscheduler(target, real_params);
                guard_tails(pipeline);
                results->schedule_source +=
                    "// bnforge then turns the ShiftInwards, RoundUp and Auto tails into GuardWithIf "
                    "(guard_tails, generators/autoschedule.h).\n";
            });
    }
    return true;
}();

}  // namespace

}  // namespace bnforge_gen
