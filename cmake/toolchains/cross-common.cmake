# What the per-architecture toolchain files share (Debian's multiarch cross
# toolchains): target libraries only from the cross sysroot; headers and
# CMake packages also from the host, for the header-only dependencies
# (nlohmann_json, dlpack) and for the generators exported by the host build;
# programs from the host. Binaries run under qemu-user with the sysroot's
# loader and libraries.
set(CMAKE_FIND_ROOT_PATH ${BNFORGE_CROSS_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-${CMAKE_SYSTEM_PROCESSOR};-L;${BNFORGE_CROSS_SYSROOT})
