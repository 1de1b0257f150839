# One helper declares a whole kernel family: a generator built for every
# dtype x layout x fusion, each variant an AOT static library sharing one
# Halide runtime. Every variant also lands in the registry that the runtime
# dispatches from (kernel_registry.inc), so the list of variants lives here
# and only here.
#
#   bnforge_add_kernel_family(PIPELINE <name> GENERATOR <halide generator> [GPU]
#                             [LAYOUTS <layout> ...]
#                             [FUSIONS <label>[|<param>=<value>] ...])
#
# LAYOUTS narrows BNFORGE_LAYOUTS for a family that only pays off in some.
#
# Schedules: each variant is built with its manual schedule for every target
# in BNFORGE_CPU_TARGETS (a fat library) — or with a saved schedule instead,
# when BNFORGE_USE_SAVED_SCHEDULES is ON and generators/schedules/<library>.schedule.h
# exists. The float32 variants are also built once per autoscheduler in
# BNFORGE_AUTOSCHEDULERS, for the single target BNFORGE_AUTOSCHEDULE_TARGET,
# as <library>_<autoscheduler in lower case>, with the chosen schedule
# emitted next to the library (<library>_<autoscheduler>.schedule.h in the build tree).
# float32 only: the autoscheduled libraries are a tuning aid, and three more
# schedules of every dtype would triple the build.
#
# STREAMING_STORES: the family's float32 and bfloat16 CPU variants are also
# built with streaming stores (<library>_streaming, x86 only:
# _bnforge_add_streaming_variant), which the runtime calls for outputs larger
# than the caches (runtime/streaming_stores.cpp).
#
# GPU: a family flagged GPU has a GPU schedule. Each variant is then also
# built for BNFORGE_CUDA_TARGET (bnk_<pipeline>_cuda_..., every dtype) and, in
# float32, for BNFORGE_OPENCL_TARGET (bnk_<pipeline>_opencl_f32_...), and its
# float32 variants once per GPU autoscheduler in BNFORGE_GPU_AUTOSCHEDULERS
# for both (..._anderson2021, ..._li2018; Li2018 for CUDA only, see
# _bnforge_add_gpu_variant). All share the one runtime and land
# in the registry under their device. A saved schedule replaces a GPU
# variant's manual one just as for the CPU (generators/schedules/<library>.schedule.h).


set(_bnforge_dtype_tag_float32 f32)
set(_bnforge_dtype_tag_float16 f16)
set(_bnforge_dtype_tag_bfloat16 bf16)

# Where saved schedules live: the real ones, and the tests' own (see tests/schedules/README.md).
set(BNFORGE_SAVED_SCHEDULE_DIRS ${PROJECT_SOURCE_DIR}/generators/schedules ${PROJECT_SOURCE_DIR}/tests/schedules)

# The autoschedulers Halide ships: three for CPUs, two for GPUs (Li2018 does both).
foreach (scheduler IN LISTS BNFORGE_AUTOSCHEDULERS)
    if (NOT scheduler MATCHES "^(Adams2019|Mullapudi2016|Li2018)$" OR NOT TARGET Halide::${scheduler})
        message(FATAL_ERROR "BNFORGE_AUTOSCHEDULERS: '${scheduler}' is not a CPU autoscheduler of this Halide "
                            "(expected some of Adams2019;Mullapudi2016;Li2018, or empty for none)")
    endif ()
endforeach ()
foreach (scheduler IN LISTS BNFORGE_GPU_AUTOSCHEDULERS)
    if (NOT scheduler MATCHES "^(Anderson2021|Li2018)$" OR NOT TARGET Halide::${scheduler})
        message(FATAL_ERROR "BNFORGE_GPU_AUTOSCHEDULERS: '${scheduler}' is not a GPU autoscheduler of this Halide "
                            "(expected some of Anderson2021;Li2018, or empty for none)")
    endif ()
endforeach ()

# The Halide target features every kernel is built with: the runtime passes a
# user context (its CallContext) and buffers may pass 2 GiB.
set(_bnforge_kernel_features user_context large_buffers)

# One AOT kernel library from the bnforge generators, with what every kernel
# shares: the features the runtime calls them with and the one Halide runtime.
# AUTOSCHEDULER <Halide autoscheduler> schedules it with that plugin's search
# (as bnforge_<name>, which then guards the tails: generators/autoschedule.h)
# and emits the schedule chosen (<name>.schedule.h).
function(bnforge_add_kernel name)
    cmake_parse_arguments(PARSE_ARGV 1 ARG "" "GENERATOR;AUTOSCHEDULER" "TARGETS;PARAMS")
    set(autoschedule "")
    if (ARG_AUTOSCHEDULER)
        set(autoschedule AUTOSCHEDULER bnforge_${ARG_AUTOSCHEDULER} PLUGINS Halide::${ARG_AUTOSCHEDULER}
                         SCHEDULE schedule_file)
    endif ()
    add_halide_library(${name}
                       FROM bnforge_generators
                       GENERATOR ${ARG_GENERATOR}
                       TARGETS ${ARG_TARGETS}
                       FEATURES ${_bnforge_kernel_features}
                       USE_RUNTIME bnforge_halide_runtime
                       ${autoschedule}
                       PARAMS ${ARG_PARAMS})
endfunction()

function(_bnforge_register_kernel pipeline device dtag layout fusion schedule name)
    set_property(GLOBAL APPEND PROPERTY BNFORGE_KERNEL_LIBS ${name})
    set_property(GLOBAL APPEND PROPERTY BNFORGE_KERNEL_REGISTRY
                 "BNFORGE_KERNEL(${pipeline}, ${device}, ${dtag}, ${layout}, ${fusion}, ${schedule}, ${name})")
endfunction()

# The saved-schedule generator param for library `name`, if the build uses one.
function(_bnforge_saved_schedule_param name out)
    set(param "")
    if (BNFORGE_USE_SAVED_SCHEDULES AND EXISTS ${PROJECT_SOURCE_DIR}/generators/schedules/${name}.schedule.h)
        set(param saved_schedule=${name})
        message(STATUS "bnforge: ${name} uses the saved schedule generators/schedules/${name}.schedule.h")
    endif ()
    set(${out} ${param} PARENT_SCOPE)
endfunction()

# One variant of a GPU family on one device (cuda, opencl): the manual (or
# saved) schedule, and in float32 each GPU autoscheduler's.
# ARGN: the generator params; a leading MANUAL_ONLY builds no autoscheduled variants.
function(_bnforge_add_gpu_variant pipeline generator device dtag layout fusion)
    set(autoschedulers ${BNFORGE_GPU_AUTOSCHEDULERS})
    if ("${ARGV6}" STREQUAL "MANUAL_ONLY")
        list(POP_FRONT ARGN)
        set(autoschedulers)
    endif ()
    string(TOUPPER ${device} device_upper)
    set(target ${BNFORGE_${device_upper}_TARGET})
    # OpenCL runs on PoCL in the tests, float32 only.
    if (NOT target OR (device STREQUAL "opencl" AND NOT dtag STREQUAL "f32"))
        return()
    endif ()
    set(name bnk_${pipeline}_${device}_${dtag}_${layout}_${fusion})
    _bnforge_saved_schedule_param(${name} saved)
    bnforge_add_kernel(${name} GENERATOR ${generator} TARGETS ${target} PARAMS ${ARGN} ${saved})
    _bnforge_register_kernel(${pipeline} ${device} ${dtag} ${layout} ${fusion} manual ${name})
    if (dtag STREQUAL "f32")
        foreach (scheduler IN LISTS autoschedulers)
            # Li2018 reduces float64 with atomics, which Halide 21's OpenCL
            # backend writes as a 32-bit atomic_cmpxchg on a 64-bit pointer
            # (PoCL: "call to '_cl_atomic_cmpxchg' is ambiguous"). CUDA has
            # native float64 atomics, so Li2018 builds for CUDA only.
            if (device STREQUAL "opencl" AND scheduler STREQUAL "Li2018")
                continue()
            endif ()
            string(TOLOWER ${scheduler} schedule)
            bnforge_add_kernel(${name}_${schedule} GENERATOR ${generator} TARGETS ${target} AUTOSCHEDULER ${scheduler}
                               PARAMS ${ARGN} autoscheduler.parallelism=${BNFORGE_GPU_SM_COUNT}
                                      ${BNFORGE_GPU_AUTOSCHEDULE_PARAMS})
            _bnforge_register_kernel(${pipeline} ${device} ${dtag} ${layout} ${fusion} ${schedule} ${name}_${schedule})
        endforeach ()
    endif ()
endfunction()

find_package(Python3 REQUIRED COMPONENTS Interpreter)

# The manual kernel `name` again, as ${name}_streaming, with its vector stores
# made non-temporal: Halide 21 cannot emit them (halide/Halide#9207), so the
# generator writes each x86 target's assembly and cmake/streaming_stores.py
# rewrites the stores of its loop bodies before assembling it. The objects
# then form a fat library with Halide's dispatch wrapper, as
# add_halide_library's would. Only x86 targets: elsewhere it adds nothing.
function(_bnforge_add_streaming_variant pipeline generator dtag layout fusion name)
    if (NOT BNFORGE_CPU_TARGETS MATCHES "^x86-64-" OR CMAKE_CROSSCOMPILING)
        return()
    endif ()
    set(lib ${name}_streaming)
    # The targets add_halide_library gives the ordinary kernel: its features, and no runtime of its own.
    list(JOIN _bnforge_kernel_features "-" features)
    set(targets ${BNFORGE_CPU_TARGETS})
    list(TRANSFORM targets APPEND "-${features}-no_runtime")
    set(objects)
    set(pairs)
    foreach (target IN LISTS targets)
        list(APPEND objects ${CMAKE_CURRENT_BINARY_DIR}/${lib}-${target}.o)
        list(APPEND pairs ${lib}-${target}.s:${lib}-${target}.o)
    endforeach ()
    list(JOIN targets "," target_list)
    add_custom_command(
        OUTPUT ${lib}.h ${lib}_wrapper.o ${objects}
        COMMAND bnforge_generators -g ${generator} -n ${lib} -f ${lib} -e c_header,object,assembly -o .
                target=${target_list} ${ARGN}
        COMMAND Python3::Interpreter ${PROJECT_SOURCE_DIR}/cmake/streaming_stores.py --cc ${CMAKE_C_COMPILER} ${pairs}
        DEPENDS bnforge_generators ${PROJECT_SOURCE_DIR}/cmake/streaming_stores.py
        VERBATIM)
    add_library(${lib} STATIC ${objects} ${CMAKE_CURRENT_BINARY_DIR}/${lib}_wrapper.o)
    set_target_properties(${lib} PROPERTIES LINKER_LANGUAGE CXX POSITION_INDEPENDENT_CODE ON)
    target_link_libraries(${lib} INTERFACE bnforge_halide_runtime)
    set_property(GLOBAL APPEND PROPERTY BNFORGE_KERNEL_LIBS ${lib})
    set_property(GLOBAL APPEND PROPERTY BNFORGE_KERNEL_REGISTRY
                 "BNFORGE_STREAMING_KERNEL(${pipeline}, cpu, ${dtag}, ${layout}, ${fusion}, ${lib})")
endfunction()

# BNFORGE_LAYOUTS, restricted to `allowed` (a list) when it is not empty.
function(_bnforge_filter_layouts out allowed)
    set(kept ${BNFORGE_LAYOUTS})
    if (allowed)
        string(REPLACE ";" "|" layout_regex "${allowed}")
        list(FILTER kept INCLUDE REGEX "^(${layout_regex})$")
    endif ()
    set(${out} ${kept} PARENT_SCOPE)
endfunction()

# GPU: also CUDA and OpenCL variants; GPU_MANUAL_ONLY: those with the manual
# schedule only. LAYOUTS restricts the CPU variants, GPU_LAYOUTS the GPU ones.
function(bnforge_add_kernel_family)
    cmake_parse_arguments(PARSE_ARGV 0 ARG "GPU;GPU_MANUAL_ONLY;STREAMING_STORES" "PIPELINE;GENERATOR"
                          "FUSIONS;LAYOUTS;GPU_LAYOUTS")
    if (NOT ARG_FUSIONS)
        set(ARG_FUSIONS none)
    endif ()
    _bnforge_filter_layouts(cpu_layouts "${ARG_LAYOUTS}")
    set(gpu_layouts)
    if (ARG_GPU)
        _bnforge_filter_layouts(gpu_layouts "${ARG_GPU_LAYOUTS}")
    endif ()
    set(layouts ${cpu_layouts} ${gpu_layouts})
    list(REMOVE_DUPLICATES layouts)
    string(REPLACE ";" " " layout_names "${cpu_layouts}")
    # `bnforge tune` autoschedules the GPU variants of families that have autoscheduled ones.
    set(gpu false)
    set(gpu_flavour)
    if (ARG_GPU AND ARG_GPU_MANUAL_ONLY)
        set(gpu_flavour MANUAL_ONLY)
    elseif (ARG_GPU)
        set(gpu true)
    endif ()
    foreach (fusion_spec IN LISTS ARG_FUSIONS)
        # For `bnforge tune`, which builds the same variants in-process.
        set_property(GLOBAL APPEND PROPERTY BNFORGE_KERNEL_FAMILIES
                     "${ARG_PIPELINE}|${ARG_GENERATOR}|${layout_names}|${gpu}|${fusion_spec}")
    endforeach ()
    foreach (dtype IN LISTS BNFORGE_DTYPES)
        set(dtag ${_bnforge_dtype_tag_${dtype}})
        foreach (layout IN LISTS layouts)
            foreach (fusion_spec IN LISTS ARG_FUSIONS)
                string(REPLACE "|" ";" fusion_spec "${fusion_spec}")
                list(POP_FRONT fusion_spec fusion)
                set(name bnk_${ARG_PIPELINE}_cpu_${dtag}_${layout}_${fusion})
                set(params dtype=${dtype} layout=${layout} ${fusion_spec})
                if (layout IN_LIST gpu_layouts)
                    foreach (device IN ITEMS cuda opencl)
                        _bnforge_add_gpu_variant(${ARG_PIPELINE} ${ARG_GENERATOR} ${device} ${dtag} ${layout} ${fusion}
                                                 ${gpu_flavour} ${params})
                    endforeach ()
                endif ()
                if (NOT layout IN_LIST cpu_layouts)
                    continue()
                endif ()

                _bnforge_saved_schedule_param(${name} saved)
                bnforge_add_kernel(${name} GENERATOR ${ARG_GENERATOR} TARGETS ${BNFORGE_CPU_TARGETS}
                                   PARAMS ${params} ${saved})
                _bnforge_register_kernel(${ARG_PIPELINE} cpu ${dtag} ${layout} ${fusion} manual ${name})
                if (ARG_STREAMING_STORES AND dtype MATCHES "^(float32|bfloat16)$" AND NOT saved)
                    _bnforge_add_streaming_variant(${ARG_PIPELINE} ${ARG_GENERATOR} ${dtag} ${layout} ${fusion} ${name}
                                                   ${params})
                endif ()

                if (dtype STREQUAL "float32")
                    foreach (scheduler IN LISTS BNFORGE_AUTOSCHEDULERS)
                        string(TOLOWER ${scheduler} schedule)
                        bnforge_add_kernel(${name}_${schedule} GENERATOR ${ARG_GENERATOR}
                                           TARGETS ${BNFORGE_AUTOSCHEDULE_TARGET} AUTOSCHEDULER ${scheduler}
                                           PARAMS ${params} ${BNFORGE_AUTOSCHEDULE_PARAMS})
                        _bnforge_register_kernel(${ARG_PIPELINE} cpu ${dtag} ${layout} ${fusion} ${schedule}
                                                 ${name}_${schedule})
                    endforeach ()
                endif ()
            endforeach ()
        endforeach ()
    endforeach ()
endfunction()

# A per-channel family: kernels over C values (float32 parameters, float64
# statistics), so no dtype or layout; one library per VARIANTS entry
# ("<label>|<generator params>") and device: the CPU targets (fat), and
# CUDA and OpenCL where configured. A saved schedule replaces a manual one as
# for the batch families. They are not autoscheduled (a few µs over C values)
# and `bnforge tune` leaves them out.
#
#   bnforge_add_channel_family(PIPELINE <name> GENERATOR <generator> VARIANTS <label>|<params> ...)
function(bnforge_add_channel_family)
    cmake_parse_arguments(PARSE_ARGV 0 ARG "" "PIPELINE;GENERATOR" "VARIANTS")
    foreach (spec IN LISTS ARG_VARIANTS)
        string(REPLACE "|" ";" spec "${spec}")
        list(POP_FRONT spec label)
        string(REPLACE " " ";" params "${spec}")
        foreach (device IN ITEMS cpu cuda opencl)
            string(TOUPPER ${device} device_upper)
            set(targets ${BNFORGE_${device_upper}_TARGET})
            if (device STREQUAL "cpu")
                set(targets ${BNFORGE_CPU_TARGETS})
            endif ()
            if (NOT targets)
                continue()
            endif ()
            set(name bnk_${ARG_PIPELINE}_${device}_${label})
            _bnforge_saved_schedule_param(${name} saved)
            bnforge_add_kernel(${name} GENERATOR ${ARG_GENERATOR} TARGETS ${targets} PARAMS ${params} ${saved})
            set_property(GLOBAL APPEND PROPERTY BNFORGE_KERNEL_LIBS ${name})
            set_property(GLOBAL APPEND PROPERTY BNFORGE_KERNEL_REGISTRY
                         "BNFORGE_CHANNEL_KERNEL(${ARG_PIPELINE}, ${device}, ${label}, manual, ${name})")
        endforeach ()
    endforeach ()
endfunction()

# Writes the registry (X-macro lines), one header including every variant,
# and the families for `bnforge tune` (pipeline, generator, fusion, params).
function(bnforge_write_kernel_registry dir)
    get_property(registry GLOBAL PROPERTY BNFORGE_KERNEL_REGISTRY)
    get_property(libs GLOBAL PROPERTY BNFORGE_KERNEL_LIBS)
    get_property(families GLOBAL PROPERTY BNFORGE_KERNEL_FAMILIES)
    list(JOIN registry "\n" lines)
    set(includes "")
    foreach (lib IN LISTS libs)
        string(APPEND includes "#include \"${lib}.h\"\n")
    endforeach ()
    set(family_lines "")
    foreach (family IN LISTS families)
        string(REPLACE "|" ";" family "${family}")
        list(POP_FRONT family pipeline generator layout_names gpu fusion)
        list(JOIN family " " params)
        string(APPEND family_lines
               "BNFORGE_FAMILY(${pipeline}, ${generator}, \"${layout_names}\", ${gpu}, ${fusion}, \"${params}\")\n")
    endforeach ()
    file(CONFIGURE OUTPUT ${dir}/kernel_registry.inc CONTENT "// Generated by CMake: one line per AOT kernel.\n${lines}\n")
    file(CONFIGURE OUTPUT ${dir}/kernel_headers.h CONTENT "// Generated by CMake.\n#pragma once\n${includes}")
    file(CONFIGURE OUTPUT ${dir}/kernel_families.inc
         CONTENT "// Generated by CMake: pipeline, generator, layouts, has a GPU schedule, fusion, generator params of each kernel family member.\n${family_lines}")
endfunction()

# Compiles every saved schedule into the generators: writes `out` (a .cpp)
# including each <dir>/<name>.schedule.h and listing name -> apply_schedule_<name>
# (autoschedule.h). Adding or removing a file re-runs CMake.
function(bnforge_write_saved_schedules out)
    set(globs "")
    foreach (dir IN LISTS BNFORGE_SAVED_SCHEDULE_DIRS)
        list(APPEND globs ${dir}/*.schedule.h)
    endforeach ()
    file(GLOB files CONFIGURE_DEPENDS ${globs})
    set(includes "")
    set(rows "")
    foreach (file IN LISTS files)
        get_filename_component(base ${file} NAME)
        string(REGEX REPLACE "\\.schedule\\.h$" "" name "${base}")
        if (NOT name MATCHES "^[A-Za-z_][A-Za-z0-9_]*$")
            message(FATAL_ERROR "${file}: a saved schedule's name must be a C identifier (the file defines apply_schedule_<name>)")
        endif ()
        string(APPEND includes "#include \"${file}\"\n")
        string(APPEND rows "        {\"${name}\", &apply_schedule_${name}},\n")
    endforeach ()
    file(CONFIGURE OUTPUT ${out} CONTENT "// Generated by CMake from ${BNFORGE_SAVED_SCHEDULE_DIRS}.
#include \"autoschedule.h\"

${includes}
namespace bnforge_gen {

const std::vector<SavedSchedule>& saved_schedules() {
    static const std::vector<SavedSchedule> table = {
${rows}    };
    return table;
}

}  // namespace bnforge_gen
")
endfunction()
