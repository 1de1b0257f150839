#!/usr/bin/env bash
# Runs the libFuzzer harnesses (fuzz/) for as long as asked, each from the
# committed seeds plus the corpus it has grown in the build tree. A crash
# stops that harness and leaves its input as <build>/fuzz/crash-<harness>-*:
# fix the bug, then keep the input as a regression seed in fuzz/corpus/<harness>/.
# Usage: tools/fuzz.sh [build dir] [seconds per harness] [harness ...]
#        (make fuzz FUZZ_SECONDS=600 FUZZ_HARNESSES="safetensors dlpack")
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
seconds=${2:-300}
shift 2 2>/dev/null || shift $#
harnesses=("$@")
((${#harnesses[@]})) || harnesses=(safetensors dlpack state_dict strided)
failed=0
for h in "${harnesses[@]}"; do
    exe=$build/fuzz/bin/fuzz_$h
    [[ -x $exe ]] || { echo "fuzz.sh: $exe is missing (make build, with clang's libFuzzer installed)" >&2; exit 1; }
    mkdir -p "$build/fuzz/corpus/$h"
    echo "== fuzz_$h for ${seconds}s"
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$exe" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$build/fuzz/crash-$h-" "$build/fuzz/corpus/$h" "fuzz/corpus/$h" 2>&1 |
        grep -E '^(#[0-9]+ +DONE|==[0-9]+==|SUMMARY|stat::number_of_executed_units|.*runtime error)' || true
    [[ ${PIPESTATUS[0]} -eq 0 ]] || { echo "== fuzz_$h FOUND A CRASH (see above, and $build/fuzz/crash-$h-*)"; failed=1; }
done
exit $failed
