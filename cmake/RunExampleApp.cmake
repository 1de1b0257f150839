# ctest driver: install the build into a scratch prefix, then configure, build
# and run examples/train_step (and, given MPIEXEC, examples/sync_bn) against it
# as a separate CMake project would. PACKAGE=ON: the same from the build's
# package, cross-compiled (see below).
foreach (var BUILD_DIR SOURCE_DIR WORK_DIR)
    if (NOT ${var})
        message(FATAL_ERROR "${var} is not set")
    endif ()
endforeach ()
file(REMOVE_RECURSE ${WORK_DIR})

function(run)
    execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc)
    if (NOT rc EQUAL 0)
        message(FATAL_ERROR "failed (${rc}): ${ARGV}")
    endif ()
endfunction()

if (PACKAGE)
    # The build's package (bnforge-<version>-<arch>-linux.tar.gz), unpacked as a
    # user would, and the example built against it (cross-compiled with
    # TOOLCHAIN_FILE, if given) and run (under EMULATOR, a command list, if given).
    run(${CMAKE_COMMAND} --build ${BUILD_DIR} --target package)
    file(GLOB tarball ${BUILD_DIR}/dist/bnforge-*-linux.tar.gz)
    file(MAKE_DIRECTORY ${WORK_DIR}/unpacked)
    run(${CMAKE_COMMAND} -E chdir ${WORK_DIR}/unpacked ${CMAKE_COMMAND} -E tar xzf ${tarball})
    file(GLOB prefix ${WORK_DIR}/unpacked/bnforge-*)
    set(toolchain "")
    if (TOOLCHAIN_FILE)
        set(toolchain -DCMAKE_TOOLCHAIN_FILE=${TOOLCHAIN_FILE})
    endif ()
    run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/train_step -B ${WORK_DIR}/build -DCMAKE_BUILD_TYPE=Release
        ${toolchain} -DCMAKE_PREFIX_PATH=${prefix})
    run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
    run(${EMULATOR} ${WORK_DIR}/build/train_step)
    return()
endif ()

run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/prefix)
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/train_step -B ${WORK_DIR}/build -DCMAKE_BUILD_TYPE=Release
    -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run(${WORK_DIR}/build/train_step)

# The data-parallel example against bnforge::distributed, on 2 ranks.
if (MPIEXEC)
    run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/sync_bn -B ${WORK_DIR}/build_sync_bn -DCMAKE_BUILD_TYPE=Release
        -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
    run(${CMAKE_COMMAND} --build ${WORK_DIR}/build_sync_bn)
    run(${MPIEXEC} -n 2 --allow-run-as-root --oversubscribe ${WORK_DIR}/build_sync_bn/sync_bn)
endif ()
