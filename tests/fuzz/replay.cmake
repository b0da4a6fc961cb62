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

# Writes the downstream target's seed corpus (tools/make_h2_seeds.cc; not run by ctest).
add_executable(fuzz_make_h2_seeds ${CMAKE_CURRENT_LIST_DIR}/tools/make_h2_seeds.cc)
target_link_libraries(fuzz_make_h2_seeds PRIVATE PkgConfig::NGHTTP2 sepal_warnings)
