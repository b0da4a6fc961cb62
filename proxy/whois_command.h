// `sepal whois ADDR [--socket PATH] [--config FILE]`: asks the identity provider about one
// address and prints what it says — the first thing to run when a SuperNode is refused.
#pragma once

namespace sepal {

// Returns the process exit code: 0 identified, 1 not a tailnet peer, 2 lookup failed or
// bad arguments.
int RunWhoisCommand(int argc, char** argv);

}  // namespace sepal
