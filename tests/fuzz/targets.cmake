# The fuzz targets, one line each: name, sources (in this folder), sepal libraries. Used by
# CMakeLists.txt here (libFuzzer executables, fuzz build) and by replay.cmake (the same
# sources linked with replay_main.cc and registered with ctest, every build with tests).
set(SEPAL_FUZZ_TARGETS config proxy_protocol whois localapi downstream grpc_adapter rest)
set(SEPAL_FUZZ_config_SOURCES config_fuzzer.cc)
set(SEPAL_FUZZ_config_LIBS sepal_config)
set(SEPAL_FUZZ_proxy_protocol_SOURCES proxy_protocol_fuzzer.cc)
set(SEPAL_FUZZ_proxy_protocol_LIBS sepal_core)
set(SEPAL_FUZZ_whois_SOURCES whois_fuzzer.cc)
set(SEPAL_FUZZ_whois_LIBS sepal_identity)
set(SEPAL_FUZZ_localapi_SOURCES localapi_fuzzer.cc)
set(SEPAL_FUZZ_localapi_LIBS sepal_identity)
set(SEPAL_FUZZ_downstream_SOURCES downstream_fuzzer.cc fake_h2_upstream.cc)
set(SEPAL_FUZZ_downstream_LIBS sepal_core)
set(SEPAL_FUZZ_grpc_adapter_SOURCES grpc_adapter_fuzzer.cc)
set(SEPAL_FUZZ_grpc_adapter_LIBS sepal_filters)
set(SEPAL_FUZZ_rest_SOURCES rest_fuzzer.cc fake_http1_upstream.cc)
set(SEPAL_FUZZ_rest_LIBS sepal_core)

# sepal_fuzz_executable(<executable> <target> [extra sources...]): the target's sources and
# libraries, warnings as for the rest of sepal.
function(sepal_fuzz_executable executable target)
  list(TRANSFORM SEPAL_FUZZ_${target}_SOURCES PREPEND ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/
       OUTPUT_VARIABLE sources)
  add_executable(${executable} ${sources} ${ARGN})
  target_link_libraries(${executable} PRIVATE ${SEPAL_FUZZ_${target}_LIBS} sepal_warnings)
  target_include_directories(${executable} PRIVATE ${PROJECT_SOURCE_DIR})
endfunction()
