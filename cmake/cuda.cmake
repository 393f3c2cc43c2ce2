# CUDA backend. include() it from the top-level CMakeLists after project():
# it enables CUDA and defines the static library `fastattn_cuda` from
# src/cuda/ (kernels in .cu, host side in src/cuda/host/*.cpp), plus the
# kernel drivers when FASTATTN_CUDA_BUILD_DRIVER.
include_guard(GLOBAL)

include(CheckLanguage)
check_language(CUDA)
execute_process(COMMAND ${CMAKE_CUDA_COMPILER} --version OUTPUT_VARIABLE _nvcc_version)
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  # Native code for every family the toolkit supports among Volta (CUDA 12
  # only), Turing, Ampere, Ada and Hopper, plus PTX of the newest for GPUs
  # after it. Kernels without a path for an architecture compile to bodies
  # that trap there; the host never launches them (see cuda/host/fwd_select).
  # Every path is also compiled for every newer architecture, so the Volta and
  # Turing paths can be forced (and tested) on any newer GPU.
  set(_archs "75-real;80-real;86-real;89-real;90a-real;90-virtual")
  if(_nvcc_version MATCHES "release 12\\.")
    list(PREPEND _archs "70-real")
  else()
    message(STATUS "fastattn: no sm_70 (Volta) code: CUDA 13 and newer cannot compile for it, "
                   "a CUDA 12.x toolkit can. The Volta path is still built for the newer "
                   "architectures, where it can be forced for checking.")
  endif()
  set(CMAKE_CUDA_ARCHITECTURES "${_archs}" CACHE STRING "CUDA architectures")
endif()
if(CMAKE_CUDA_ARCHITECTURES MATCHES "(^|;)70" AND NOT _nvcc_version MATCHES "release 12\\.")
  message(FATAL_ERROR "CMAKE_CUDA_ARCHITECTURES includes 70 (Volta), which only a CUDA 12.x "
                      "toolkit can compile for (${CMAKE_CUDA_COMPILER} is not one); use CUDA 12.x "
                      "for Volta, or leave 70 out")
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)

option(FASTATTN_CUDA_PTXAS_VERBOSE "Print ptxas register, spill and shared-memory reports" OFF)
option(FASTATTN_CUDA_BUILD_DRIVER "Build the kernel drivers under bench/cuda/ (flash_sm80_driver, decode_ablation, sm90_ablation, sm90_trace, kv_read_bench)" OFF)

set(_fastattn_root ${CMAKE_CURRENT_LIST_DIR}/..)
file(GLOB_RECURSE FASTATTN_CUDA_SOURCES CONFIGURE_DEPENDS
  ${_fastattn_root}/src/cuda/*.cu ${_fastattn_root}/src/cuda/host/*.cpp)
add_library(fastattn_cuda STATIC ${FASTATTN_CUDA_SOURCES})
target_include_directories(fastattn_cuda
  PUBLIC ${_fastattn_root}/src
  PRIVATE ${_fastattn_root}/include)
set_target_properties(fastattn_cuda PROPERTIES
  CUDA_STANDARD 17  # CMake 3.25 knows no C++20 flag for nvcc; the CUDA sources need only 17
  CUDA_STANDARD_REQUIRED ON
  POSITION_INDEPENDENT_CODE ON)
# No --use_fast_math: it would swap tanhf (softcap), log2f (LSE) and the
# divisions for approximations. The kernels call ex2.approx explicitly where
# the approximation is within fp32 rounding of the result.
target_compile_options(fastattn_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-O3 --expt-relaxed-constexpr>
  $<$<AND:$<COMPILE_LANGUAGE:CUDA>,$<BOOL:${FASTATTN_CUDA_PTXAS_VERBOSE}>>:-Xptxas=-v>)
target_link_libraries(fastattn_cuda PUBLIC CUDA::cudart_static)
# The sm90 path exists only as sm_90a code; the host chooses it only when the
# build holds some.
if(CMAKE_CUDA_ARCHITECTURES MATCHES "(^|;)90a")
  target_compile_definitions(fastattn_cuda PRIVATE FASTATTN_CUDA_SM90A=1)
endif()

# A kernel driver under bench/cuda/: one .cu file, linked to the CUDA
# library; extra arguments are CUDA architectures (default: the build's).
function(fastattn_cuda_driver name)
  add_executable(${name} ${_fastattn_root}/bench/cuda/${name}.cu)
  target_include_directories(${name} PRIVATE ${_fastattn_root}/include)
  set_target_properties(${name} PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
  if(ARGN)
    set_target_properties(${name} PROPERTIES CUDA_ARCHITECTURES "${ARGN}")
  endif()
  target_compile_options(${name} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-O3 --expt-relaxed-constexpr>)
  target_link_libraries(${name} PRIVATE fastattn_cuda)
endfunction()

if(FASTATTN_CUDA_BUILD_DRIVER)
  fastattn_cuda_driver(flash_sm80_driver)
  fastattn_cuda_driver(decode_ablation)
  if(CMAKE_CUDA_ARCHITECTURES MATCHES "(^|;)90a")
    fastattn_cuda_driver(sm90_ablation 90a-real)
    fastattn_cuda_driver(sm90_trace 90a-real)
    fastattn_cuda_driver(kv_read_bench 90a-real)
  endif()
endif()
