# Cross build for 64-bit RISC-V Linux with Debian's g++-riscv64-linux-gnu;
# tests run under qemu-riscv64. Used like aarch64-linux-gnu.cmake.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR riscv64)
set(CMAKE_C_COMPILER riscv64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER riscv64-linux-gnu-g++)
set(BNFORGE_CROSS_SYSROOT /usr/riscv64-linux-gnu)
include(${CMAKE_CURRENT_LIST_DIR}/cross-common.cmake)
