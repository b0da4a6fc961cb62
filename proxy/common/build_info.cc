// Version and build type, fixed at configure time; the commit comes from a generated file.
#include "proxy/common/build_info.h"

#include "proxy/version.h"

namespace sepal {

std::string_view BuildVersion() { return SEPAL_VERSION; }
std::string_view BuildType() { return SEPAL_BUILD_TYPE; }

}  // namespace sepal
