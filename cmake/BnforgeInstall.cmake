# The installed package is one self-contained static library: the runtime,
# every AOT kernel and the Halide runtime merged into libbnforge.a, so an app
# needs neither Halide nor bnforge's build tree — only find_package(bnforge).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

get_property(kernel_libs GLOBAL PROPERTY BNFORGE_KERNEL_LIBS)
set(package_dir ${PROJECT_BINARY_DIR}/package)
set(merged ${package_dir}/libbnforge.a)
set(mri "CREATE ${merged}\nADDLIB $<TARGET_FILE:bnforge>\nADDLIB $<TARGET_FILE:bnforge_halide_runtime>\n")
set(merge_depends bnforge bnforge_halide_runtime)
foreach (lib IN LISTS kernel_libs)
    string(APPEND mri "ADDLIB $<TARGET_FILE:${lib}>\n")
    list(APPEND merge_depends ${lib})
endforeach ()
string(APPEND mri "SAVE\nEND\n")
file(GENERATE OUTPUT ${package_dir}/merge.mri CONTENT "${mri}")

add_custom_command(OUTPUT ${merged}
                   COMMAND ${CMAKE_COMMAND} -E rm -f ${merged}
                   COMMAND ${CMAKE_AR} -M < ${package_dir}/merge.mri
                   DEPENDS ${merge_depends} ${package_dir}/merge.mri
                   COMMENT "Merging the runtime and the kernels into libbnforge.a"
                   VERBATIM)
add_custom_target(bnforge_package ALL DEPENDS ${merged})

# Process groups and SyncBatchNorm (MPI, and NCCL when built): a second
# archive, bnforge::distributed, for the applications that distribute.
set(BNFORGE_INSTALL_NCCL_LIBRARY "")
if (TARGET bnforge_distributed)
    install(FILES $<TARGET_FILE:bnforge_distributed> DESTINATION ${CMAKE_INSTALL_LIBDIR}
            RENAME libbnforge_distributed.a)
    if (bnforge_nccl)
        set(BNFORGE_INSTALL_NCCL_LIBRARY ${NCCL_LIBRARY})
    endif ()
endif ()
set(config_dir ${CMAKE_INSTALL_LIBDIR}/cmake/bnforge)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/bnforgeConfig.cmake.in
                              ${package_dir}/bnforgeConfig.cmake
                              INSTALL_DESTINATION ${config_dir}
                              PATH_VARS CMAKE_INSTALL_INCLUDEDIR CMAKE_INSTALL_LIBDIR)
write_basic_package_version_file(${package_dir}/bnforgeConfigVersion.cmake COMPATIBILITY SameMinorVersion)

install(FILES ${merged} DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/bnforge DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${package_dir}/bnforgeConfig.cmake ${package_dir}/bnforgeConfigVersion.cmake DESTINATION ${config_dir})

# A package per target architecture (make package, or the `package` target of
# any build, host or cross): bnforge-<version>-<arch>-linux.tar.gz with what
# `make install` puts in a prefix — libbnforge.a, the headers, bnforgeConfig.cmake
# (and libbnforge_distributed.a where MPI was built).
set(CPACK_GENERATOR TGZ)
set(CPACK_PACKAGE_NAME bnforge)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_FILE_NAME bnforge-${PROJECT_VERSION}-${CMAKE_SYSTEM_PROCESSOR}-linux)
set(CPACK_PACKAGE_DIRECTORY ${PROJECT_BINARY_DIR}/dist)
include(CPack)
