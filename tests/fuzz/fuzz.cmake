# qumail_fuzz_target(NAME SOURCES src... [LIBS lib...] [INCLUDES dir...]
#                    [SEEDS dir...] [RUNS n] [DRIVER src])
#
# One libFuzzer entry point (LLVMFuzzerTestOneInput), two builds:
#  - with -DQUMAIL_FUZZ=ON (clang): a libFuzzer executable NAME. The top
#    CMakeLists.txt then compiles *every* library with
#    -fsanitize=fuzzer-no-link, so the code under test is instrumented, not
#    only the harness. tests/fuzz/run-fuzz.sh runs each for a set time.
#  - otherwise: NAME_regress, the same entry point with a driver (default
#    common/fuzz_driver.c: the seeds, then RUNS mutated inputs, fixed
#    random seed) and a ctest NAME_regress (label unit): the short run in
#    the test suite, under the suite's ASan/UBSan.
# SEEDS default: the folder's seeds/.
if(NOT COMMAND qumail_fuzz_target)
function(qumail_fuzz_target name)
  cmake_parse_arguments(F "" "RUNS;DRIVER" "SOURCES;LIBS;INCLUDES;SEEDS" ${ARGN})
  if(NOT F_SEEDS)
    set(F_SEEDS ${CMAKE_CURRENT_SOURCE_DIR}/seeds)
  endif()
  if(NOT F_RUNS)
    set(F_RUNS 2000)
  endif()
  if(QUMAIL_FUZZ)
    add_executable(${name} ${F_SOURCES})
    target_link_options(${name} PRIVATE -fsanitize=fuzzer)
    set(target ${name})
    if(NOT TARGET fuzz_all)
      add_custom_target(fuzz_all)
    endif()
    add_dependencies(fuzz_all ${name})
  else()
    if(NOT F_DRIVER)
      set(F_DRIVER ${PROJECT_SOURCE_DIR}/tests/fuzz/common/fuzz_driver.c)
    endif()
    set(target ${name}_regress)
    add_executable(${target} ${F_SOURCES} ${F_DRIVER})
    add_test(NAME ${target} COMMAND ${target} ${F_RUNS} ${F_SEEDS})
    set_tests_properties(${target} PROPERTIES TIMEOUT 120 LABELS unit)
  endif()
  target_link_libraries(${target} PRIVATE ${F_LIBS})
  if(F_INCLUDES)
    target_include_directories(${target} PRIVATE ${F_INCLUDES})
  endif()
endfunction()
endif()
