// /peers (Boost.JSON) and the status page (HTML written out by hand: a few tables).
#include "proxy/admin/status.h"

#include <algorithm>
#include <boost/json.hpp>
#include <cmath>

#include "absl/strings/str_join.h"
#include "proxy/common/strings.h"
#include "proxy/common/time_format.h"
#include "proxy/grpc/grpc_status.h"

namespace sepal::admin {
namespace {

namespace json = boost::json;
using SystemTime = std::chrono::system_clock::time_point;

json::string_view View(std::string_view text) { return {text.data(), text.size()}; }

std::string CodeName(int code) {
  if (code < 0 || code > 16) return StrCat(code);
  return std::string(grpc::StatusCodeName(static_cast<grpc::StatusCode>(code)));
}

// What the page and JSON call the peer: its node name, else its address.
std::string PeerName(const PeerEntry& peer) {
  const auto& who = peer.activity.identity;
  if (who && !who->node_name.empty()) return who->node_name;
  if (who && !who->node_fqdn.empty()) return who->node_fqdn;
  return std::string(std::string_view(peer.key).substr(peer.key.find(':') + 1));
}

std::vector<const PeerEntry*> Sorted(const std::vector<PeerEntry>& peers) {
  std::vector<const PeerEntry*> sorted;
  for (const PeerEntry& peer : peers) sorted.push_back(&peer);
  std::sort(sorted.begin(), sorted.end(), [](const PeerEntry* a, const PeerEntry* b) {
    return std::tie(a->listener, a->key) < std::tie(b->listener, b->key);
  });
  return sorted;
}

peers::MethodActivity Totals(const peers::PeerSnapshot& activity) {
  peers::MethodActivity total;
  for (const auto& [method, counts] : activity.methods) {
    total.calls += counts.calls;
    total.errors += counts.errors;
    total.request_bytes += counts.request_bytes;
    total.response_bytes += counts.response_bytes;
  }
  return total;
}

json::value CallJson(const peers::CallRecord& call) {
  if (call.time == SystemTime{}) return nullptr;
  json::object out;
  out["time"] = FormatRfc3339(call.time);
  out["method"] = View(call.method);
  out["grpc_status"] = CodeName(call.grpc_status);
  out["reason"] = call.reason.empty() ? json::value(nullptr) : json::value(View(call.reason));
  return out;
}

json::object CountsJson(const peers::MethodActivity& counts) {
  return {{"calls", counts.calls},
          {"errors", counts.errors},
          {"request_bytes", counts.request_bytes},
          {"response_bytes", counts.response_bytes}};
}

json::array Strings(const std::vector<std::string>& items) {
  json::array out;
  for (const std::string& item : items) out.emplace_back(View(item));
  return out;
}

// ---------------------------------------------------------------- HTML

std::string Bytes(uint64_t n) {
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(n);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof(text), unit == 0 ? "%.0f %s" : "%.1f %s", value, kUnits[unit]);
  return text;
}

// "3m 12s ago", "2 d 4 h ago" — how long since `then`.
std::string Ago(SystemTime then, SystemTime now) {
  if (then == SystemTime{}) return "never";
  auto seconds = std::chrono::duration_cast<std::chrono::seconds>(now - then).count();
  if (seconds < 0) seconds = 0;
  if (seconds < 60) return StrCat(seconds, " s ago");
  if (seconds < 3600) return StrCat(seconds / 60, " min ", seconds % 60, " s ago");
  if (seconds < 86400) return StrCat(seconds / 3600, " h ", seconds % 3600 / 60, " min ago");
  return StrCat(seconds / 86400, " d ", seconds % 86400 / 3600, " h ago");
}

std::string Cell(std::string_view text, std::string_view css_class = {}) {
  if (css_class.empty()) return StrCat("<td>", HtmlEscape(text), "</td>");
  return StrCat("<td class=\"", css_class, "\">", HtmlEscape(text), "</td>");
}

std::string Identity(const PeerEntry& peer) {
  const auto& who = peer.activity.identity;
  if (!who) {
    if (peer.activity.identity_result == "none") return "no identity provider";
    return peer.activity.identity_result == "not_in_tailnet" ? "not a tailnet peer"
                                                             : "identity lookup failed";
  }
  if (who->tagged()) return absl::StrJoin(who->tags, " ");
  return who->user_login;
}

constexpr std::string_view kStyle =
    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}"
    "h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}"
    "table{border-collapse:collapse;margin-bottom:.5em}"
    "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}"
    "th{background:#eee}td.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".ok{background:#dff0d8}.warn{background:#fcf8e3}.bad{background:#f2dede}"
    ".muted{color:#777}ul{margin:0;padding-left:1.1em}code{font-size:.95em}";

}  // namespace

std::string HtmlEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string PeersToJson(const std::vector<PeerEntry>& peers, SystemTime now) {
  json::array list;
  for (const PeerEntry* entry : Sorted(peers)) {
    const peers::PeerSnapshot& activity = entry->activity;
    json::object peer;
    peer["listener"] = View(entry->listener);
    peer["peer"] = PeerName(*entry);
    peer["key"] = View(entry->key);
    peer["identity"] = View(activity.identity_result);
    if (const auto& who = activity.identity) {
      peer["node"] = View(who->node_name);
      peer["fqdn"] = View(who->node_fqdn);
      peer["user"] = View(who->user_login);
      peer["tags"] = Strings(who->tags);
    } else {
      peer["node"] = nullptr;
      peer["fqdn"] = nullptr;
      peer["user"] = nullptr;
      peer["tags"] = json::array();
    }
    peer["connections"] = activity.connection_count;
    json::array addresses;
    SystemTime connected_since{};
    for (const peers::ConnectionRecord& connection : activity.connections) {
      addresses.emplace_back(View(connection.address));
      if (connected_since == SystemTime{} || connection.opened < connected_since) {
        connected_since = connection.opened;
      }
    }
    peer["addresses"] = std::move(addresses);
    peer["connected_since"] =
        connected_since == SystemTime{} ? json::value(nullptr) : json::value(FormatRfc3339(connected_since));
    peer["first_seen"] = FormatRfc3339(activity.first_seen);
    peer["calls_in_flight"] = entry->calls_in_flight;
    json::object totals = CountsJson(Totals(activity));
    for (auto& [key, value] : totals) peer[key] = value;
    json::object methods;
    for (const auto& [method, counts] : activity.methods) methods[View(method)] = CountsJson(counts);
    peer["methods"] = std::move(methods);
    peer["last_call"] = CallJson(activity.last_call);
    peer["last_error"] = CallJson(activity.last_error);
    list.emplace_back(std::move(peer));
  }
  json::object out;
  out["generated_at"] = FormatRfc3339(now);
  out["peer_count"] = list.size();
  out["peers"] = std::move(list);
  return json::serialize(out) + "\n";
}

std::string StatusPageHtml(const StatusInfo& info, int refresh_seconds) {
  std::string html;
  html.reserve(8192 + info.peers.size() * 1024);
  StrAppend(&html, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
            "<meta http-equiv=\"refresh\" content=\"", refresh_seconds, "\">",
            "<title>sepal status</title><style>", kStyle, "</style></head><body>\n");
  StrAppend(&html, "<h1>sepal ", HtmlEscape(info.version), "</h1>\n<p>",
            info.ready ? "<span class=\"ok\" id=\"ready\">ready</span>"
                       : "<span class=\"bad\" id=\"ready\">not ready</span>",
            " · config generation <b id=\"generation\">", info.generation, "</b> from <code>",
            HtmlEscape(info.config_path), "</code>, loaded ", HtmlEscape(FormatRfc3339(info.loaded_at)),
            " · up since ", HtmlEscape(FormatRfc3339(info.started_at)), " · page of ",
            HtmlEscape(FormatRfc3339(info.now)), ", reloads every ", refresh_seconds,
            " s · <a href=\"/peers\">/peers</a> <a href=\"/metrics\">/metrics</a> "
            "<a href=\"/ready\">/ready</a> <a href=\"/config\">/config</a></p>\n");
  if (!info.problems.empty()) {
    html += "<ul id=\"problems\">";
    for (const std::string& problem : info.problems) {
      StrAppend(&html, "<li class=\"bad\">", HtmlEscape(problem), "</li>");
    }
    html += "</ul>\n";
  }

  // Listeners, with how many peers and connections each has now.
  html += "<h2>Listeners</h2>\n<table id=\"listeners\"><tr><th>name</th><th>address</th>"
          "<th>port</th><th>TLS</th><th>PROXY protocol</th><th>routes</th><th>peers</th>"
          "<th>connections</th></tr>\n";
  for (const ListenerStatus& listener : info.listeners) {
    size_t peer_count = 0, connections = 0;
    for (const PeerEntry& peer : info.peers) {
      if (peer.listener != listener.name) continue;
      ++peer_count;
      connections += peer.activity.connection_count;
    }
    StrAppend(&html, "<tr>", Cell(listener.name), Cell(listener.address),
              Cell(StrCat(listener.bound_port), "num"), Cell(listener.tls),
              Cell(listener.proxy_protocol), Cell(StrCat(listener.routes), "num"),
              Cell(StrCat(peer_count), "num"), Cell(StrCat(connections), "num"), "</tr>\n");
  }
  html += "</table>\n";

  html += "<h2>Upstreams</h2>\n<table id=\"upstreams\"><tr><th>name</th><th>address</th>"
          "<th>state</th></tr>\n";
  for (const UpstreamStatus& upstream : info.upstreams) {
    StrAppend(&html, "<tr>", Cell(upstream.name), Cell(upstream.address),
              upstream.problem.empty() ? Cell("reachable", "ok") : Cell(upstream.problem, "bad"),
              "</tr>\n");
  }
  html += "</table>\n";

  if (!info.certificates.empty()) {
    html += "<h2>Certificates</h2>\n<table id=\"certificates\"><tr><th>listener</th>"
            "<th>source</th><th>certificate</th><th>expires</th><th>days left</th></tr>\n";
    for (const CertificateStatus& certificate : info.certificates) {
      if (!certificate.installed) {
        StrAppend(&html, "<tr>", Cell(certificate.listener), Cell(certificate.source),
                  Cell("waiting for the first certificate from tailscaled", "bad"), Cell(""),
                  Cell(""), "</tr>\n");
        continue;
      }
      double days = std::chrono::duration<double>(certificate.not_after - info.now).count() / 86400;
      std::string_view state = certificate.expired || days < 0 ? "bad" : days < 14 ? "warn" : "ok";
      char days_text[32];
      std::snprintf(days_text, sizeof(days_text), "%.1f", days);
      StrAppend(&html, "<tr>", Cell(certificate.listener), Cell(certificate.source),
                Cell(certificate.subject), Cell(FormatRfc3339(certificate.not_after)),
                Cell(days_text, StrCat("num ", state)), "</tr>\n");
    }
    html += "</table>\n";
  }

  StrAppend(&html, "<h2>Peers connected (", info.peers.size(), ")</h2>\n");
  if (info.peers.empty()) {
    html += "<p class=\"muted\" id=\"no-peers\">No peer is connected.</p>\n";
  } else {
    html += "<table id=\"peers\"><tr><th>listener</th><th>peer</th><th>tags or user</th>"
            "<th>addresses</th><th>conns</th><th>in flight</th><th>calls</th><th>errors</th>"
            "<th>bytes in</th><th>bytes out</th><th>calls by method</th><th>last call</th>"
            "<th>last error</th></tr>\n";
    for (const PeerEntry* peer : Sorted(info.peers)) {
      const peers::PeerSnapshot& activity = peer->activity;
      peers::MethodActivity total = Totals(activity);
      std::string addresses;
      for (const peers::ConnectionRecord& connection : activity.connections) {
        StrAppend(&addresses, addresses.empty() ? "" : "<br>", HtmlEscape(connection.address));
      }
      if (activity.connection_count > activity.connections.size()) {
        StrAppend(&addresses, "<br>… ", activity.connection_count - activity.connections.size(),
                  " more");
      }
      std::string methods = "<ul>";
      for (const auto& [method, counts] : activity.methods) {
        StrAppend(&methods, "<li><code>", HtmlEscape(method), "</code> ", counts.calls,
                  counts.errors > 0 ? StrCat(" (", counts.errors, " failed)") : std::string(),
                  "</li>");
      }
      methods += "</ul>";
      auto call_text = [&](const peers::CallRecord& call) {
        if (call.time == SystemTime{}) return std::string("<span class=\"muted\">none</span>");
        return StrCat("<code>", HtmlEscape(call.method), "</code> ",
                      HtmlEscape(CodeName(call.grpc_status)),
                      call.reason.empty() ? std::string() : StrCat(" (", HtmlEscape(call.reason), ")"),
                      "<br><span class=\"muted\">", HtmlEscape(Ago(call.time, info.now)), "</span>");
      };
      StrAppend(&html, "<tr>", Cell(peer->listener), Cell(PeerName(*peer)),
                Cell(Identity(*peer), activity.identity ? "" : "bad"), "<td>", addresses, "</td>",
                Cell(StrCat(activity.connection_count), "num"),
                Cell(StrCat(peer->calls_in_flight), "num"), Cell(StrCat(total.calls), "num"),
                Cell(StrCat(total.errors), total.errors > 0 ? "num warn" : "num"),
                Cell(Bytes(total.request_bytes), "num"), Cell(Bytes(total.response_bytes), "num"),
                "<td>", methods, "</td><td>", call_text(activity.last_call), "</td><td",
                activity.last_error.time == SystemTime{} ? "" : " class=\"warn\"", ">",
                call_text(activity.last_error), "</td></tr>\n");
    }
    html += "</table>\n";
  }
  html += "</body></html>\n";
  return html;
}

}  // namespace sepal::admin
