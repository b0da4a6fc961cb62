// Fuzz target: tailscaled's WhoIs JSON body → ParseWhoIsResponse → PeerIdentity or an error.
//
// Invariants: an error has a message; an identity's capabilities_json (sent upstream as
// tailscale-app-capabilities) is a compact JSON object whose keys are exactly the parsed
// capabilities, sorted, with one grant per value of each list; the FQDN and the tags come
// from the body as written; parsing is deterministic.
#include <boost/json.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/identity/whois_parser.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using sepal::identity::PeerIdentity;

void CheckCapabilities(const PeerIdentity& identity) {
  boost::system::error_code ec;
  boost::json::value parsed = boost::json::parse(identity.capabilities_json, ec);
  FUZZ_CHECK(!ec && parsed.is_object(), identity.capabilities_json);
  const boost::json::object& object = parsed.as_object();
  FUZZ_CHECK(object.size() == identity.capabilities.size(), identity.capabilities_json);
  // (Not checked: that re-serializing gives the same text. Boost.JSON 1.81 reads numbers
  // beyond double precision imprecisely, so such a value changes on each round trip.)
  std::string_view previous;
  bool first = true;
  for (const auto& entry : object) {
    std::string_view name(entry.key().data(), entry.key().size());
    FUZZ_CHECK(first || previous < name, "capabilities_json is sorted by name");
    first = false;
    previous = name;
    auto grants = identity.capabilities.find(std::string(name));
    FUZZ_CHECK(grants != identity.capabilities.end(), name);
    size_t values = entry.value().is_array() ? entry.value().as_array().size() : 0;
    FUZZ_CHECK(entry.value().is_array() || entry.value().is_null(), name);
    FUZZ_CHECK(grants->second.size() == values, "one grant per capability value");
  }
}

bool SameIdentity(const PeerIdentity& a, const PeerIdentity& b) {
  return a.node_name == b.node_name && a.node_fqdn == b.node_fqdn &&
         a.user_login == b.user_login && a.tags == b.tags &&
         a.capabilities_json == b.capabilities_json && a.capabilities.size() == b.capabilities.size();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<PeerIdentity> identity = sepal::identity::ParseWhoIsResponse(body);
  absl::StatusOr<PeerIdentity> again = sepal::identity::ParseWhoIsResponse(body);
  FUZZ_CHECK(identity.ok() == again.ok(), "deterministic");
  if (!identity.ok()) {
    FUZZ_CHECK(!identity.status().message().empty(), "an error has a message");
    FUZZ_CHECK(identity.status() == again.status(), "the same error twice");
    return 0;
  }
  FUZZ_CHECK(SameIdentity(*identity, *again), "the same identity twice");
  CheckCapabilities(*identity);
  FUZZ_CHECK(!identity->Describe().empty(), "a description");
  FUZZ_CHECK(identity->tagged() == !identity->tags.empty(), "tagged iff tags");
  // Each field sepal uses is a string from the body (JSON-unescaped), so never longer.
  FUZZ_CHECK(identity->node_fqdn.size() <= size && identity->user_login.size() <= size,
             "fields come from the body");
  FUZZ_CHECK(identity->node_name.size() <= size, "node name comes from the body");
  return 0;
}
