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
