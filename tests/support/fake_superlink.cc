// Stand-in Flower SuperLink: synchronous grpc++ handlers whose behaviour each request chooses.
#include "tests/support/fake_superlink.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdint>
#include <iostream>
#include <map>
#include <optional>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/strings/escaping.h"
#include "proxy/common/strings.h"
#include "tests/proto/control.grpc.pb.h"
#include "tests/proto/echo.grpc.pb.h"
#include "tests/proto/fleet.grpc.pb.h"
#include "tests/proto/grpcadapter.grpc.pb.h"

namespace sepal::test {

class CallCounters {
 public:
  explicit CallCounters(int max_concurrent_calls) : max_concurrent_(max_concurrent_calls) {}

  // A handler starts: false (and counted as rejected) if max_concurrent_calls are running.
  bool Enter() {
    const int now = active_.fetch_add(1, std::memory_order_acq_rel) + 1;
    if (max_concurrent_ > 0 && now > max_concurrent_) {
      active_.fetch_sub(1, std::memory_order_acq_rel);
      rejected_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    int peak = peak_.load(std::memory_order_relaxed);
    while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
    return true;
  }
  void Leave() { active_.fetch_sub(1, std::memory_order_acq_rel); }
  int Active() const { return active_.load(std::memory_order_acquire); }
  int Peak() const { return peak_.load(std::memory_order_relaxed); }
  void ResetPeak() { peak_.store(Active(), std::memory_order_relaxed); }
  int Rejected() const { return rejected_.load(std::memory_order_relaxed); }

  void RecordCall(const std::string& full_method) {
    {
      std::lock_guard lock(mutex_);
      ++calls_[full_method];
      ++total_calls_;
    }
    changed_.notify_all();
  }

  void RecordCancelled(const std::string& full_method) {
    {
      std::lock_guard lock(mutex_);
      ++cancelled_[full_method];
      ++total_cancelled_;
    }
    changed_.notify_all();
  }

  int CallCount(const std::string& full_method) const {
    std::lock_guard lock(mutex_);
    return Lookup(calls_, full_method);
  }

  int TotalCallCount() const {
    std::lock_guard lock(mutex_);
    return total_calls_;
  }

  int CancelledCount() const {
    std::lock_guard lock(mutex_);
    return total_cancelled_;
  }

  int CancelledCount(const std::string& full_method) const {
    std::lock_guard lock(mutex_);
    return Lookup(cancelled_, full_method);
  }

  bool WaitForCallCount(const std::string& full_method, int n,
                        std::chrono::milliseconds timeout) const {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return Lookup(calls_, full_method) >= n; });
  }

  bool WaitForCancelled(int n, std::chrono::milliseconds timeout) const {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return total_cancelled_ >= n; });
  }

 private:
  static int Lookup(const std::map<std::string, int>& counts, const std::string& key) {
    auto it = counts.find(key);
    return it == counts.end() ? 0 : it->second;
  }

  const int max_concurrent_;
  std::atomic<int> active_{0};
  std::atomic<int> peak_{0};
  std::atomic<int> rejected_{0};
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  std::map<std::string, int> calls_;
  std::map<std::string, int> cancelled_;
  int total_calls_ = 0;
  int total_cancelled_ = 0;
};

namespace {

using flwr::proto::ControlRequest;
using flwr::proto::ControlResponse;
using flwr::proto::FleetRequest;
using flwr::proto::FleetResponse;
using grpc::ServerContext;
using grpc::Status;

// How often a sleeping handler checks whether its call was cancelled.
constexpr auto kCancelPollInterval = std::chrono::milliseconds(5);

bool IsBinaryKey(std::string_view key) { return key.ends_with("-bin"); }

std::string_view View(grpc::string_ref ref) { return {ref.data(), ref.size()}; }

template <typename RepeatedStrings>
void ReportMetadata(const ServerContext& context, RepeatedStrings* lines) {
  for (const auto& [key, value] : context.client_metadata()) {
    lines->Add(FakeSuperLink::FormatMetadata(View(key), View(value)));
  }
}

// grpc++ hands unary requests to handlers read-only, but the message is a mutable object that
// dies with the call: moving its payload out saves a copy of up to 600 MiB.
template <typename Request>
std::string TakePayload(const Request& request) {
  return std::move(*const_cast<Request&>(request).mutable_payload());
}

// Fleet replies: the client metadata "x-reply-bytes: N" asks for a payload of exactly N bytes
// (MakePayload) instead of the echo, so a small request can fetch a large object (PullObject)
// and a large one can get a small answer (PushObject). Absent or not a number: echo.
std::optional<std::size_t> RequestedReplyBytes(const ServerContext& context) {
  const auto found = context.client_metadata().find("x-reply-bytes");
  if (found == context.client_metadata().end()) return std::nullopt;
  std::size_t bytes = 0;
  const std::string_view text = View(found->second);
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), bytes);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  if (bytes > static_cast<std::size_t>(FakeSuperLink::kMaxMessageBytes) - 64) return std::nullopt;
  return bytes;
}

// MakePayload(size), remembered per handler thread: benchmarks ask for the same size again
// and again, and building 5 MiB of it per call would be the stand-in's own cost.
const std::string& CachedPayload(std::size_t size) {
  thread_local std::string cached;
  if (cached.size() != size) cached = FakeSuperLink::MakePayload(size);
  return cached;
}

// Sleeps `ms`, waking early when the call is cancelled. Returns false if it was.
bool SleepUnlessCancelled(ServerContext* context, uint32_t ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!context->IsCancelled()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return true;
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(deadline - now, kCancelPollInterval));
  }
  return false;
}

Status Cancelled() { return Status(grpc::StatusCode::CANCELLED, "cancelled by the client"); }

// Adds every client metadata entry as trailing metadata "echo-<key>"; binary keys keep
// their "-bin" suffix, so grpc carries their values base64-encoded and decodes them again.
void EchoMetadataAsTrailers(ServerContext* context) {
  for (const auto& [key, value] : context->client_metadata()) {
    context->AddTrailingMetadata("echo-" + std::string(View(key)), std::string(View(value)));
  }
}

// Per-call bookkeeping every handler starts with: admits the call under
// max_concurrent_calls (a handler returns Rejected() at once when it is not admitted),
// counts it, marks the reply as coming from the stand-in with initial metadata
// "x-superlink: stand-in", and on the way out records whether the call was cancelled
// meanwhile. Without `tag_reply` (and for a refused call) grpc can answer trailers-only.
class CallScope {
 public:
  CallScope(CallCounters& counters, ServerContext* context, std::string full_method,
            bool tag_reply = true)
      : counters_(counters),
        context_(context),
        full_method_(std::move(full_method)),
        admitted_(counters_.Enter()) {
    if (!admitted_) return;
    counters_.RecordCall(full_method_);
    if (tag_reply) context_->AddInitialMetadata("x-superlink", "stand-in");
  }
  CallScope(const CallScope&) = delete;
  CallScope& operator=(const CallScope&) = delete;
  ~CallScope() {
    if (!admitted_) return;
    counters_.Leave();
    if (context_->IsCancelled()) counters_.RecordCancelled(full_method_);
  }

  bool admitted() const { return admitted_; }

 private:
  CallCounters& counters_;
  ServerContext* context_;
  std::string full_method_;
  const bool admitted_;
};

// What grpcio answers past maximum_concurrent_rpcs.
Status Rejected() {
  return Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!");
}

// flwr.proto.Fleet: every method echoes node and payload (or answers RequestedReplyBytes);
// RegisterNode and CreateNode assign a fresh node id.
class FleetService final : public flwr::proto::Fleet::Service {
 public:
  explicit FleetService(CallCounters& counters) : counters_(counters) {}

  Status RegisterNode(ServerContext* c, const FleetRequest* q, FleetResponse* r) override {
    return ReplyWithNewNode("RegisterNode", c, *q, r);
  }
  Status ActivateNode(ServerContext* c, const FleetRequest* q, FleetResponse* r) override {
    return Reply("ActivateNode", c, *q, r);
  }
  Status DeactivateNode(ServerContext* c, const FleetRequest* q, FleetResponse* r) override {
    return Reply("DeactivateNode", c, *q, r);
  }
  Status UnregisterNode(ServerContext* c, const FleetRequest* q, FleetResponse* r) override {
    return Reply("UnregisterNode", c, *q, r);
  }
  Status CreateNode(ServerContext* c, const FleetRequest* q, FleetResponse* r) override {
    return ReplyWithNewNode("CreateNode", c, *q, r);
  }
  Status DeleteNode(ServerContext* c, const FleetRequest* q, FleetResponse* r) override {
    return Reply("DeleteNode", c, *q, r);
  }
  Status SendNodeHeartbeat(ServerContext* c, const FleetRequest* q, FleetResponse* r) override {
    return Reply("SendNodeHeartbeat", c, *q, r);
  }
  Status Ping(ServerContext* c, const FleetRequest* q, FleetResponse* r) override {
    return Reply("Ping", c, *q, r);
  }
  Status PullMessages(ServerContext* c, const FleetRequest* q, FleetResponse* r) override {
    return Reply("PullMessages", c, *q, r);
  }
  Status PushMessages(ServerContext* c, const FleetRequest* q, FleetResponse* r) override {
    return Reply("PushMessages", c, *q, r);
  }
  Status GetRun(ServerContext* c, const FleetRequest* q, FleetResponse* r) override {
    return Reply("GetRun", c, *q, r);
  }
  Status GetFab(ServerContext* c, const FleetRequest* q, FleetResponse* r) override {
    return Reply("GetFab", c, *q, r);
  }
  Status PullObject(ServerContext* c, const FleetRequest* q, FleetResponse* r) override {
    return Reply("PullObject", c, *q, r);
  }
  Status PushObject(ServerContext* c, const FleetRequest* q, FleetResponse* r) override {
    return Reply("PushObject", c, *q, r);
  }
  Status ConfirmMessageReceived(ServerContext* c, const FleetRequest* q,
                                FleetResponse* r) override {
    return Reply("ConfirmMessageReceived", c, *q, r);
  }
  Status PullTaskIns(ServerContext* c, const FleetRequest* q, FleetResponse* r) override {
    return Reply("PullTaskIns", c, *q, r);
  }
  Status PushTaskRes(ServerContext* c, const FleetRequest* q, FleetResponse* r) override {
    return Reply("PushTaskRes", c, *q, r);
  }

 private:
  Status Reply(std::string_view method, ServerContext* context, const FleetRequest& request,
               FleetResponse* response) {
    CallScope call(counters_, context, "/flwr.proto.Fleet/" + std::string(method));
    if (!call.admitted()) return Rejected();
    *response->mutable_node() = request.node();
    if (const auto bytes = RequestedReplyBytes(*context)) {
      response->set_payload(CachedPayload(*bytes));
    } else {
      response->set_payload(TakePayload(request));
    }
    ReportMetadata(*context, response->mutable_seen_metadata());
    return Status::OK;
  }
  // RegisterNode (Flower 1.23) and CreateNode (older): the reply names a fresh node id.
  Status ReplyWithNewNode(std::string_view method, ServerContext* context,
                          const FleetRequest& request, FleetResponse* response) {
    Status status = Reply(method, context, request, response);
    if (status.ok()) response->mutable_node()->set_node_id(next_node_id_.fetch_add(1));
    return status;
  }

  CallCounters& counters_;
  std::atomic<uint64_t> next_node_id_{1};
};

// flwr.proto.GrpcAdapter (--fleet-api-type grpc-adapter): SendReceive unwraps the Fleet
// request named by grpc_message_name, counts it under that Fleet method too (so tests see what
// really reached the SuperLink), and wraps the reply as Flower does: "<Method>Response"
// carrying a FleetResponse that echoes node and payload. A name Flower does not know is
// answered UNKNOWN, as Flower's servicer raises ValueError.
class GrpcAdapterService final : public flwr::proto::GrpcAdapter::Service {
 public:
  explicit GrpcAdapterService(CallCounters& counters) : counters_(counters) {}

  Status SendReceive(ServerContext* context, const flwr::proto::MessageContainer* request,
                     flwr::proto::MessageContainer* response) override {
    CallScope call(counters_, context, "/flwr.proto.GrpcAdapter/SendReceive");
    if (!call.admitted()) return Rejected();
    static constexpr std::string_view kKnown[] = {
        "RegisterNode", "ActivateNode", "DeactivateNode", "UnregisterNode", "CreateNode",
        "DeleteNode",   "Ping",         "SendNodeHeartbeat", "GetRun",      "GetFab",
        "PullMessages", "PushMessages", "PullObject",   "PushObject", "ConfirmMessageReceived"};
    const std::string& name = request->grpc_message_name();
    std::string_view suffix = "Request";
    std::string_view method = name;
    if (method.ends_with(suffix)) method.remove_suffix(suffix.size());
    if (!name.ends_with(suffix) ||
        std::find(std::begin(kKnown), std::end(kKnown), method) == std::end(kKnown)) {
      return Status(grpc::StatusCode::UNKNOWN, "Invalid grpc_message_name: " + name);
    }
    counters_.RecordCall(StrCat("/flwr.proto.Fleet/", method));
    FleetRequest wrapped;
    if (!wrapped.ParseFromString(request->grpc_message_content())) {
      return Status(grpc::StatusCode::UNKNOWN, "cannot parse " + name);
    }
    FleetResponse reply;
    *reply.mutable_node() = wrapped.node();
    reply.set_payload(TakePayload(wrapped));
    ReportMetadata(*context, reply.mutable_seen_metadata());
    (*response->mutable_metadata())["grpc-message-qualname"] = StrCat(method, "Response");
    response->set_grpc_message_name(StrCat(method, "Response"));
    response->set_grpc_message_content(reply.SerializeAsString());
    return Status::OK;
  }

 private:
  CallCounters& counters_;
};

// flwr.proto.Control and its older name flwr.proto.Exec: unary methods echo run id and
// payload; StreamLogs sends `log_lines` lines `interval_ms` apart.
template <typename BaseService>
class ControlService final : public BaseService {
 public:
  ControlService(CallCounters& counters, std::string service_name)
      : counters_(counters), prefix_(StrCat("/", service_name, "/")) {}

  Status StartRun(ServerContext* c, const ControlRequest* q, ControlResponse* r) override {
    return Reply("StartRun", c, *q, r);
  }
  Status StopRun(ServerContext* c, const ControlRequest* q, ControlResponse* r) override {
    return Reply("StopRun", c, *q, r);
  }
  Status ListRuns(ServerContext* c, const ControlRequest* q, ControlResponse* r) override {
    return Reply("ListRuns", c, *q, r);
  }
  Status GetLoginDetails(ServerContext* c, const ControlRequest* q, ControlResponse* r) override {
    return Reply("GetLoginDetails", c, *q, r);
  }
  Status GetAuthTokens(ServerContext* c, const ControlRequest* q, ControlResponse* r) override {
    return Reply("GetAuthTokens", c, *q, r);
  }

  Status StreamLogs(ServerContext* context, const ControlRequest* request,
                    grpc::ServerWriter<ControlResponse>* writer) override {
    CallScope call(counters_, context, prefix_ + "StreamLogs");
    if (!call.admitted()) return Rejected();
    for (uint32_t line = 0; line < request->log_lines(); ++line) {
      if (line > 0 && !SleepUnlessCancelled(context, request->interval_ms())) return Cancelled();
      ControlResponse response;
      response.set_run_id(request->run_id());
      response.set_log_output("log line " + std::to_string(line + 1) + " of " +
                              std::to_string(request->log_lines()));
      if (line == 0) ReportMetadata(*context, response.mutable_seen_metadata());
      if (!writer->Write(response)) return Cancelled();
    }
    return Status::OK;
  }

 private:
  Status Reply(std::string_view method, ServerContext* context, const ControlRequest& request,
               ControlResponse* response) {
    CallScope call(counters_, context, prefix_ + std::string(method));
    if (!call.admitted()) return Rejected();
    response->set_run_id(request.run_id());
    response->set_payload(TakePayload(request));
    ReportMetadata(*context, response->mutable_seen_metadata());
    return Status::OK;
  }

  CallCounters& counters_;
  const std::string prefix_;
};

// The reply payload a request asks for: `response_size` generated bytes, else `echoed`.
std::string ReplyPayload(const EchoRequest& request, std::string echoed) {
  if (request.response_size() > 0) return FakeSuperLink::MakePayload(request.response_size());
  return echoed;
}

Status RequestedStatus(const EchoRequest& request) {
  return Status(static_cast<grpc::StatusCode>(request.status_code()), request.status_message());
}

// sepal.test.Echo: every gRPC call kind, driven by the fields of EchoRequest. A non-zero
// status_code ends the call with that status after the replies the request asked for.
// Initial metadata makes grpc send a HEADERS frame of its own, so an immediate Echo.Unary
// error goes without it: that is how tests get a trailers-only reply from the upstream.
bool TrailersOnly(const EchoRequest& request) {
  return request.status_code() != 0 && request.sleep_ms() == 0;
}

// Echo.Unary once its request is in.
Status AnswerUnary(ServerContext* context, const EchoRequest& request, EchoResponse* response) {
  if (!SleepUnlessCancelled(context, request.sleep_ms())) return Cancelled();
  if (request.echo_metadata()) EchoMetadataAsTrailers(context);
  if (request.status_code() != 0) return RequestedStatus(request);
  response->set_payload(ReplyPayload(request, TakePayload(request)));
  ReportMetadata(*context, response->mutable_seen_metadata());
  return Status::OK;
}

// `Base` is Echo::Service, or its variant whose Unary handler starts on the request HEADERS
// (StreamedEchoService below).
template <typename Base>
class EchoService : public Base {
 public:
  explicit EchoService(CallCounters& counters) : counters_(counters) {}

  Status Unary(ServerContext* context, const EchoRequest* request,
               EchoResponse* response) override {
    CallScope call(counters_, context, "/sepal.test.Echo/Unary", !TrailersOnly(*request));
    if (!call.admitted()) return Rejected();
    return AnswerUnary(context, *request, response);
  }

  // Reads everything, then replies once; the first request decides sleep, status, trailers
  // and the reply size. received_bytes counts payload bytes.
  Status ClientStream(ServerContext* context, grpc::ServerReader<EchoRequest>* reader,
                      EchoResponse* response) override {
    CallScope call(counters_, context, "/sepal.test.Echo/ClientStream");
    if (!call.admitted()) return Rejected();
    EchoRequest first;
    EchoRequest request;
    uint64_t bytes = 0;
    uint32_t messages = 0;
    while (reader->Read(&request)) {
      bytes += request.payload().size();
      if (messages++ == 0) {
        request.clear_payload();  // only its instructions are needed later
        first = std::move(request);
      }
    }
    if (context->IsCancelled()) return Cancelled();
    if (!SleepUnlessCancelled(context, first.sleep_ms())) return Cancelled();
    if (first.echo_metadata()) EchoMetadataAsTrailers(context);
    if (first.status_code() != 0) return RequestedStatus(first);
    response->set_payload(ReplyPayload(first, {}));
    response->set_received_bytes(bytes);
    response->set_received_messages(messages);
    ReportMetadata(*context, response->mutable_seen_metadata());
    return Status::OK;
  }

  // `response_count` replies, each after `sleep_ms`; only the first carries seen_metadata.
  Status ServerStream(ServerContext* context, const EchoRequest* request,
                      grpc::ServerWriter<EchoResponse>* writer) override {
    CallScope call(counters_, context, "/sepal.test.Echo/ServerStream");
    if (!call.admitted()) return Rejected();
    if (request->echo_metadata()) EchoMetadataAsTrailers(context);
    EchoResponse response;
    response.set_payload(ReplyPayload(*request, TakePayload(*request)));
    for (uint32_t i = 0; i < request->response_count(); ++i) {
      if (!SleepUnlessCancelled(context, request->sleep_ms())) return Cancelled();
      if (i == 0) ReportMetadata(*context, response.mutable_seen_metadata());
      if (!writer->Write(response)) return Cancelled();
      if (i == 0) response.clear_seen_metadata();
    }
    if (request->status_code() != 0) return RequestedStatus(*request);
    return Status::OK;
  }

  // Answers each request as it arrives, in order; ends when the client half-closes, or with
  // the status of the first request that sets status_code.
  Status Bidi(ServerContext* context,
              grpc::ServerReaderWriter<EchoResponse, EchoRequest>* stream) override {
    CallScope call(counters_, context, "/sepal.test.Echo/Bidi");
    if (!call.admitted()) return Rejected();
    EchoRequest request;
    EchoResponse response;
    uint64_t bytes = 0;
    uint32_t messages = 0;
    bool metadata_echoed = false;
    while (stream->Read(&request)) {
      bytes += request.payload().size();
      ++messages;
      if (!SleepUnlessCancelled(context, request.sleep_ms())) return Cancelled();
      if (request.echo_metadata() && !metadata_echoed) {
        EchoMetadataAsTrailers(context);
        metadata_echoed = true;
      }
      if (request.status_code() != 0) return RequestedStatus(request);
      response.Clear();
      response.set_payload(ReplyPayload(request, std::move(*request.mutable_payload())));
      response.set_received_bytes(bytes);
      response.set_received_messages(messages);
      if (messages == 1) ReportMetadata(*context, response.mutable_seen_metadata());
      if (!stream->Write(response)) return Cancelled();
    }
    if (context->IsCancelled()) return Cancelled();
    return Status::OK;
  }

 protected:
  CallCounters& counters_;
};

// With max_concurrent_calls: grpcio counts a call against maximum_concurrent_rpcs from its
// HEADERS, before the request message arrives, so a client that never sends the body holds a
// slot. grpc++ hands a plain unary handler its call only with the message; as a streamed unary
// the handler starts on the HEADERS and waits for the message itself, holding its slot.
class StreamedEchoService final
    : public EchoService<
          sepal::test::Echo::WithStreamedUnaryMethod_Unary<sepal::test::Echo::Service>> {
 public:
  using EchoService::EchoService;

  Status StreamedUnary(ServerContext* context,
                       grpc::ServerUnaryStreamer<EchoRequest, EchoResponse>* stream) override {
    CallScope call(counters_, context, "/sepal.test.Echo/Unary", false);
    if (!call.admitted()) return Rejected();
    EchoRequest request;
    if (!stream->Read(&request)) {
      if (context->IsCancelled()) return Cancelled();
      return Status(grpc::StatusCode::INTERNAL, "no request message");
    }
    if (!TrailersOnly(request)) context->AddInitialMetadata("x-superlink", "stand-in");
    EchoResponse response;
    Status status = AnswerUnary(context, request, &response);
    if (status.ok() && !stream->Write(response)) return Cancelled();
    return status;
  }
};

bool IsUnixAddress(std::string_view address) {
  return address.starts_with("unix:") || address.starts_with("unix-abstract:");
}

// "127.0.0.1:0" -> "127.0.0.1:41234": the address a client dials to reach the chosen port.
std::string DialableAddress(const std::string& requested, int selected_port) {
  if (IsUnixAddress(requested)) return requested;
  const auto colon = requested.rfind(':');
  if (colon == std::string::npos) return requested;
  return requested.substr(0, colon + 1) + std::to_string(selected_port);
}

}  // namespace

FakeSuperLink::FakeSuperLink(int max_concurrent_calls)
    : counters_(std::make_unique<CallCounters>(max_concurrent_calls)) {}

FakeSuperLink::~FakeSuperLink() { Shutdown(); }

std::unique_ptr<FakeSuperLink> FakeSuperLink::Start(const std::string& address) {
  Options options;
  options.addresses.push_back(address);
  return Start(std::move(options));
}

std::unique_ptr<FakeSuperLink> FakeSuperLink::Start(Options options) {
  if (options.addresses.empty()) {
    std::cerr << "FakeSuperLink: no address to listen on\n";
    return nullptr;
  }
  std::unique_ptr<FakeSuperLink> link(new FakeSuperLink(std::max(0, options.max_concurrent_calls)));
  link->shutdown_grace_ = options.shutdown_grace;
  CallCounters& counters = *link->counters_;
  link->services_.push_back(std::make_unique<FleetService>(counters));
  link->services_.push_back(std::make_unique<GrpcAdapterService>(counters));
  link->services_.push_back(std::make_unique<ControlService<flwr::proto::Control::Service>>(
      counters, "flwr.proto.Control"));
  link->services_.push_back(
      std::make_unique<ControlService<flwr::proto::Exec::Service>>(counters, "flwr.proto.Exec"));
  if (options.max_concurrent_calls > 0) {
    link->services_.push_back(std::make_unique<StreamedEchoService>(counters));
  } else {
    link->services_.push_back(std::make_unique<EchoService<sepal::test::Echo::Service>>(counters));
  }

  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  // A port already in use must fail loudly instead of splitting connections with its owner.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  if (options.threads > 0) {
    builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::NUM_CQS, options.threads);
  }
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options.tls_certificate_pem.empty()) {
    grpc::SslServerCredentialsOptions tls;
    tls.pem_key_cert_pairs.push_back({options.tls_private_key_pem, options.tls_certificate_pem});
    if (!options.tls_client_ca_pem.empty()) {
      tls.pem_root_certs = options.tls_client_ca_pem;
      tls.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    credentials = grpc::SslServerCredentials(tls);
  }
  std::vector<int> selected_ports(options.addresses.size(), 0);
  for (std::size_t i = 0; i < options.addresses.size(); ++i) {
    builder.AddListeningPort(options.addresses[i], credentials, &selected_ports[i]);
  }
  for (const auto& service : link->services_) builder.RegisterService(service.get());

  link->server_ = builder.BuildAndStart();
  if (!link->server_) {
    std::cerr << "FakeSuperLink: cannot start a server on the given addresses\n";
    return nullptr;
  }
  for (std::size_t i = 0; i < options.addresses.size(); ++i) {
    if (selected_ports[i] == 0) {
      std::cerr << "FakeSuperLink: cannot listen on " << options.addresses[i] << "\n";
      return nullptr;  // the destructor shuts down what did start
    }
    const bool tcp = !IsUnixAddress(options.addresses[i]);
    if (tcp && link->port_ == 0) link->port_ = selected_ports[i];
    link->addresses_.push_back(DialableAddress(options.addresses[i], tcp ? selected_ports[i] : 0));
  }
  return link;
}

void FakeSuperLink::Shutdown() {
  std::lock_guard lock(shutdown_mutex_);
  if (shut_down_ || !server_) return;
  shut_down_ = true;
  server_->Shutdown(std::chrono::system_clock::now() + shutdown_grace_);
  server_->Wait();
}

int FakeSuperLink::CallCount(const std::string& full_method) const {
  return counters_->CallCount(full_method);
}

int FakeSuperLink::TotalCallCount() const { return counters_->TotalCallCount(); }

bool FakeSuperLink::WaitForCallCount(const std::string& full_method, int n,
                                     std::chrono::milliseconds timeout) const {
  return counters_->WaitForCallCount(full_method, n, timeout);
}

int FakeSuperLink::CancelledCount() const { return counters_->CancelledCount(); }

int FakeSuperLink::CancelledCount(const std::string& full_method) const {
  return counters_->CancelledCount(full_method);
}

bool FakeSuperLink::WaitForCancelled(int n, std::chrono::milliseconds timeout) const {
  return counters_->WaitForCancelled(n, timeout);
}

int FakeSuperLink::ActiveCalls() const { return counters_->Active(); }

int FakeSuperLink::PeakActiveCalls() const { return counters_->Peak(); }

void FakeSuperLink::ResetPeak() { counters_->ResetPeak(); }

int FakeSuperLink::RejectedCount() const { return counters_->Rejected(); }

std::string FakeSuperLink::StatsJson() const {
  return StrCat("{\"calls\":", TotalCallCount(), ",\"active\":", ActiveCalls(),
                ",\"peak\":", PeakActiveCalls(), ",\"rejected\":", RejectedCount(),
                ",\"cancelled\":", CancelledCount(), "}");
}

std::string FakeSuperLink::FormatMetadata(std::string_view key, std::string_view value) {
  std::string line(key);
  line += '=';
  line += IsBinaryKey(key) ? absl::Base64Escape(absl::string_view(value.data(), value.size()))
                           : std::string(value);
  return line;
}

std::string FakeSuperLink::MakePayload(std::size_t size) {
  std::string payload(size, '\0');
  for (std::size_t i = 0; i < size; ++i) payload[i] = static_cast<char>('a' + i % 26);
  return payload;
}

}  // namespace sepal::test
