// What this binary is: version, git commit and build type (for --version and sepal_build_info).
#pragma once

#include <string_view>

namespace sepal {

// The project version (CMake's PROJECT_VERSION).
std::string_view BuildVersion();
// The git commit the binary was built from ("<12 hex digits>", "-dirty" appended when
// tracked files had changes, or "unknown" outside a git checkout).
std::string_view BuildCommit();
// CMAKE_BUILD_TYPE at configure time (Release, RelWithDebInfo, Debug, ...).
std::string_view BuildType();

}  // namespace sepal
