# ctest driver: install the build into a scratch prefix, then configure, build
# and run examples/train_step (and, given MPIEXEC, examples/sync_bn) against it
# as a separate CMake project would.
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
