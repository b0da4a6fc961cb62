# Included from the top-level CMakeLists.txt when SEPAL_BUILD_FUZZ is on (configure preset
# `fuzz`): every object of that build gets libFuzzer's coverage instrumentation plus ASan and
# UBSan, so the sepal libraries the fuzz targets link are instrumented too. Only the fuzz
# executables link the libFuzzer runtime itself (-fsanitize=fuzzer, tests/fuzz/CMakeLists.txt).
if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "SEPAL_BUILD_FUZZ needs clang (libFuzzer): use `cmake --preset fuzz`")
endif()
add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
                    -fno-omit-frame-pointer)
add_link_options(-fsanitize=address,undefined)
