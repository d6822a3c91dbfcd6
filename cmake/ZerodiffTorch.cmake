# LibTorch discovery.
#
# Order of precedence:
#   1. -DTorch_DIR=<libtorch>/share/cmake/Torch (or the environment variable ZERODIFF_TORCH_DIR);
#   2. the Python interpreter ZERODIFF_PYTHON (default: <source>/.venv/bin/python, made by
#      tools/setup.sh), asked for torch.utils.cmake_prefix_path.
#
# CUDA: the torch==2.11.0 wheel from PyPI is built against CUDA 13.0, the toolkit on our build
# machines. When the local toolkit is another 13.x, the build still compiles: Caffe2's cuda.cmake only
# needs *a* toolkit for headers/nvcc, and our kernels use the runtime API only. When no nvcc exists
# (or ZERODIFF_WITH_CUDA=OFF), no zerodiff kernel is compiled for CUDA; a CUDA-enabled libtorch still
# links and runs on the CPU (Caffe2's config is kept from probing the GPU, see below).

if(NOT DEFINED Torch_DIR AND DEFINED ENV{ZERODIFF_TORCH_DIR})
  set(Torch_DIR "$ENV{ZERODIFF_TORCH_DIR}" CACHE PATH "LibTorch CMake package directory")
endif()

if(NOT Torch_DIR)
  if(NOT ZERODIFF_PYTHON)
    if(EXISTS "${PROJECT_SOURCE_DIR}/.venv/bin/python")
      set(ZERODIFF_PYTHON "${PROJECT_SOURCE_DIR}/.venv/bin/python")
    else()
      find_program(ZERODIFF_PYTHON NAMES python3 python)
    endif()
  endif()
  set(ZERODIFF_PYTHON "${ZERODIFF_PYTHON}" CACHE FILEPATH "Python whose torch provides LibTorch")
  execute_process(
    COMMAND "${ZERODIFF_PYTHON}" -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _zd_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
    ERROR_VARIABLE _zd_torch_err RESULT_VARIABLE _zd_torch_rc)
  if(NOT _zd_torch_rc EQUAL 0)
    message(FATAL_ERROR
      "zerodiff: could not import torch with ${ZERODIFF_PYTHON}:\n${_zd_torch_err}\n"
      "Run `bash tools/setup.sh` (creates .venv with torch==2.11.0), or pass -DTorch_DIR=<libtorch>/share/cmake/Torch.")
  endif()
  list(APPEND CMAKE_PREFIX_PATH "${_zd_torch_prefix}")
endif()


# Caffe2's cuda.cmake appends -gencode flags for a dozen architectures to CMAKE_CUDA_FLAGS (and warns
# that it ignores CMAKE_CUDA_ARCHITECTURES). Our kernels are built for ZERODIFF_CUDA_ARCHITECTURES only:
# hand it the same list and restore our CUDA flags afterwards.
# With a CUDA wheel, Caffe2's config enables its CUDA support even when we build without CUDA, and with
# no arch list it runs a GPU-detection compile (at our C++20, which nvcc rejects): always hand it the list.
if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND NOT TORCH_CUDA_ARCH_LIST)
  set(_zd_arch_list "")
  foreach(_a IN LISTS ZERODIFF_CUDA_ARCHITECTURES)
    string(REGEX REPLACE "^([0-9]+)([0-9])$" "\\1.\\2" _a "${_a}")
    list(APPEND _zd_arch_list "${_a}")
  endforeach()
  set(TORCH_CUDA_ARCH_LIST "${_zd_arch_list}")
endif()
if(NOT ZERODIFF_CUDA_ENABLED AND NOT DEFINED CMAKE_CUDA_STANDARD)
  set(CMAKE_CUDA_STANDARD 17)
endif()
set(_zd_saved_cuda_flags "${CMAKE_CUDA_FLAGS}")
set(_zd_saved_cuda_archs "${CMAKE_CUDA_ARCHITECTURES}")
unset(CMAKE_CUDA_ARCHITECTURES)
find_package(Torch REQUIRED)
set(CMAKE_CUDA_FLAGS "${_zd_saved_cuda_flags}")
set(CMAKE_CUDA_ARCHITECTURES "${_zd_saved_cuda_archs}")
message(STATUS "zerodiff: LibTorch ${Torch_VERSION} from ${TORCH_INSTALL_PREFIX}")

# The torch target carries -D_GLIBCXX_USE_CXX11_ABI and friends in TORCH_CXX_FLAGS; make sure they
# reach every target that links torch, CUDA sources included.
separate_arguments(_zd_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")

# LibTorch is linked by full path, so CMAKE_INSTALL_RPATH_USE_LINK_PATH does not cover it: installed
# libzerodiff and binaries carry its lib dir explicitly (RUNPATH is not inherited by dependents).
list(APPEND CMAKE_INSTALL_RPATH "${TORCH_INSTALL_PREFIX}/lib")
