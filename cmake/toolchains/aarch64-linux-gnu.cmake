# Cross build for 64-bit ARM Linux with Debian's g++-aarch64-linux-gnu; tests
# run under qemu-aarch64 (qemu-user). The generators come from a host build:
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake \
#         -Dbnforge-halide_generators_ROOT=build/cmake
# (`make cross-aarch64` does both builds). See README "Targets".
set(CMAKE_SYSTEM_PROCESSOR aarch64)
include(${CMAKE_CURRENT_LIST_DIR}/cross-common.cmake)
