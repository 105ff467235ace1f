# The C++ package: `cmake --install build --prefix P` installs
#   P/lib/libcellfuse.so                  every cellfuse library in one shared library (LLVM,
#                                         OpenBLAS and NVRTC stay its private dependencies)
#   P/include/cellfuse/cellfuse.h         the public header, and the headers it includes
#   P/bin/cellfuse                        the command line
#   P/lib/cmake/cellfuse/                 cellfuseConfig.cmake: find_package(cellfuse) gives the
#                                         target cellfuse::cellfuse
# A project that takes cellfuse's sources instead (add_subdirectory, FetchContent) gets the
# same target name, cellfuse::cellfuse, as an alias of the in-tree libraries (CMakeLists.txt).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# The static libraries of the build, whole: the shared library is their union. They are found by
# following cellfuse::cellfuse's links (so a library someone adds is packaged without a change
# here): every cellfuse_* static library it reaches.
set(CELLFUSE_PACKAGED_LIBRARIES "")
function(cellfuse_collect_static_libraries target)
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "INTERFACE_LIBRARY")
    get_target_property(deps ${target} INTERFACE_LINK_LIBRARIES)
  else()
    get_target_property(deps ${target} LINK_LIBRARIES)
  endif()
  foreach(dep IN LISTS deps)
    if(NOT TARGET "${dep}" OR NOT dep MATCHES "^cellfuse_" OR dep IN_LIST CELLFUSE_PACKAGED_LIBRARIES)
      continue()
    endif()
    get_target_property(dep_type ${dep} TYPE)
    if(dep_type STREQUAL "STATIC_LIBRARY")
      list(APPEND CELLFUSE_PACKAGED_LIBRARIES ${dep})
      set(CELLFUSE_PACKAGED_LIBRARIES "${CELLFUSE_PACKAGED_LIBRARIES}" PARENT_SCOPE)
      cellfuse_collect_static_libraries(${dep})
      set(CELLFUSE_PACKAGED_LIBRARIES "${CELLFUSE_PACKAGED_LIBRARIES}" PARENT_SCOPE)
    endif()
  endforeach()
endfunction()
cellfuse_collect_static_libraries(cellfuse)
message(STATUS "cellfuse: libcellfuse.so packs ${CELLFUSE_PACKAGED_LIBRARIES}")

# An empty source: every object comes from the archives linked whole.
file(WRITE "${PROJECT_BINARY_DIR}/cellfuse_shared.cpp" "// libcellfuse.so: the static libraries linked whole (cmake/Install.cmake)\n")
add_library(cellfuse_shared SHARED "${PROJECT_BINARY_DIR}/cellfuse_shared.cpp")
target_link_libraries(cellfuse_shared PRIVATE -Wl,--whole-archive ${CELLFUSE_PACKAGED_LIBRARIES} -Wl,--no-whole-archive)
set_target_properties(cellfuse_shared PROPERTIES OUTPUT_NAME cellfuse EXPORT_NAME cellfuse
                      VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
target_include_directories(cellfuse_shared INTERFACE
                           $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>
                           $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}/cellfuse>)
target_compile_features(cellfuse_shared INTERFACE cxx_std_20)
if(CELLFUSE_HAVE_LLVM)
  target_compile_definitions(cellfuse_shared INTERFACE CELLFUSE_HAVE_LLVM=1)
endif()
if(CELLFUSE_HAVE_CUDA)
  target_compile_definitions(cellfuse_shared INTERFACE CELLFUSE_HAVE_CUDA=1)
  # NVRTC is linked by path: the installed library and CLI find it where the toolkit is.
  set_target_properties(cellfuse_shared cellfuse_cli PROPERTIES INSTALL_RPATH "${CUDAToolkit_LIBRARY_DIR}")
endif()

install(TARGETS cellfuse_shared EXPORT cellfuseTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS cellfuse_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(CODE "set(CELLFUSE_SOURCE_DIR \"${PROJECT_SOURCE_DIR}\")")
install(SCRIPT "${PROJECT_SOURCE_DIR}/cmake/InstallHeaders.cmake")

set(CELLFUSE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/cellfuse)
install(EXPORT cellfuseTargets NAMESPACE cellfuse:: DESTINATION ${CELLFUSE_CMAKE_DIR})
configure_package_config_file("${PROJECT_SOURCE_DIR}/cmake/cellfuseConfig.cmake.in"
                              "${PROJECT_BINARY_DIR}/cellfuseConfig.cmake"
                              INSTALL_DESTINATION ${CELLFUSE_CMAKE_DIR} PATH_VARS CMAKE_INSTALL_BINDIR)
write_basic_package_version_file("${PROJECT_BINARY_DIR}/cellfuseConfigVersion.cmake"
                                 COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/cellfuseConfig.cmake" "${PROJECT_BINARY_DIR}/cellfuseConfigVersion.cmake"
        DESTINATION ${CELLFUSE_CMAKE_DIR})
