# Cross build for 64-bit RISC-V Linux with Debian's g++-riscv64-linux-gnu;
# tests run under qemu-riscv64. Used like aarch64-linux-gnu.cmake.
set(CMAKE_SYSTEM_PROCESSOR riscv64)
include(${CMAKE_CURRENT_LIST_DIR}/cross-common.cmake)
