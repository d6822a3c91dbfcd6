# Compiler settings shared by every zerodiff target: ccache, warnings.

find_program(ZERODIFF_CCACHE ccache)
if(ZERODIFF_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  # PCH + ccache needs these sloppiness settings (ccache manual, "Precompiled headers").
  set(CMAKE_CXX_COMPILER_LAUNCHER
      ${CMAKE_COMMAND} -E env "CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime"
      ${ZERODIFF_CCACHE})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${ZERODIFF_CCACHE})
  message(STATUS "zerodiff: using ccache ${ZERODIFF_CCACHE}")
endif()

# zerodiff_warnings(<target>): our code is -Wall -Wextra clean; third-party headers come in as SYSTEM.
function(zerodiff_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers>
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall>)
endfunction()
