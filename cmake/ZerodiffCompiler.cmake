# Compiler settings shared by every zerodiff target: ccache, warnings.

find_program(ZERODIFF_CCACHE ccache)
if(ZERODIFF_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  # PCH + ccache needs these sloppiness settings (ccache manual, "Precompiled headers"). CCACHE_BASEDIR makes
  # paths under the source tree relative in ccache's hash, so a second clone or worktree (CI's clean clone,
  # a git worktree) hits the cache the first one filled, unless the user set a base dir of their own.
  set(_zd_ccache_basedir "${PROJECT_SOURCE_DIR}")
  if(DEFINED ENV{CCACHE_BASEDIR})
    set(_zd_ccache_basedir "$ENV{CCACHE_BASEDIR}")
  endif()
  set(CMAKE_CXX_COMPILER_LAUNCHER
      ${CMAKE_COMMAND} -E env "CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime"
      "CCACHE_BASEDIR=${_zd_ccache_basedir}" ${ZERODIFF_CCACHE})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${CMAKE_COMMAND} -E env "CCACHE_BASEDIR=${_zd_ccache_basedir}" ${ZERODIFF_CCACHE})
  message(STATUS "zerodiff: using ccache ${ZERODIFF_CCACHE}")
endif()

# zerodiff_warnings(<target>): our code is -Wall -Wextra clean; third-party headers come in as SYSTEM.
function(zerodiff_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers>
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall>)
endfunction()

# Unity builds. Every translation unit that sees LibTorch's headers pays about 5.5 s (GCC 12, measured on an empty
# .cpp with the shared PCH) for the template instantiations those headers leave pending at the end of each TU; the
# PCH saves the parsing but not that. Batching a target's sources into unity TUs pays it once per batch
# (docs/development.md has the before/after build times). OFF gives one TU per file: slower cold builds, faster
# incremental rebuilds of a single file.
option(ZERODIFF_UNITY_BUILD "Compile C++ sources in batches (unity build); OFF for fast rebuilds of one file" ON)
set(ZERODIFF_UNITY_BATCH_SIZE 8 CACHE STRING "Sources per unity translation unit (ZERODIFF_UNITY_BUILD=ON)")

# zerodiff_unity(<target>): batch the target's C++ sources when ZERODIFF_UNITY_BUILD is ON.
function(zerodiff_unity target)
  if(ZERODIFF_UNITY_BUILD)
    set_target_properties(${target} PROPERTIES UNITY_BUILD ON UNITY_BUILD_MODE BATCH
                                               UNITY_BUILD_BATCH_SIZE ${ZERODIFF_UNITY_BATCH_SIZE})
    # GCC treats every .cpp of a unity TU as a header and warns when a type from its anonymous namespace is the base
    # of a class there (every TEST_F fixture): correct in a real header, meaningless in a unity TU.
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wno-subobject-linkage>)
    endif()
  endif()
endfunction()

# zerodiff_without_torch(<source>...): sources whose includes never reach LibTorch compile on their own, without
# the LibTorch PCH (about 2 s instead of about 9 s each) and outside the unity batches. Set in the directory of the
# target that compiles them (source properties are per directory).
function(zerodiff_without_torch)
  set_source_files_properties(${ARGN} PROPERTIES SKIP_PRECOMPILE_HEADERS ON SKIP_UNITY_BUILD_INCLUSION ON)
endfunction()
