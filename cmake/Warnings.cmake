# Warnings on for every cellfuse target; sanitizers when asked.
add_library(cellfuse_options INTERFACE)
target_compile_options(cellfuse_options INTERFACE -Wall -Wextra -Wpedantic -Wshadow -Wconversion
                       -Wno-sign-conversion -Wnon-virtual-dtor -Wold-style-cast)
# GCC 12 reports -Wrestrict inside libstdc++ for `"literal" + std::string` (GCC bug 105651), a
# false positive in the standard library, not in our code.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  target_compile_options(cellfuse_options INTERFACE -Wno-restrict)
endif()
if(CELLFUSE_WERROR)
  target_compile_options(cellfuse_options INTERFACE -Werror)
endif()
if(CELLFUSE_SANITIZE)
  target_compile_options(cellfuse_options INTERFACE -fsanitize=address,undefined
                         -fno-sanitize-recover=all -fno-omit-frame-pointer)
  target_link_options(cellfuse_options INTERFACE -fsanitize=address,undefined)
endif()
if(CELLFUSE_TSAN)
  target_compile_options(cellfuse_options INTERFACE -fsanitize=thread -fno-omit-frame-pointer -g)
  target_link_options(cellfuse_options INTERFACE -fsanitize=thread)
endif()
# The fuzz build (clang only): coverage instrumentation for libFuzzer plus ASan and UBSan on every
# cellfuse target; the fuzz targets themselves add -fsanitize=fuzzer at link time.
if(CELLFUSE_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "CELLFUSE_FUZZ needs clang: configure with "
                        "-DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang")
  endif()
  target_compile_options(cellfuse_options INTERFACE -fsanitize=fuzzer-no-link,address,undefined
                         -fno-sanitize-recover=all -fno-omit-frame-pointer -g)
  target_link_options(cellfuse_options INTERFACE -fsanitize=address,undefined)
endif()
