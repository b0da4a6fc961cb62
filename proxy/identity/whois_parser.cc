// WhoIs body parser: reads only the fields sepal needs, ignoring everything else.
#include "proxy/identity/whois_parser.h"

#include <algorithm>
#include <boost/json.hpp>
#include <utility>
#include <vector>

#include "proxy/common/strings.h"

namespace sepal::identity {
namespace {

std::string_view View(const boost::json::string& text) { return {text.data(), text.size()}; }

absl::Status FieldError(std::string_view path, std::string_view expected) {
  return absl::InvalidArgumentError(StrCat("WhoIs field ", path, " is not ", expected));
}

// Absent and null read as "" (newer tailscaled omits zero values); other types are errors.
absl::Status ReadString(const boost::json::object& object, std::string_view path,
                        std::string_view key, std::string* out) {
  const boost::json::value* value = object.if_contains(key);
  if (value == nullptr || value->is_null()) return absl::OkStatus();
  const boost::json::string* text = value->if_string();
  if (text == nullptr) return FieldError(StrCat(path, ".", key), "a string");
  out->assign(text->data(), text->size());
  return absl::OkStatus();
}

// Tags decide whether a node is tagged, so a malformed list fails the lookup rather than
// quietly making a tagged node look user-owned.
absl::Status ReadTags(const boost::json::object& node, std::vector<std::string>* tags) {
  const boost::json::value* value = node.if_contains("Tags");
  if (value == nullptr || value->is_null()) return absl::OkStatus();
  const boost::json::array* list = value->if_array();
  if (list == nullptr) return FieldError("Node.Tags", "a list");
  for (const boost::json::value& tag : *list) {
    const boost::json::string* text = tag.if_string();
    if (text == nullptr) return FieldError("Node.Tags", "a list of strings");
    tags->emplace_back(View(*text));
  }
  return absl::OkStatus();
}

// CapMap: name -> list of raw JSON values (or null). Go sorts map keys when it marshals, so
// the compact copy sent upstream is sorted the same way whatever order the body had.
absl::Status ReadCapMap(const boost::json::object& root, PeerIdentity* identity) {
  const boost::json::value* value = root.if_contains("CapMap");
  if (value == nullptr || value->is_null()) return absl::OkStatus();
  const boost::json::object* cap_map = value->if_object();
  if (cap_map == nullptr) return FieldError("CapMap", "an object");
  std::vector<std::pair<std::string_view, const boost::json::value*>> sorted;
  sorted.reserve(cap_map->size());
  for (const boost::json::key_value_pair& entry : *cap_map) {
    if (!entry.value().is_null() && !entry.value().is_array()) {
      return FieldError(StrCat("CapMap[\"", std::string_view(entry.key()), "\"]"), "a list");
    }
    sorted.emplace_back(entry.key(), &entry.value());
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  boost::json::object compact;
  compact.reserve(sorted.size());
  for (const auto& [name, values] : sorted) {
    std::vector<CapabilityGrant>& grants = identity->capabilities[std::string(name)];
    // A null value (a built-in cap without parameters) grants the cap with zero values.
    if (values->is_array()) grants = ParseCapabilityValues(boost::json::serialize(*values));
    compact.emplace(boost::json::string_view(name.data(), name.size()), *values);
  }
  identity->capabilities_json = boost::json::serialize(compact);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PeerIdentity> ParseWhoIsResponse(std::string_view body) {
  boost::system::error_code ec;
  boost::json::value root =
      boost::json::parse(boost::json::string_view(body.data(), body.size()), ec);
  if (ec) return absl::InvalidArgumentError(StrCat("WhoIs body is not JSON: ", ec.message()));
  const boost::json::object* object = root.if_object();
  if (object == nullptr) return absl::InvalidArgumentError("WhoIs body is not a JSON object");
  const boost::json::value* node_value = object->if_contains("Node");
  const boost::json::object* node = node_value ? node_value->if_object() : nullptr;
  if (node == nullptr) return absl::InvalidArgumentError("WhoIs body has no Node object");
  const boost::json::value* profile_value = object->if_contains("UserProfile");
  const boost::json::object* profile = profile_value ? profile_value->if_object() : nullptr;
  if (profile == nullptr) return absl::InvalidArgumentError("WhoIs body has no UserProfile object");

  PeerIdentity identity;
  if (absl::Status status = ReadString(*node, "Node", "Name", &identity.node_fqdn); !status.ok()) {
    return status;
  }
  if (!identity.node_fqdn.empty() && identity.node_fqdn.back() == '.') {
    identity.node_fqdn.pop_back();
  }
  if (absl::Status status = ReadString(*node, "Node", "ComputedName", &identity.node_name);
      !status.ok()) {
    return status;
  }
  // ComputedName is derived by tailscaled; fall back to the first label of the FQDN.
  if (identity.node_name.empty()) {
    identity.node_name = identity.node_fqdn.substr(0, identity.node_fqdn.find('.'));
  }
  if (absl::Status status = ReadString(*profile, "UserProfile", "LoginName", &identity.user_login);
      !status.ok()) {
    return status;
  }
  if (absl::Status status = ReadTags(*node, &identity.tags); !status.ok()) return status;
  if (absl::Status status = ReadCapMap(*object, &identity); !status.ok()) return status;
  return identity;
}

}  // namespace sepal::identity
