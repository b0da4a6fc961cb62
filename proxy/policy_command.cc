// The policy subcommand: loads the configuration and prints MakeTailnetPolicy's JSON on stdout,
// what it cannot express on stderr.
#include "proxy/policy_command.h"

#include <cstdio>
#include <string>
#include <string_view>

#include "proxy/config/config.h"
#include "proxy/config/tailnet_policy.h"

namespace sepal {

namespace {

constexpr char kUsage[] =
    "usage: sepal policy --config FILE [--superlink-tag TAG] [--tag-owner OWNER]\n"
    "  prints the tailnet policy (JSON, for the admin console's policy file) that agrees with\n"
    "  FILE: tagOwners, an ip grant per listener port, an app grant per capability rule\n"
    "  --superlink-tag  the tag of the node sepal runs on (default tag:superlink)\n"
    "  --tag-owner      who may apply the tags (default autogroup:admin)\n";

int Usage(const std::string& what) {
  std::fprintf(stderr, "sepal policy: %s\n%s", what.c_str(), kUsage);
  return 2;
}

}  // namespace

int RunPolicyCommand(int argc, char** argv) {
  std::string config_path;
  config::PolicyOptions options;
  for (int i = 0; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc) return Usage(std::string(arg) + " needs a value");
    std::string value = argv[++i];
    if (arg == "--config") {
      config_path = value;
    } else if (arg == "--superlink-tag") {
      if (!value.starts_with("tag:") || value.size() == 4) return Usage("a tag looks like tag:NAME");
      options.superlink_tag = value;
    } else if (arg == "--tag-owner") {
      options.tag_owner = value;
    } else {
      return Usage("unknown argument " + std::string(arg));
    }
  }
  if (config_path.empty()) return Usage("--config is required");
  auto config = config::LoadConfigFile(config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "sepal policy: %s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  config::TailnetPolicy policy = config::MakeTailnetPolicy(*config, options);
  std::fputs(policy.json.c_str(), stdout);
  for (const auto& note : policy.notes) std::fprintf(stderr, "note: %s\n", note.c_str());
  return 0;
}

}  // namespace sepal
