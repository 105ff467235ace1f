# Detects the optional components. Each one that is asked for but missing is switched off with a
# message, so a plain configure works on any machine; cellfuse_report_components() prints the result.
set(CELLFUSE_HAVE_LLVM OFF)
set(CELLFUSE_HAVE_CUDA OFF)
set(CELLFUSE_HAVE_PYTHON OFF)

if(CELLFUSE_WITH_LLVM)
  # Debian's LLVM 14 is the default even where newer ones are installed (-DLLVM_DIR picks another).
  find_package(LLVM CONFIG QUIET HINTS /usr/lib/llvm-14/lib/cmake/llvm)
  if(LLVM_FOUND AND TARGET LLVM)
    set(CELLFUSE_HAVE_LLVM ON)
    separate_arguments(LLVM_DEFINITIONS_LIST NATIVE_COMMAND ${LLVM_DEFINITIONS})
    # What the CPU backend links: the shared libLLVM, or with CELLFUSE_STATIC_DEPS the static
    # component libraries it uses (ORC JIT, the host's code generator, the optimization passes),
    # and the static OpenBLAS (runtime/cpu finds CELLFUSE_OPENBLAS already set).
    if(CELLFUSE_STATIC_DEPS)
      llvm_map_components_to_libnames(CELLFUSE_LLVM_LIBRARIES orcjit native passes)
      get_target_property(core_location LLVMCore LOCATION)
      if(NOT EXISTS "${core_location}")
        message(FATAL_ERROR "cellfuse: CELLFUSE_STATIC_DEPS needs LLVM's static libraries, and "
                "${core_location} is not there. Install them (Debian/Ubuntu: llvm-14-dev has them), "
                "or build against the shared libLLVM: pip install . -Ccmake.define.CELLFUSE_STATIC_DEPS=OFF "
                "(the wheel then needs LLVM on the machine it is installed on)")
      endif()
      find_library(CELLFUSE_OPENBLAS NAMES libopenblas.a REQUIRED)
      find_package(Threads REQUIRED)
    else()
      set(CELLFUSE_LLVM_LIBRARIES LLVM)
    endif()
  else()
    message(STATUS "cellfuse: LLVM not found; the CPU JIT backend is off")
  endif()
endif()

if(CELLFUSE_WITH_CUDA)
  find_package(CUDAToolkit QUIET)
  # NVRTC is linked; the driver and cuBLAS are loaded at run time, so only the headers of cuda.h
  # and cublas_api.h are needed (no libcuda: the build works on machines without a GPU).
  if(CUDAToolkit_FOUND AND TARGET CUDA::nvrtc)
    find_path(CELLFUSE_CUBLAS_INCLUDE cublas_api.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
    if(CELLFUSE_CUBLAS_INCLUDE)
      set(CELLFUSE_HAVE_CUDA ON)
    else()
      message(STATUS "cellfuse: the CUDA toolkit has no cuBLAS headers; the CUDA backend is off")
    endif()
  else()
    message(STATUS "cellfuse: CUDA toolkit (NVRTC) not found; the CUDA backend is off")
  endif()
endif()

if(CELLFUSE_WITH_PYTHON)
  # pybind11 through CMake's FindPython (what scikit-build-core hands the interpreter to).
  set(PYBIND11_FINDPYTHON ON)
  find_package(Python COMPONENTS Interpreter Development.Module QUIET)
  find_package(pybind11 CONFIG QUIET)
  if(Python_FOUND AND pybind11_FOUND)
    set(CELLFUSE_HAVE_PYTHON ON)
  else()
    message(STATUS "cellfuse: pybind11 not found; the Python module is off")
  endif()
endif()

function(cellfuse_report_components)
  message(STATUS "cellfuse components:")
  message(STATUS "  reference interpreter : ON")
  if(CELLFUSE_HAVE_LLVM)
    message(STATUS "  CPU backend (LLVM)    : ON (LLVM ${LLVM_PACKAGE_VERSION})")
  else()
    message(STATUS "  CPU backend (LLVM)    : OFF")
  endif()
  if(CELLFUSE_HAVE_CUDA)
    message(STATUS "  CUDA backend (NVRTC)  : ON (CUDA ${CUDAToolkit_VERSION})")
  else()
    message(STATUS "  CUDA backend (NVRTC)  : OFF")
  endif()
  message(STATUS "  Python module         : ${CELLFUSE_HAVE_PYTHON}")
  if(CELLFUSE_STATIC_DEPS)
    message(STATUS "  LLVM and OpenBLAS     : static (${CELLFUSE_OPENBLAS})")
  endif()
  message(STATUS "  tests ${CELLFUSE_BUILD_TESTS}, benchmarks ${CELLFUSE_BUILD_BENCH}, sanitizers ${CELLFUSE_SANITIZE}, fuzzers ${CELLFUSE_FUZZ}")
endfunction()
