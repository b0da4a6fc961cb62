# sepal_tls_certs: the node's certificate from tailscaled (LocalAPI /status + /cert), checked
# with OpenSSL and renewed before expiry; the source behind `tls: {source: tailscale}`.
# Included from proxy/CMakeLists.txt; kept apart from the TLS data path's own targets.
add_library(sepal_tls_certs STATIC ${CMAKE_CURRENT_LIST_DIR}/tailscale_cert_source.cc)
target_include_directories(sepal_tls_certs PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(sepal_tls_certs
  PUBLIC sepal_identity sepal_metrics Boost::json Boost::headers OpenSSL::SSL OpenSSL::Crypto
  PRIVATE sepal_warnings)
