// A configuration generation as one worker sees it, and one listener's routes within it.
//
// Reload model: the main thread validates a new file and hands every worker the new
// immutable Config; each worker builds a Generation (reusing the connection pools of
// unchanged upstreams and the identity provider when its section is unchanged) and gives
// each of its listeners a new ListenerRoutes. A stream takes its listener's ListenerRoutes
// when it begins and keeps it to its end, so calls in flight finish under the routes, allow
// rules and upstream they started with while new calls use the new ones. The shared_ptrs
// are per worker, so taking one costs an uncontended atomic increment.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "filters/access_log/access_log.h"
#include "proxy/config/config.h"
#include "proxy/identity/identity.h"
#include "proxy/limits/limits_registry.h"
#include "proxy/memory/memory_budget.h"
#include "proxy/router/router.h"
#include "proxy/tls/context_store.h"

namespace sepal {

class UpstreamPool;

// What the Server decides once for all workers.
struct GenerationSettings {
  uint64_t number = 0;
  config::ConfigSnapshot config;
  std::shared_ptr<identity::IdentityProvider> identity;  // null: routing only
  std::shared_ptr<filters::AccessLog> access_log;          // null: off
  // Listener TLS contexts; one store for the process's lifetime (null: no TLS anywhere).
  std::shared_ptr<tls::ServerContextStore> tls_contexts;
  // Per-peer and per-upstream limit state; one for the process's lifetime (null: no limits).
  std::shared_ptr<limits::Registry> limits;
  // The process's memory budget (null: none, e.g. in the fuzz targets).
  std::shared_ptr<memory::MemoryBudget> memory;
};

// ... and what each worker adds: its connection pools.
struct Generation : GenerationSettings {
  std::vector<std::shared_ptr<UpstreamPool>> pools;  // by index in config->upstreams
};

struct ListenerRoutes {
  ListenerRoutes(std::shared_ptr<const Generation> generation_in,
                 const config::ListenerConfig& listener)
      : generation(std::move(generation_in)),
        config(listener),
        router(listener, *generation->config) {
    if (listener.tls && generation->tls_contexts) {
      tls_slot = generation->tls_contexts->Slot(listener.name);
    }
    if (generation->limits) {
      peers = generation->limits->PeerTableFor(listener.name);
      for (const config::UpstreamConfig& upstream : generation->config->upstreams) {
        breakers.push_back(generation->limits->BreakerFor(upstream.name));
      }
    }
  }

  UpstreamPool& pool(size_t upstream_index) const { return *generation->pools[upstream_index]; }
  // Null when the generation has no limit registry.
  limits::UpstreamBreaker* breaker(size_t upstream_index) const {
    return breakers.empty() ? nullptr : breakers[upstream_index].get();
  }

  std::shared_ptr<const Generation> generation;
  const config::ListenerConfig& config;  // lives in generation->config
  Router router;
  // Where a TLS listener's connections take their context; null for cleartext (h2c).
  std::shared_ptr<tls::ServerContextSlot> tls_slot;
  // This listener's peers and each upstream's breaker (by index in config->upstreams).
  std::shared_ptr<limits::PeerTable> peers;
  std::vector<std::shared_ptr<limits::UpstreamBreaker>> breakers;
};

using ListenerRoutesPtr = std::shared_ptr<const ListenerRoutes>;

}  // namespace sepal
