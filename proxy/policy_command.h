// `sepal policy --config FILE [--superlink-tag TAG] [--tag-owner OWNER]`: prints the tailnet
// policy (tagOwners and grants, JSON) that lets exactly the peers the config's allow rules
// name reach its listener ports, with the app capabilities its capability rules use.
#pragma once

namespace sepal {

// Returns the process exit code: 0 printed, 1 the configuration does not load, 2 bad usage.
int RunPolicyCommand(int argc, char** argv);

}  // namespace sepal
