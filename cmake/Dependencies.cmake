# Third-party dependencies, all from Debian packages or the CUDA toolkit.
# scripts/install-deps.sh installs them; a missing one fails here with the
# package that provides it.
find_package(Threads REQUIRED)

macro(atomserve_require pkg debian)
  find_package(${pkg} ${ARGN} QUIET)
  if(NOT ${pkg}_FOUND)
    message(FATAL_ERROR "atomserve needs ${pkg} (Debian package: ${debian}); run scripts/install-deps.sh")
  endif()
endmacro()

atomserve_require(absl libabsl-dev CONFIG)
atomserve_require(yaml-cpp libyaml-cpp-dev CONFIG)
atomserve_require(nlohmann_json nlohmann-json3-dev CONFIG)
# prometheus-cpp's CMake config also needs the civetweb binary package and
# libcurl4-openssl-dev to resolve its imported targets.
atomserve_require(prometheus-cpp "prometheus-cpp-dev civetweb libcivetweb-dev libcurl4-openssl-dev" CONFIG)

find_package(PkgConfig REQUIRED)
pkg_check_modules(UCX IMPORTED_TARGET ucx)
if(NOT UCX_FOUND)
  message(FATAL_ERROR "atomserve needs UCX (Debian package: libucx-dev); run scripts/install-deps.sh")
endif()

if(ATOMSERVE_BUILD_TESTS)
  atomserve_require(GTest libgtest-dev)
endif()

# NCCL comes with the CUDA toolkit machines (headers + libnccl).
set(ATOMSERVE_HAVE_NCCL OFF)
if(ATOMSERVE_HAVE_CUDA)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/include)
  find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/lib/x86_64-linux-gnu)
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    set(ATOMSERVE_HAVE_NCCL ON)
    add_library(atomserve_nccl INTERFACE)
    target_include_directories(atomserve_nccl INTERFACE ${NCCL_INCLUDE_DIR})
    target_link_libraries(atomserve_nccl INTERFACE ${NCCL_LIBRARY})
  endif()
  message(STATUS "atomserve: NCCL ${ATOMSERVE_HAVE_NCCL}")
endif()
