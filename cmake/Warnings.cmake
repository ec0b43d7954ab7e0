# Project-wide compile options, applied per target with atomserve_target_options().
function(atomserve_target_options target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter -Wno-sign-compare>)
  if(ATOMSERVE_NATIVE)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-march=native>)
  endif()
  target_compile_options(${target} PRIVATE
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CONFIG:Release>>:-O3 -fno-math-errno>)
  if(ATOMSERVE_HAVE_CUDA)
    target_compile_options(${target} PRIVATE
      $<$<COMPILE_LANGUAGE:CUDA>:-gencode=arch=compute_${ATOMSERVE_CUDA_ARCH},code=sm_${ATOMSERVE_CUDA_ARCH} --expt-relaxed-constexpr -lineinfo>)
  endif()
endfunction()

# atomserve_module(NAME DIR DEPS...) : one library per folder, sources globbed
# from the folder (internal/ included), public headers addressed as
# "folder/header.h" from the repository root.
function(atomserve_module name)
  cmake_parse_arguments(M "" "" "DEPS;EXTRA_SOURCES" ${ARGN})
  file(GLOB_RECURSE srcs CONFIGURE_DEPENDS
       ${CMAKE_CURRENT_SOURCE_DIR}/*.cc)
  list(FILTER srcs EXCLUDE REGEX ".*/cuda/.*")
  add_library(${name} STATIC ${srcs} ${M_EXTRA_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR}/generated)
  target_link_libraries(${name} PUBLIC ${M_DEPS})
  atomserve_target_options(${name})
endfunction()
