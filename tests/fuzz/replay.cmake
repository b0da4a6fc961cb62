# Included from tests/CMakeLists.txt: each fuzz target's source linked with replay_main.cc
# (no libFuzzer, any compiler) and run by ctest over its committed corpus and reproducers
# (label `fuzz`), so every normal build re-checks every input that ever found a bug.
include(${CMAKE_CURRENT_LIST_DIR}/targets.cmake)
foreach(target IN LISTS SEPAL_FUZZ_TARGETS)
  sepal_fuzz_executable(${target}_fuzz_replay ${target} ${CMAKE_CURRENT_LIST_DIR}/replay_main.cc)
  add_test(NAME fuzz_replay_${target}
           COMMAND ${target}_fuzz_replay ${CMAKE_CURRENT_LIST_DIR}/corpus/${target}
                   ${CMAKE_CURRENT_LIST_DIR}/reproducers/${target})
  set_tests_properties(fuzz_replay_${target} PROPERTIES LABELS fuzz TIMEOUT 60)
endforeach()
