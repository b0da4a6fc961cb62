# Finds grpc++/protobuf through pkg-config (Debian 12) and generates C++ from .proto files.
pkg_check_modules(GRPCPP IMPORTED_TARGET grpc++>=1.51)
pkg_check_modules(PROTOBUF IMPORTED_TARGET protobuf>=3.21)
find_program(PROTOC_EXECUTABLE protoc)
find_program(GRPC_CPP_PLUGIN grpc_cpp_plugin)

# sepal_grpc_proto_library(<target> <proto files...>): a static library with the
# generated messages and gRPC stubs; include path is the binary dir root.
function(sepal_grpc_proto_library target)
  set(out_dir "${CMAKE_BINARY_DIR}/generated")
  file(MAKE_DIRECTORY "${out_dir}")
  set(srcs)
  foreach(proto ${ARGN})
    get_filename_component(abs "${proto}" ABSOLUTE)
    file(RELATIVE_PATH rel "${CMAKE_SOURCE_DIR}" "${abs}")
    string(REGEX REPLACE "\\.proto$" "" stem "${rel}")
    set(gen "${out_dir}/${stem}.pb.cc" "${out_dir}/${stem}.pb.h" "${out_dir}/${stem}.grpc.pb.cc"
            "${out_dir}/${stem}.grpc.pb.h")
    add_custom_command(
      OUTPUT ${gen}
      COMMAND ${PROTOC_EXECUTABLE} -I "${CMAKE_SOURCE_DIR}" --cpp_out "${out_dir}"
              --grpc_out "${out_dir}" --plugin=protoc-gen-grpc=${GRPC_CPP_PLUGIN} "${rel}"
      DEPENDS "${abs}"
      WORKING_DIRECTORY "${CMAKE_SOURCE_DIR}"
      COMMENT "protoc ${rel}")
    list(APPEND srcs ${gen})
  endforeach()
  add_library(${target} STATIC ${srcs})
  target_include_directories(${target} PUBLIC "${out_dir}")
  target_link_libraries(${target} PUBLIC PkgConfig::GRPCPP PkgConfig::PROTOBUF)
endfunction()
