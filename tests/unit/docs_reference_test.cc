// Keeps docs/ honest: every config key the loader accepts and every metric family sepal declares
// has its row in the reference, and nothing is documented that the code does not have.
//
// Conventions (also stated at the top of each page):
//  - docs/configuration.md: a table whose header's first cell is `key` documents config keys,
//    one row per key, first cell the key's full path in backticks, "[]" for each item of a list:
//    | `listeners[].limits.max_concurrent_streams` | integer | `256` | ... |
//  - docs/metrics.md: a table whose header's first cell is `family` documents metric families:
//    | `sepal_grpc_requests_total` | counter | `listener`, `grpc_code` | ... |
//    the second cell is the type, the third every label name in backticks (or "none").
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/config/config.h"
#include "proxy/memory/memory_metrics.h"
#include "proxy/metrics/metrics.h"
#include "proxy/stats/proxy_metrics.h"
#include "proxy/tls/tailscale_cert_source.h"
#include "yaml-cpp/yaml.h"

#ifndef SEPAL_SOURCE_DIR
#error "SEPAL_SOURCE_DIR must name the source tree (set by tests/unit/CMakeLists.txt)"
#endif

namespace sepal {
namespace {

namespace fs = std::filesystem;

const fs::path kSourceDir = SEPAL_SOURCE_DIR;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string Trim(std::string_view text) {
  size_t begin = text.find_first_not_of(" \t\r");
  if (begin == std::string_view::npos) return "";
  size_t end = text.find_last_not_of(" \t\r");
  return std::string(text.substr(begin, end - begin + 1));
}

// The cells of a Markdown table row; a '|' inside a code span or escaped as "\|" is text.
std::vector<std::string> Cells(std::string_view row) {
  std::vector<std::string> cells;
  std::string cell;
  bool in_code = false;
  for (size_t i = 0; i < row.size(); ++i) {
    char c = row[i];
    if (c == '`') in_code = !in_code;
    if (c == '|' && !in_code && (i == 0 || row[i - 1] != '\\')) {
      cells.push_back(Trim(cell));
      cell.clear();
      continue;
    }
    cell.push_back(c);
  }
  cells.push_back(Trim(cell));
  // "| a | b |" splits into "", "a", "b", "": drop the outer empties.
  if (!cells.empty() && cells.front().empty()) cells.erase(cells.begin());
  if (!cells.empty() && cells.back().empty()) cells.pop_back();
  return cells;
}

// "`x`" -> "x"; anything else -> "".
std::string CodeSpan(const std::string& cell) {
  if (cell.size() < 3 || cell.front() != '`' || cell.back() != '`') return "";
  std::string inner = cell.substr(1, cell.size() - 2);
  return inner.find('`') == std::string::npos ? inner : "";
}

// Every code span in a cell: "`listener`, `kind`" -> {"listener", "kind"}.
std::vector<std::string> CodeSpans(const std::string& cell) {
  std::vector<std::string> spans;
  size_t at = 0;
  while ((at = cell.find('`', at)) != std::string::npos) {
    size_t end = cell.find('`', at + 1);
    if (end == std::string::npos) break;
    spans.push_back(cell.substr(at + 1, end - at - 1));
    at = end + 1;
  }
  return spans;
}

struct Row {
  std::vector<std::string> cells;
  int line;
};

// The body rows of every table in `markdown` whose header's first cell is `header`.
std::vector<Row> TableRows(const std::string& markdown, std::string_view header) {
  std::vector<Row> rows;
  std::istringstream in(markdown);
  std::string line;
  int number = 0;
  bool in_table = false;   // inside a table with the wanted header
  bool seen_rule = false;  // past its |---| line
  while (std::getline(in, line)) {
    ++number;
    std::string text = Trim(line);
    if (text.empty() || text[0] != '|') {
      in_table = false;
      continue;
    }
    std::vector<std::string> cells = Cells(text);
    if (!in_table) {
      // A header row starts a table; any other table is none of ours.
      in_table = !cells.empty() && cells[0] == header;
      seen_rule = false;
      if (!in_table) {
        // Skip the rest of this foreign table.
        while (std::getline(in, line)) {
          ++number;
          std::string rest = Trim(line);
          if (rest.empty() || rest[0] != '|') break;
        }
      }
      continue;
    }
    if (!seen_rule) {
      seen_rule = true;  // the |---|---| line
      continue;
    }
    rows.push_back({std::move(cells), number});
  }
  return rows;
}

// ---------------------------------------------------------------- configuration keys

// The first cell of each row of the key tables: path -> line.
std::map<std::string, int> DocumentedKeys(std::vector<std::string>* problems) {
  std::map<std::string, int> keys;
  for (const Row& row : TableRows(ReadFile(kSourceDir / "docs/configuration.md"), "key")) {
    std::string path = row.cells.empty() ? "" : CodeSpan(row.cells[0]);
    if (path.empty()) {
      problems->push_back("docs/configuration.md:" + std::to_string(row.line) +
                          ": the first cell of a key table row must be one key path in backticks");
      continue;
    }
    if (!keys.emplace(path, row.line).second) {
      problems->push_back("docs/configuration.md:" + std::to_string(row.line) + ": `" + path +
                          "` is documented twice");
    }
  }
  return keys;
}

TEST(DocsReference, EveryConfigKeyIsDocumented) {
  std::vector<std::string> problems;
  std::map<std::string, int> documented = DocumentedKeys(&problems);
  std::vector<std::string> known = config::KnownConfigKeyPaths();
  ASSERT_GT(known.size(), 10u);
  for (const std::string& path : known) {
    if (documented.count(path) == 0) {
      problems.push_back("config key `" + path +
                         "` is accepted by the loader but has no row in a `key` table of "
                         "docs/configuration.md");
    }
  }
  std::set<std::string> known_set(known.begin(), known.end());
  for (const auto& [path, line] : documented) {
    if (known_set.count(path) == 0) {
      problems.push_back("docs/configuration.md:" + std::to_string(line) + ": `" + path +
                         "` is documented but the loader does not accept it");
    }
  }
  EXPECT_THAT(problems, ::testing::IsEmpty());
}

// KnownConfigKeyPaths() is only worth checking the docs against if it is what the loader
// does: every path it names is accepted where it says, and an unknown key in each of its
// sections is refused there.
constexpr char kEverySection[] = R"(
workers: 1
drain_timeout: 1s
admin: {address: "127.0.0.1:0"}
metrics: {peer_node_label: false}
memory: {high_watermark_bytes: 1000000, low_watermark_bytes: 500000}
identity:
  provider: static
  tailscale: {socket: /nonexistent/tailscaled.sock, cache_ttl: 1s, lookup_timeout: 1s}
  static:
    - match: 127.0.0.0/8
      node: node-a
      user: alice@example.com
      tags: ["tag:supernode"]
      capabilities: {example.com/cap/flower: [{}]}
upstreams:
  - name: up
    address: "127.0.0.1:1"
    protocol: h2
    connect_timeout: 1s
    tls: {ca: FILE, server_name: superlink, certificate: FILE, private_key: FILE}
    circuit_breaker: {max_concurrent_streams: 1, max_pending_streams: 1,
                      max_new_streams_per_second: 1}
listeners:
  - name: fleet
    address: "127.0.0.1:0"
    proxy_protocol: none
    protocol: h2
    tls: {certificate: FILE, private_key: FILE, client_ca: FILE, handshake_timeout: 1s}
    peer_limits:
      connections: 1
      concurrent_calls: 1
      calls_per_second: 1
      calls_burst: 1
      overrides:
        - {tags: ["tag:a"], users: [u], nodes: [n], connections: 1, concurrent_calls: 1,
           calls_per_second: 1, calls_burst: 1}
    routes:
      - match: /flwr.proto.Fleet/
        upstream: up
        allow: {tags: ["tag:supernode"], users: [alice@example.com], nodes: [node-a],
                capability: example.com/cap/flower}
    limits: {max_concurrent_streams: 8, max_header_list_bytes: 4096, stream_window_bytes: 65535,
             connection_window_bytes: 65535, stream_reset_burst: 1, stream_reset_rate: 1,
             max_continuations: 1, request_progress_timeout: 1s, glitch_burst: 1,
             glitch_rate: 1}
)";

std::string EverySectionYaml() {
  // The loader checks that TLS files are readable (not that they are PEM): any file will do.
  std::string text = kEverySection;
  std::string file = (kSourceDir / "README.md").string();
  for (size_t at = 0; (at = text.find("FILE", at)) != std::string::npos; at += file.size()) {
    text.replace(at, 4, file);
  }
  return text;
}

// Splits "listeners[].routes[].allow" into the node it names in `root` ("[]" = item 0).
YAML::Node Walk(YAML::Node root, const std::string& dotted) {
  YAML::Node node;
  node.reset(root);
  std::istringstream parts(dotted);
  std::string part;
  while (std::getline(parts, part, '.')) {
    bool item = part.size() > 2 && part.ends_with("[]");
    if (item) part.resize(part.size() - 2);
    YAML::Node next = node[part];
    if (item) next.reset(next[0]);
    node.reset(next);
  }
  return node;
}

// "listeners[].tls.source" -> {"listeners[].tls", "source"}.
std::pair<std::string, std::string> SplitKeyPath(const std::string& path) {
  size_t dot = path.rfind('.');
  if (dot == std::string::npos) return {"", path};
  return {path.substr(0, dot), path.substr(dot + 1)};
}

std::string Concrete(std::string path) {
  for (size_t at = 0; (at = path.find("[]", at)) != std::string::npos;) path.replace(at, 2, "[0]");
  return path;
}

TEST(DocsReference, KnownKeyPathsAreWhatTheLoaderAccepts) {
  const std::string base = EverySectionYaml();
  absl::StatusOr<config::Config> parsed = config::ParseConfig(base, "every-section.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();

  std::set<std::string> sections;
  for (const std::string& path : config::KnownConfigKeyPaths()) {
    auto [section, key] = SplitKeyPath(path);
    sections.insert(section);
    // A value of the wrong shape: whatever the key, the error (if any) is about the value.
    YAML::Node root = YAML::Load(base);
    Walk(root, section)[key] = YAML::Load("[[not, a, valid, value]]");
    absl::StatusOr<config::Config> result =
        config::ParseConfig(YAML::Dump(root), "every-section.yaml");
    if (!result.ok()) {
      EXPECT_THAT(std::string(result.status().message()),
                  ::testing::Not(::testing::HasSubstr("unknown key")))
          << "KnownConfigKeyPaths() lists `" << path << "` but the loader does not accept it";
    }
  }
  for (const std::string& section : sections) {
    YAML::Node root = YAML::Load(base);
    Walk(root, section)["zz_not_a_key"] = 1;
    absl::StatusOr<config::Config> result =
        config::ParseConfig(YAML::Dump(root), "every-section.yaml");
    std::string where = section.empty() ? "zz_not_a_key" : Concrete(section) + ".zz_not_a_key";
    ASSERT_FALSE(result.ok()) << "an unknown key under `" << section << "` was accepted";
    EXPECT_THAT(std::string(result.status().message()),
                ::testing::HasSubstr(where + ": unknown key"))
        << "KnownConfigKeyPaths() puts a section at `" << section
        << "` but the loader reads it elsewhere";
  }
}

// ---------------------------------------------------------------- metric families

struct DocumentedFamily {
  std::string type;
  std::set<std::string> labels;
  int line;
};

std::map<std::string, DocumentedFamily> DocumentedFamilies(std::vector<std::string>* problems) {
  std::map<std::string, DocumentedFamily> families;
  for (const Row& row : TableRows(ReadFile(kSourceDir / "docs/metrics.md"), "family")) {
    std::string where = "docs/metrics.md:" + std::to_string(row.line) + ": ";
    std::string name = row.cells.empty() ? "" : CodeSpan(row.cells[0]);
    if (name.empty() || row.cells.size() < 4) {
      problems->push_back(where + "a family row is | `name` | type | labels | meaning |");
      continue;
    }
    std::vector<std::string> labels = CodeSpans(row.cells[2]);
    DocumentedFamily family{row.cells[1], {labels.begin(), labels.end()}, row.line};
    if (!families.emplace(name, std::move(family)).second) {
      problems->push_back(where + "`" + name + "` is documented twice");
    }
  }
  return families;
}

const char* TypeName(metrics::MetricType type) {
  switch (type) {
    case metrics::MetricType::kCounter:
      return "counter";
    case metrics::MetricType::kGauge:
      return "gauge";
    case metrics::MetricType::kHistogram:
      return "histogram";
  }
  return "?";
}

// Every family sepal declares, each where the program declares it.
std::vector<metrics::FamilyInfo> DeclareSepalFamilies() {
  stats::GetFamilies();   // the proxy's families
  memory::GetFamilies();  // the memory budget's
  {
    // The certificate source declares its own two when it is made; it runs only if started.
    boost::asio::io_context io;
    tls::TailscaleCertSource source(
        io.get_executor(), "/nonexistent/tailscaled.sock", [](const tls::CertificatePair&) {},
        [](const tls::CertSourceError&) {});
  }
  return metrics::DefaultRegistry().ListFamilies();
}

// Names passed to AddCounter/AddGauge/AddHistogram anywhere in the product's sources: a
// family declared somewhere DeclareSepalFamilies() does not reach still shows up here.
std::map<std::string, std::string> RegisteredInSources() {
  std::map<std::string, std::string> names;  // name -> file
  auto is_name_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == ':';
  };
  for (const char* dir : {"proxy", "filters"}) {
    for (const auto& entry : fs::recursive_directory_iterator(kSourceDir / dir)) {
      std::string extension = entry.path().extension().string();
      if (!entry.is_regular_file() || (extension != ".cc" && extension != ".h")) continue;
      std::string text = ReadFile(entry.path());
      for (std::string_view call : {"AddCounter(", "AddGauge(", "AddHistogram("}) {
        for (size_t at = 0; (at = text.find(call, at)) != std::string::npos;) {
          at += call.size();
          size_t quote = text.find_first_not_of(" \t\r\n", at);
          if (quote == std::string::npos || text[quote] != '"') continue;  // a declaration
          size_t end = quote + 1;
          while (end < text.size() && is_name_char(text[end])) ++end;
          if (end < text.size() && text[end] == '"' && end > quote + 1) {
            names.emplace(text.substr(quote + 1, end - quote - 1),
                          fs::relative(entry.path(), kSourceDir).string());
          }
        }
      }
    }
  }
  return names;
}

TEST(DocsReference, EveryMetricFamilyIsDocumented) {
  std::vector<std::string> problems;
  std::map<std::string, DocumentedFamily> documented = DocumentedFamilies(&problems);
  std::vector<metrics::FamilyInfo> declared = DeclareSepalFamilies();
  ASSERT_GT(declared.size(), 10u);
  std::set<std::string> declared_names;
  for (const metrics::FamilyInfo& family : declared) {
    declared_names.insert(family.name);
    auto it = documented.find(family.name);
    if (it == documented.end()) {
      problems.push_back("metric family `" + family.name +
                         "` is exported but has no row in a `family` table of docs/metrics.md");
      continue;
    }
    std::string where =
        "docs/metrics.md:" + std::to_string(it->second.line) + ": `" + family.name + "`: ";
    if (it->second.type != TypeName(family.type)) {
      problems.push_back(where + "type is " + TypeName(family.type) + ", documented as \"" +
                         it->second.type + "\"");
    }
    for (const std::string& label : family.label_names) {
      if (it->second.labels.count(label) == 0) {
        problems.push_back(where + "label `" + label + "` is not documented");
      }
    }
  }
  for (const auto& [name, file] : RegisteredInSources()) {
    if (declared_names.count(name) == 0) {
      problems.push_back("metric family `" + name + "` is declared in " + file +
                         ", which DeclareSepalFamilies() in this test does not reach: call the "
                         "function that declares it there, and document it in docs/metrics.md");
    }
  }
  for (const auto& [name, family] : documented) {
    if (declared_names.count(name) == 0) {
      problems.push_back("docs/metrics.md:" + std::to_string(family.line) + ": `" + name +
                         "` is documented but sepal does not export it");
    }
  }
  EXPECT_THAT(problems, ::testing::IsEmpty());
}

}  // namespace
}  // namespace sepal
