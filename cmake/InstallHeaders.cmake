# Run at install time (cmake/Install.cmake): installs include/cellfuse/cellfuse.h and every project
# header it includes, directly or not, under <prefix>/include/cellfuse/ with their paths kept
# (compiler/ir/graph.h -> include/cellfuse/compiler/ir/graph.h). Following the includes, rather
# than listing files, keeps the installed set right when the internals move.
#   CELLFUSE_SOURCE_DIR   the source tree
set(destination "${CMAKE_INSTALL_PREFIX}/include/cellfuse")
if(DEFINED ENV{DESTDIR})
  set(destination "$ENV{DESTDIR}${destination}")
endif()
file(INSTALL "${CELLFUSE_SOURCE_DIR}/include/cellfuse/cellfuse.h" DESTINATION "${destination}")

set(pending "${CELLFUSE_SOURCE_DIR}/include/cellfuse/cellfuse.h")
set(seen "")
while(pending)
  list(POP_FRONT pending file)
  file(STRINGS "${file}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"")
  foreach(line IN LISTS lines)
    string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*\"([^\"]+)\".*$" "\\1" header "${line}")
    list(FIND seen "${header}" index)
    if(NOT index EQUAL -1)
      continue()
    endif()
    list(APPEND seen "${header}")
    if(NOT EXISTS "${CELLFUSE_SOURCE_DIR}/${header}")
      message(FATAL_ERROR "cellfuse install: ${file} includes \"${header}\", not found under ${CELLFUSE_SOURCE_DIR}")
    endif()
    get_filename_component(subdir "${header}" DIRECTORY)
    file(INSTALL "${CELLFUSE_SOURCE_DIR}/${header}" DESTINATION "${destination}/${subdir}")
    list(APPEND pending "${CELLFUSE_SOURCE_DIR}/${header}")
  endforeach()
endwhile()
