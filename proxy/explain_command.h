// `sepal explain --config FILE [--listener NAME] PEER METHOD`: asks the configured identity
// provider who PEER is, then walks the call as the proxy would — the route that matches on
// each listener, every allow rule and whether it matched, the peer limits that apply, and
// the decision with the gRPC status a client would get.
#pragma once

namespace sepal {

// Returns the process exit code: 0 the call would be forwarded (on every listener that
// routes METHOD, and at least one does), 1 it would be refused somewhere, 2 bad arguments
// or an unreadable config.
int RunExplainCommand(int argc, char** argv);

}  // namespace sepal
