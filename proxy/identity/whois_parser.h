// Turns the JSON body of tailscaled's `GET /localapi/v0/whois` into a PeerIdentity.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "proxy/identity/identity.h"

namespace sepal::identity {

// Tolerant of every format tailscaled has produced (samples in tests/fixtures/whois): field
// order and unknown fields do not matter, `CapMap` may be null or absent, IDs may exceed
// 2^53 (they are not used). Fails on bodies that are not a WhoIs answer: not JSON, no
// `Node`/`UserProfile` object, or a field sepal uses with the wrong type.
absl::StatusOr<PeerIdentity> ParseWhoIsResponse(std::string_view body);

}  // namespace sepal::identity
