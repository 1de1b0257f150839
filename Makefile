# Thin wrapper: set up (idempotent), configure, build, run.
#   make demo   — install what is missing, build, run the demo
#   make test   — install what is missing, build, run the whole test suite
#                 (then the aarch64 cross build under qemu: CROSS_ARCHS)
#   make fuzz   — the fuzzers for FUZZ_SECONDS each (default 300)
#   make package — dist/bnforge-<version>-<arch>-linux.tar.gz per architecture
VENV   := .venv
BUILD  ?= build
JOBS   ?= $(shell nproc)
CMAKE  := $(VENV)/bin/cmake
CTEST  := $(VENV)/bin/ctest
PREFIX ?= $(CURDIR)/_install
CMAKE_ARGS ?=

.PHONY: all setup configure build demo test fuzz soak bench install package golden clean
all: build

setup:
	@tools/setup.sh

configure: setup
	@$(CMAKE) -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release \
	    -DHalide_DIR="$$(tools/halide_dir.sh)" $(CMAKE_ARGS) > $(BUILD).configure.log \
	    || { cat $(BUILD).configure.log; exit 1; }

build: configure
	@$(CMAKE) --build $(BUILD) -j $(JOBS)

demo: build
	@$(BUILD)/tools/bnforge_demo

# The other architectures (cmake/toolchains/): each a cross build in
# build-<arch> that runs this build's generators, its tests under qemu-user
# (ctest labels aarch64, riscv64). CROSS_ARCHS= leaves them out;
# CROSS_CMAKE_ARGS go to their configure (CMAKE_ARGS to the host build's).
CROSS_ARCHS ?= aarch64
CROSS_CMAKE_ARGS ?=
cross-%: build
	@$(CMAKE) -S . -B build-$* -G Ninja -DCMAKE_BUILD_TYPE=Release \
	    -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/$*-linux-gnu.cmake -DHalide_DIR="$$(tools/halide_dir.sh)" \
	    -Dbnforge-halide_generators_ROOT=$(CURDIR)/$(BUILD)/cmake $(CROSS_CMAKE_ARGS) > build-$*.configure.log \
	    || { cat build-$*.configure.log; exit 1; }
	@$(CMAKE) --build build-$* -j $(JOBS)

test: build $(CROSS_ARCHS:%=cross-%)
	@$(CTEST) --test-dir $(BUILD) -j $(JOBS) --output-on-failure --timeout 900
	@for arch in $(CROSS_ARCHS); do \
	    $(CTEST) --test-dir build-$$arch -j $(JOBS) --output-on-failure --timeout 1500 || exit 1; \
	done

# The libFuzzer harnesses (fuzz/), each for FUZZ_SECONDS; `make test` runs them for 12 s each.
FUZZ_SECONDS ?= 300
FUZZ_HARNESSES ?=
fuzz: build
	@tools/fuzz.sh $(BUILD) $(FUZZ_SECONDS) $(FUZZ_HARNESSES)

# 10,000 training steps over changing shapes and layouts; fails if resident memory grows after warm-up.
soak: build
	@$(BUILD)/bench/bnforge_soak --steps=10000

# The CPU benchmark against PyTorch and oneDNN (newest PyPI releases, installed
# into .bench/) and the copy floor, in two regimes (inputs rotated past the
# LLC, then one cache-resident buffer); oneDNN's OpenMP build runs in a process
# of its own, next to bnforge again. The autoscheduled kernel sets are timed
# in the DRAM regime only. Then SyncBatchNorm's cost under mpirun
# (bench/sync_bn.sh); writes bench/results/<date>-<machine>.{md,png}.
BENCH_ARGS ?=
BENCH_OUT := $(BUILD)/bench-runs
bench:
	@tools/setup.sh bench
	@$(MAKE) --no-print-directory build
	@rm -rf $(BENCH_OUT) && mkdir -p $(BENCH_OUT)
	@for regime in dram cache; do \
	    impls=; [ $$regime = cache ] && impls=--impls=bnforge,onednn,pytorch; \
	    $(BUILD)/bench/bnforge_bench --regime=$$regime $$impls --benchmark_out=$(BENCH_OUT)/$$regime.json \
	        --benchmark_out_format=json $(BENCH_ARGS) || exit 1; \
	    if [ -x $(BUILD)/bench/bnforge_bench_onednn_omp ]; then \
	        $(BUILD)/bench/bnforge_bench_onednn_omp --regime=$$regime --impls=bnforge,onednn-omp \
	            --benchmark_out=$(BENCH_OUT)/$$regime-onednn-omp.json --benchmark_out_format=json $(BENCH_ARGS) \
	            || exit 1; \
	    fi; \
	done
	@bench/sync_bn.sh $(BUILD) $(BUILD)/sync_bn.md
	@runs=; for f in dram dram-onednn-omp cache cache-onednn-omp; do \
	    [ -f $(BENCH_OUT)/$$f.json ] && runs="$$runs $(BENCH_OUT)/$$f.json"; done; \
	$(VENV)/bin/python bench/report.py $$runs --out-dir bench/results --analysis bench/analysis.md \
	    --section $(BUILD)/sync_bn.md

install: build
	@$(CMAKE) --install $(BUILD) --prefix $(PREFIX)

# dist/bnforge-<version>-<arch>-linux.tar.gz for x86-64 and each of CROSS_ARCHS:
# libbnforge.a, the headers and bnforgeConfig.cmake (README "Targets").
package: build $(CROSS_ARCHS:%=cross-%)
	@for dir in $(BUILD) $(CROSS_ARCHS:%=build-%); do $(CMAKE) --build $$dir --target package || exit 1; done
	@mkdir -p dist && cp $(BUILD)/dist/*.tar.gz $(CROSS_ARCHS:%=build-%/dist/*.tar.gz) dist/ && ls -l dist

# Regenerate the PyTorch golden files (needs Debian's python3-torch).
golden:
	@tools/setup.sh dev
	@tools/make_golden.sh

clean:
	@rm -rf $(BUILD) $(BUILD).configure.log $(CROSS_ARCHS:%=build-%) $(CROSS_ARCHS:%=build-%.configure.log) dist
