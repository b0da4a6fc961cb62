// The effective configuration as JSON, served by the admin server's /config endpoint.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "proxy/config/config.h"

namespace sepal::admin {

// Renders every field of `config` (durations as "1m30s"-style strings the YAML loader
// accepts, capability values embedded as parsed JSON) plus the reload `generation` and
// `loaded_at` (RFC 3339, UTC). Keys keep the YAML schema's names so operators can compare
// the output with their file. Never throws; ends with a newline.
std::string ConfigToJson(const config::Config& config, uint64_t generation,
                         std::chrono::system_clock::time_point loaded_at);

}  // namespace sepal::admin
