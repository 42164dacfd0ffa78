# qumail_fuzz_target(NAME SOURCES src... [LIBS lib...] [INCLUDES dir...]
#                    [SEEDS dir-or-file...] [RUNS n] [PREFIXES] [DRIVER src...]
#                    [LABELS label...] [TIMEOUT s])
#
# One libFuzzer entry point (LLVMFuzzerTestOneInput), two builds:
#  - with -DQUMAIL_FUZZ=ON (clang): a libFuzzer executable NAME. The top
#    CMakeLists.txt then compiles *every* library with
#    -fsanitize=fuzzer-no-link, so the code under test is instrumented, not
#    only the harness. tests/fuzz/run-fuzz.sh runs each for a set time.
#  - otherwise: NAME_regress, the same entry point with a driver (default
#    common/fuzz_driver.c: the seeds, with PREFIXES their prefixes too, then
#    RUNS mutated inputs, fixed random seed) and a ctest NAME_regress
#    (labels unit + LABELS, TIMEOUT default 120 s): the short run in the
#    test suite, under the suite's ASan/UBSan.
# SEEDS default: the folder's seeds/. A target's sources may define
# `const char *const fuzz_driver_tokens[]` (NULL-terminated) for the
# driver's token insertions. DRIVER sources replace the default driver; a
# generative target keeps it and adds its generator there, e.g. DRIVER
# common/fuzz_driver.c common/fuzz_token_gen.c (linked only into _regress).
if(NOT COMMAND qumail_fuzz_target)
function(qumail_fuzz_target name)
  cmake_parse_arguments(F "PREFIXES" "RUNS;TIMEOUT" "SOURCES;LIBS;INCLUDES;SEEDS;LABELS;DRIVER"
                        ${ARGN})
  if(NOT F_SEEDS)
    set(F_SEEDS ${CMAKE_CURRENT_SOURCE_DIR}/seeds)
  endif()
  if(NOT DEFINED F_RUNS)
    set(F_RUNS 2000)
  endif()
  if(NOT F_TIMEOUT)
    set(F_TIMEOUT 120)
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
    set(flags "")
    if(F_PREFIXES)
      set(flags -p)
    endif()
    add_test(NAME ${target} COMMAND ${target} ${flags} ${F_RUNS} ${F_SEEDS})
    set(labels unit ${F_LABELS})
    set_tests_properties(${target} PROPERTIES TIMEOUT ${F_TIMEOUT} LABELS "${labels}")
  endif()
  target_link_libraries(${target} PRIVATE ${F_LIBS})
  if(F_INCLUDES)
    target_include_directories(${target} PRIVATE ${F_INCLUDES})
  endif()
endfunction()
endif()
