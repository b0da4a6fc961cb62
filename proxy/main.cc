// sepal entry point: command line, config loading, signal handling around the Server.
#include <nghttp2/nghttp2.h>
#include <openssl/crypto.h>
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "proxy/common/build_info.h"
#include "proxy/common/log.h"
#include "proxy/config/config.h"
#include "proxy/server/server.h"
#include "proxy/tls/tls_context.h"
#include "proxy/explain_command.h"
#include "proxy/policy_command.h"
#include "proxy/whois_command.h"

namespace {

void PrintUsage(FILE* out) {
  std::fprintf(out,
               "usage: sepal --config FILE [--check] [--log-level debug|info|warn|error]\n"
               "       sepal whois ADDR [--socket PATH | --config FILE] [--destination DEST]\n"
               "       sepal explain --config FILE [--listener NAME] [--destination DEST] PEER METHOD\n"
               "       sepal policy --config FILE [--superlink-tag TAG] [--tag-owner OWNER]\n"
               "       sepal --version\n"
               "\n"
               "  --config FILE   YAML configuration (see README.md)\n"
               "  --check         validate the configuration, print a summary, exit 0 or 1\n"
               "  --log-level L   minimum level of log lines on stderr (default info;\n"
               "                  also SEPAL_LOG_LEVEL)\n"
               "signals: SIGTERM/SIGINT drain gracefully and exit 0; SIGHUP re-reads the file\n");
}

// One "key value" line each, so scripts can pick a field; the labels of sepal_build_info.
void PrintVersion() {
  std::string version(sepal::BuildVersion()), commit(sepal::BuildCommit()),
      build_type(sepal::BuildType());
  std::printf("sepal %s\ncommit %s\nbuild_type %s\nnghttp2 %s\nopenssl %s\n", version.c_str(),
              commit.c_str(), build_type.c_str(), nghttp2_version(0)->version_str,
              OpenSSL_version(OPENSSL_VERSION));
}

int Run(const std::string& config_path) {
  auto loaded = sepal::config::LoadConfigFile(config_path);
  if (!loaded.ok()) {
    std::fprintf(stderr, "sepal: %s\n", std::string(loaded.status().message()).c_str());
    return 1;
  }
  auto snapshot = std::make_shared<const sepal::config::Config>(std::move(*loaded));

  // Workers inherit this mask, so only the main thread's sigwait sees these signals.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  sepal::Server server(snapshot);
  if (absl::Status status = server.Start(); !status.ok()) {
    std::fprintf(stderr, "sepal: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  sepal::LogInfo("sepal ", sepal::BuildVersion(), " (", sepal::BuildCommit(), ") started with ",
                 server.worker_count(), " workers");
  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGHUP) {
      // A bad file or a reload that cannot be applied leaves the running config in force.
      auto reloaded = sepal::config::LoadConfigFile(config_path);
      if (!reloaded.ok()) {
        sepal::LogError("SIGHUP: config rejected, keeping the running one: ",
                        reloaded.status().message());
        server.CountReload(false);
        continue;
      }
      sepal::LogInfo("SIGHUP: reloading ", config_path);
      (void)server.Reload(std::make_shared<const sepal::config::Config>(std::move(*reloaded)));
      continue;
    }
    auto drain_timeout = server.config()->drain_timeout;
    sepal::LogInfo(sig == SIGTERM ? "SIGTERM" : "SIGINT", ": draining (up to ",
                   drain_timeout.count(), " ms)");
    bool clean = server.Drain(drain_timeout);
    server.Stop();
    sepal::LogInfo("stopped", clean ? "" : " (drain timeout: remaining connections closed)");
    return 0;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string_view(argv[1]) == "whois") {
    return sepal::RunWhoisCommand(argc - 2, argv + 2);
  }
  if (argc >= 2 && std::string_view(argv[1]) == "explain") {
    return sepal::RunExplainCommand(argc - 2, argv + 2);
  }
  if (argc >= 2 && std::string_view(argv[1]) == "policy") {
    return sepal::RunPolicyCommand(argc - 2, argv + 2);
  }
  std::string config_path;
  bool check = false;
  if (const char* level = std::getenv("SEPAL_LOG_LEVEL")) {
    sepal::LogLevel parsed;
    if (sepal::ParseLogLevel(level, &parsed)) {
      sepal::g_min_log_level = parsed;
    } else {
      std::fprintf(stderr,
                   "sepal: SEPAL_LOG_LEVEL=%s is not a log level (debug, info, warn, error); "
                   "logging at info\n",
                   level);
    }
  }
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (arg.starts_with("--config=")) {
      config_path = std::string(arg.substr(9));
    } else if (arg == "--check") {
      check = true;
    } else if (arg == "--log-level" && i + 1 < argc) {
      sepal::LogLevel parsed;
      if (!sepal::ParseLogLevel(argv[++i], &parsed)) {
        std::fprintf(stderr, "sepal: unknown log level %s\n", argv[i]);
        return 2;
      }
      sepal::g_min_log_level = parsed;
    } else if (arg == "--version") {
      PrintVersion();
      return 0;
    } else if (arg == "--help" || arg == "-h") {
      PrintUsage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "sepal: unknown argument %s\n\n", argv[i]);
      PrintUsage(stderr);
      return 2;
    }
  }
  if (config_path.empty()) {
    PrintUsage(stderr);
    return 2;
  }
  if (check) {
    auto loaded = sepal::config::LoadConfigFile(config_path);
    if (!loaded.ok()) {
      std::fprintf(stderr, "%s\n", std::string(loaded.status().message()).c_str());
      return 1;
    }
    // Certificates and keys as the server will load them: PEM, readable, matching pairs.
    std::string certificates;
    if (absl::Status status = sepal::tls::ValidateTlsFiles(*loaded, &certificates); !status.ok()) {
      std::fprintf(stderr, "%s: %s\n", config_path.c_str(), std::string(status.message()).c_str());
      return 1;
    }
    std::printf("%s: OK\n%s%s", config_path.c_str(), sepal::config::Summarize(*loaded).c_str(),
                certificates.c_str());
    return 0;
  }
  return Run(config_path);
}
