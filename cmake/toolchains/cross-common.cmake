# What the per-architecture toolchain files share, for Debian's multiarch
# cross toolchains (<processor>-linux-gnu-g++, sysroot /usr/<processor>-linux-gnu):
# target libraries only from the cross sysroot; headers and CMake packages
# also from the host, for the header-only dependencies (nlohmann_json, dlpack)
# and for the generators exported by the host build; programs from the host.
# Binaries run under qemu-user with the sysroot's loader and libraries.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_C_COMPILER ${CMAKE_SYSTEM_PROCESSOR}-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER ${CMAKE_SYSTEM_PROCESSOR}-linux-gnu-g++)
set(BNFORGE_CROSS_SYSROOT /usr/${CMAKE_SYSTEM_PROCESSOR}-linux-gnu)
set(CMAKE_FIND_ROOT_PATH ${BNFORGE_CROSS_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-${CMAKE_SYSTEM_PROCESSOR};-L;${BNFORGE_CROSS_SYSROOT})
