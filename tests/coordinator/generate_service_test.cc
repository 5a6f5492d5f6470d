// The public service (coordinator/generate_service.h) on a real in-process gRPC server, called
// through a generated stub:
//   - with scripted replicas: every INVALID_ARGUMENT case names its field (and nothing reaches a
//     replica), UNAVAILABLE lists the replica states, routing picks the least-loaded ready
//     replica and passes a full queue's request on, Tokenize equals the tokenizer, GetModelInfo
//     reports the loads, a streamed answer reaches the client in order;
//   - with a real Scheduler over a LocalExecutor (tiny synthetic llama; the real model when
//     TESSERA_TEST_MODEL exists): the streamed tokens and text equal in-process Generate()
//     (model/generate.h, an independent single-sequence loop over its own Engine), a cancelled
//     client frees its KV blocks, a full queue answers RESOURCE_EXHAUSTED, a deadline answers
//     DEADLINE_EXCEEDED and frees the blocks.
// No timed assertions: progress is observed by polling GetModelInfo with generous limits, and a
// gate in front of the executor holds steps where a test needs a request to stay in flight.
#include "coordinator/generate_service.h"

#include <unistd.h>

#include <cstdlib>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/local_executor.h"
#include "coordinator/scheduler.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/generate.h"
#include "model/weights.h"
#include "tests/common/tiny_llama.h"
#include "worker/grpc_server.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

// ---- The tiny model the coordinator "serves": the tiny llama shape with a 96-token byte-level
// BPE vocabulary: '!'..'}' (ids 0..92), 'Ġ' (space, 93), 'Ċ' (newline, 94) and the control
// token <|endoftext|> (95, EOS). No merges: every character is its own token.
std::unique_ptr<Tokenizer> TinyTokenizer() {
  TokenizerVocab v;
  v.source = "tiny vocab";
  v.model = "gpt2";
  for (char c = '!'; c <= '}'; ++c) v.tokens.push_back(std::string(1, c));
  v.tokens.push_back("\xC4\xA0");  // U+0120 'Ġ'
  v.tokens.push_back("\xC4\x8A");  // U+010A 'Ċ'
  v.tokens.push_back("<|endoftext|>");
  v.token_types.assign(v.tokens.size(), static_cast<int32_t>(TokenType::kNormal));
  v.token_types.back() = static_cast<int32_t>(TokenType::kControl);
  v.eos_id = 95;
  auto t = Tokenizer::Create(std::move(v));
  EXPECT_TRUE(t.ok()) << t.status();
  return *std::move(t);
}

std::unique_ptr<ServedModel> TinyServedModel(int64_t n_ctx = 64) {
  ModelConfig c = testing_util::TinyLlamaConfig();
  c.n_ctx = n_ctx;
  auto chat = ChatTemplate::FromName("chatml");
  EXPECT_TRUE(chat.ok()) << chat.status();
  auto m = ServedModel::FromParts("tiny", "Q8_0", c, TinyTokenizer(), *chat);
  EXPECT_TRUE(m.ok()) << m.status();
  return *std::move(m);
}

// ---- A replica whose load and answers the test scripts.
struct ScriptedReplica {
  absl::Mutex mu;
  ReplicaLoad load;
  absl::Status answer;  // what submit returns
  std::vector<ScheduledRequest> got;
  // When set, an accepted request is answered at once with these messages.
  std::vector<v1::GenerateResponse> reply;

  ServiceReplica AsReplica() {
    return {[this](ScheduledRequest r) {
              absl::MutexLock l(&mu);
              if (!answer.ok()) return answer;
              for (const v1::GenerateResponse& m : reply) r.stream->Push(m);
              if (!reply.empty()) r.stream->Finish(absl::OkStatus());
              got.push_back(std::move(r));
              return absl::OkStatus();
            },
            [this] {
              absl::MutexLock l(&mu);
              return load;
            }};
  }
  size_t n_got() {
    absl::MutexLock l(&mu);
    return got.size();
  }
};

ReplicaLoad Ready(int64_t waiting, int64_t running, int64_t used = 0, int64_t total = 100) {
  ReplicaLoad l;
  l.ready = true;
  l.state = "ready";
  l.waiting = waiting;
  l.running = running;
  l.kv_blocks_used = used;
  l.kv_blocks_total = total;
  return l;
}

// A server with the service, and a client stub.
class Served {
 public:
  Served(const ServedModel& model, std::vector<ServiceReplica> replicas,
         GenerateServiceOptions options = {})
      : service_(model, std::move(replicas), std::move(options)) {
    auto s = StartGrpcServer("127.0.0.1:0", {&service_});
    EXPECT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_.port),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::Tessera::NewStub(channel_);
  }
  ~Served() { server_.server->Shutdown(std::chrono::system_clock::now()); }

  v1::Tessera::Stub& stub() { return *stub_; }
  GenerateService& service() { return service_; }

  struct Answer {
    grpc::Status status;
    std::vector<v1::GenerateResponse> messages;
    std::string text;
    std::vector<int32_t> ids;
  };
  Answer Generate(const v1::GenerateRequest& req, absl::Duration timeout = absl::Seconds(60)) {
    Answer a;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    auto reader = stub_->Generate(&ctx, req);
    v1::GenerateResponse m;
    while (reader->Read(&m)) {
      a.text += m.text();
      for (const v1::Token& t : m.tokens()) a.ids.push_back(t.id());
      a.messages.push_back(m);
    }
    a.status = reader->Finish();
    return a;
  }
  v1::ModelInfo Info() {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    v1::ModelInfo info;
    grpc::Status s = stub_->GetModelInfo(&ctx, {}, &info);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return info;
  }

 private:
  GenerateService service_;
  GrpcServer server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Tessera::Stub> stub_;
};

v1::GenerateRequest Prompt(const std::string& text, uint32_t max_tokens = 4) {
  v1::GenerateRequest r;
  r.set_prompt(text);
  r.set_max_tokens(max_tokens);
  r.mutable_sampling()->set_temperature(0);
  return r;
}

// ---------------------------------------------------------------------------------------------

TEST(GenerateServiceTest, EveryBadParameterIsInvalidArgumentNamingTheField) {
  auto model = TinyServedModel();
  ScriptedReplica replica;
  replica.load = Ready(0, 0);
  Served s(*model, {replica.AsReplica()});

  struct Case {
    std::string what;
    v1::GenerateRequest req;
    std::string word;  // the message must name it
  };
  std::vector<Case> cases;
  auto add = [&](std::string what, std::string word, auto edit) {
    v1::GenerateRequest r = Prompt("hello");
    edit(r);
    cases.push_back({std::move(what), std::move(r), std::move(word)});
  };
  add("no input", "prompt", [](v1::GenerateRequest& r) { r.clear_prompt(); });
  add("empty prompt", "prompt", [](v1::GenerateRequest& r) { r.set_prompt(""); });
  add("empty chat", "chat.messages", [](v1::GenerateRequest& r) { r.mutable_chat(); });
  add("unknown role", "role", [](v1::GenerateRequest& r) {
    auto* m = r.mutable_chat()->add_messages();
    m->set_role("user");
    m->set_content("hi");
    m = r.mutable_chat()->add_messages();
    m->set_role("wizard");
    m->set_content("hi");
  });
  add("temperature", "temperature",
      [](v1::GenerateRequest& r) { r.mutable_sampling()->set_temperature(-1); });
  add("top_k", "top_k", [](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_k(-2); });
  add("top_p", "top_p", [](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_p(1.5f); });
  add("min_p", "min_p", [](v1::GenerateRequest& r) { r.mutable_sampling()->set_min_p(2); });
  add("repetition_penalty", "repetition_penalty",
      [](v1::GenerateRequest& r) { r.mutable_sampling()->set_repetition_penalty(0); });
  add("frequency_penalty", "frequency_penalty",
      [](v1::GenerateRequest& r) { r.mutable_sampling()->set_frequency_penalty(2.5f); });
  add("presence_penalty", "presence_penalty",
      [](v1::GenerateRequest& r) { r.mutable_sampling()->set_presence_penalty(-3); });
  add("logprobs", "logprobs", [](v1::GenerateRequest& r) { r.set_logprobs(21); });
  add("empty stop string", "stop", [](v1::GenerateRequest& r) { r.add_stop(""); });
  add("too many stop strings", "stop", [](v1::GenerateRequest& r) {
    for (int i = 0; i < 17; ++i) r.add_stop(absl::StrCat("s", i));
  });
  add("long stop string", "stop",
      [](v1::GenerateRequest& r) { r.add_stop(std::string(300, 'x')); });
  add("negative stop id", "stop_token_ids",
      [](v1::GenerateRequest& r) { r.add_stop_token_ids(-1); });
  add("stop id past the vocabulary", "stop_token_ids",
      [](v1::GenerateRequest& r) { r.add_stop_token_ids(96); });
  add("request_id too long", "request_id",
      [](v1::GenerateRequest& r) { r.set_request_id(std::string(300, 'r')); });
  // "hello" is 5 tokens (no BOS in this vocabulary); the context is 64.
  add("max_tokens over the context", "max_tokens",
      [](v1::GenerateRequest& r) { r.set_max_tokens(60); });
  add("prompt as long as the context", "prompt",
      [](v1::GenerateRequest& r) { r.set_prompt(std::string(64, 'a')); });

  for (const Case& c : cases) {
    Served::Answer a = s.Generate(c.req);
    EXPECT_EQ(a.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.what;
    EXPECT_THAT(a.status.error_message(), HasSubstr(c.word)) << c.what;
  }
  EXPECT_EQ(replica.n_got(), 0u);

  // The limits themselves are fine: 59 tokens after a 5-token prompt fill the context exactly,
  // a 63-token prompt leaves one token, 20 logprobs and 16 stop strings are allowed.
  v1::GenerateRequest edge = Prompt("hello", 59);
  edge.set_logprobs(20);
  for (int i = 0; i < 16; ++i) edge.add_stop(absl::StrCat("s", i));
  {
    absl::MutexLock l(&replica.mu);
    v1::GenerateResponse last;
    last.set_finish_reason(v1::FINISH_REASON_LENGTH);
    replica.reply = {last};
  }
  EXPECT_TRUE(s.Generate(edge).status.ok());
  EXPECT_TRUE(s.Generate(Prompt(std::string(63, 'a'), 1)).status.ok());
  ASSERT_EQ(replica.n_got(), 2u);
  absl::MutexLock l(&replica.mu);
  EXPECT_EQ(replica.got[0].stop.max_tokens, 59);
  EXPECT_EQ(replica.got[0].sampling.n_logprobs, 20);
  EXPECT_TRUE(replica.got[0].logprob_of_chosen);
  EXPECT_EQ(replica.got[0].stop.stop_strings.size(), 16u);
  EXPECT_EQ(replica.got[0].stop.eos_token_ids, std::vector<int32_t>{95});
  EXPECT_EQ(replica.got[1].prompt.size(), 63u);
}

TEST(GenerateServiceTest, MaxTokensZeroTakesTheDefaultCutToTheContext) {
  auto model = TinyServedModel();
  ScriptedReplica replica;
  replica.load = Ready(0, 0);
  v1::GenerateResponse last;
  last.set_finish_reason(v1::FINISH_REASON_LENGTH);
  replica.reply = {last};
  GenerateServiceOptions o;
  o.prepare.default_max_tokens = 10;
  Served s(*model, {replica.AsReplica()}, o);
  EXPECT_TRUE(s.Generate(Prompt("hello", 0)).status.ok());
  EXPECT_TRUE(s.Generate(Prompt(std::string(60, 'a'), 0)).status.ok());
  absl::MutexLock l(&replica.mu);
  ASSERT_EQ(replica.got.size(), 2u);
  EXPECT_EQ(replica.got[0].stop.max_tokens, 10);
  EXPECT_EQ(replica.got[1].stop.max_tokens, 4);  // 64 - 60
}

TEST(GenerateServiceTest, TokenizesLikeTheTokenizerAndTheChatTemplate) {
  auto model = TinyServedModel();
  ScriptedReplica replica;
  replica.load = Ready(0, 0);
  Served s(*model, {replica.AsReplica()});

  // Text: one token per character here ('h' = 'h' - '!', space = 93).
  v1::TokenizeRequest req;
  req.set_text("hi there");
  v1::TokenizeResponse resp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(s.stub().Tokenize(&ctx, req, &resp).ok());
  }
  std::vector<int32_t> want = {'h' - '!', 'i' - '!', 93,        't' - '!',
                               'h' - '!', 'e' - '!', 'r' - '!', 'e' - '!'};
  EXPECT_EQ(std::vector<int32_t>(resp.ids().begin(), resp.ids().end()), want);
  ASSERT_EQ(resp.pieces_size(), 8);
  EXPECT_EQ(resp.pieces(0), "h");
  EXPECT_EQ(resp.pieces(2), " ");

  // Chat: the ChatML text, its markers spelled out character by character in this vocabulary.
  v1::TokenizeRequest chat;
  auto* m = chat.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("Hi");
  resp.Clear();
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(s.stub().Tokenize(&ctx, chat, &resp).ok());
  }
  auto rendered = model->chat_template->Render({{"user", "Hi"}}, true);
  ASSERT_TRUE(rendered.ok());
  EXPECT_EQ(*rendered, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  auto ids = model->tokenizer->Encode(*rendered, true, true);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(std::vector<int32_t>(resp.ids().begin(), resp.ids().end()), *ids);
  EXPECT_EQ(static_cast<size_t>(resp.ids_size()), rendered->size());  // one per character

  // Errors name the field.
  v1::TokenizeRequest empty;
  grpc::ClientContext ctx;
  grpc::Status st = s.stub().Tokenize(&ctx, empty, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("text"));
}

TEST(GenerateServiceTest, TokenPieceShowsBytesThatAreNotUtf8AsHex) {
  TokenizerVocab v;
  v.model = "llama";
  v.tokens = {"<unk>", "a", "\xE2\x96\x81"};
  for (int b = 0; b < 256; ++b) v.tokens.push_back(absl::StrFormat("<0x%02X>", b));
  v.token_types.assign(v.tokens.size(), static_cast<int32_t>(TokenType::kByte));
  v.token_types[0] = static_cast<int32_t>(TokenType::kUnknown);
  v.token_types[1] = v.token_types[2] = static_cast<int32_t>(TokenType::kNormal);
  v.unk_id = 0;
  auto t = Tokenizer::Create(std::move(v));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(TokenPiece(**t, 1), "a");
  EXPECT_EQ(TokenPiece(**t, 3 + 0x41), "A");       // byte token of an ASCII byte
  EXPECT_EQ(TokenPiece(**t, 3 + 0xE2), "<0xE2>");  // a lone UTF-8 lead byte
}

TEST(GenerateServiceTest, NoReadyReplicaIsUnavailableListingTheStates) {
  auto model = TinyServedModel();
  ScriptedReplica a, b;
  a.load.state = "waiting for 2 of 4 workers";
  b.load.state = "failed: worker w3 (127.0.0.1:7001) went away";
  Served s(*model, {a.AsReplica(), b.AsReplica()});
  Served::Answer ans = s.Generate(Prompt("hello"));
  EXPECT_EQ(ans.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(ans.status.error_message(), HasSubstr("replica 0: waiting for 2 of 4 workers"));
  EXPECT_THAT(ans.status.error_message(), HasSubstr("replica 1: failed: worker w3"));
  EXPECT_EQ(a.n_got() + b.n_got(), 0u);
}

TEST(GenerateServiceTest, RoutesToTheLeastLoadedReadyReplica) {
  auto model = TinyServedModel();
  ScriptedReplica busy, idle, down;
  busy.load = Ready(2, 3);
  idle.load = Ready(0, 1);
  down.load.state = "loading";
  Served s(*model, {busy.AsReplica(), down.AsReplica(), idle.AsReplica()});
  ScheduledRequest r;
  r.prompt = {1};
  ASSERT_TRUE(s.service().Route(r).ok());
  EXPECT_EQ(idle.n_got(), 1u);

  // Equal sequence counts: the emptier KV cache wins.
  {
    absl::MutexLock l(&busy.mu);
    busy.load = Ready(0, 1, 10, 100);
  }
  {
    absl::MutexLock l(&idle.mu);
    idle.load = Ready(1, 0, 50, 100);
  }
  ASSERT_TRUE(s.service().Route(r).ok());
  EXPECT_EQ(busy.n_got(), 1u);

  // The chosen replica's queue is full: the next one takes the request.
  {
    absl::MutexLock l(&busy.mu);
    busy.answer = absl::ResourceExhaustedError("queue full (1 waiting)");
  }
  ASSERT_TRUE(s.service().Route(r).ok());
  EXPECT_EQ(idle.n_got(), 2u);

  // Every queue full: RESOURCE_EXHAUSTED over the wire.
  {
    absl::MutexLock l(&idle.mu);
    idle.answer = absl::ResourceExhaustedError("queue full (1 waiting)");
  }
  Served::Answer ans = s.Generate(Prompt("hello"));
  EXPECT_EQ(ans.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(down.n_got(), 0u);
}

TEST(GenerateServiceTest, StreamsTheSchedulersMessagesInOrderWithTheRequestId) {
  auto model = TinyServedModel();
  ScriptedReplica replica;
  replica.load = Ready(0, 0);
  for (int i = 0; i < 3; ++i) {
    v1::GenerateResponse m;
    m.set_text(std::string(1, static_cast<char>('a' + i)));
    m.add_tokens()->set_id('a' + i - '!');
    if (i == 2) {
      m.set_finish_reason(v1::FINISH_REASON_STOP);
      m.mutable_usage()->set_generated_tokens(3);
    }
    replica.reply.push_back(m);
  }
  Served s(*model, {replica.AsReplica()});
  v1::GenerateRequest req = Prompt("hello");
  req.set_request_id("mine");
  Served::Answer a = s.Generate(req);
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  EXPECT_EQ(a.text, "abc");
  ASSERT_EQ(a.messages.size(), 3u);
  for (const auto& m : a.messages) EXPECT_EQ(m.request_id(), "mine");
  EXPECT_EQ(a.messages.back().finish_reason(), v1::FINISH_REASON_STOP);

  // Without an id the service makes one up, the same on every message, different per request.
  Served::Answer b = s.Generate(Prompt("hello"));
  Served::Answer c = s.Generate(Prompt("hello"));
  ASSERT_TRUE(b.status.ok() && c.status.ok());
  EXPECT_FALSE(b.messages[0].request_id().empty());
  EXPECT_EQ(b.messages[0].request_id(), b.messages[2].request_id());
  EXPECT_NE(b.messages[0].request_id(), c.messages[0].request_id());
}

TEST(GenerateServiceTest, ModelInfoReportsTheModelAndEachReplicasLoad) {
  auto model = TinyServedModel();
  ScriptedReplica a, b;
  a.load = Ready(2, 3, 17, 120);
  b.load.state = "waiting for 1 of 2 workers";
  Served s(*model, {a.AsReplica(), b.AsReplica()});
  v1::ModelInfo info = s.Info();
  EXPECT_EQ(info.model_name(), "tiny");
  EXPECT_EQ(info.architecture(), "llama");
  EXPECT_EQ(info.quantization(), "Q8_0");
  EXPECT_EQ(info.context_length(), 64u);
  EXPECT_EQ(info.vocab_size(), 96u);
  EXPECT_EQ(info.tensor_parallel(), 1u);
  EXPECT_EQ(info.pipeline_parallel(), 1u);
  EXPECT_EQ(info.replicas(), 2u);
  EXPECT_EQ(info.ready_replicas(), 1u);
  ASSERT_EQ(info.replica_info_size(), 2);
  EXPECT_EQ(info.replica_info(0).state(), "ready");
  EXPECT_EQ(info.replica_info(0).kv_blocks_used(), 17u);
  EXPECT_EQ(info.replica_info(0).kv_blocks_total(), 120u);
  EXPECT_EQ(info.replica_info(0).running_sequences(), 3u);
  EXPECT_EQ(info.replica_info(0).waiting_requests(), 2u);
  EXPECT_EQ(info.replica_info(1).state(), "waiting_for_workers");

  // With a cluster, the layout and the states are the cluster's; the loads stay the service's.
  GenerateServiceOptions o;
  o.fill_cluster_info = [](v1::ModelInfo* i) {
    i->set_tensor_parallel(2);
    i->set_pipeline_parallel(2);
    i->set_replicas(2);
    i->set_ready_replicas(1);
    i->set_kv_block_tokens(32);
    for (int r = 0; r < 2; ++r) {
      v1::ReplicaInfo* ri = i->add_replica_info();
      ri->set_replica(r);
      ri->set_state(r == 0 ? "ready" : "loading");
      ri->set_kv_blocks_total(r == 0 ? 120 : 0);
    }
    i->add_workers()->set_worker_id("w0");
  };
  Served c(*model, {a.AsReplica(), b.AsReplica()}, o);
  info = c.Info();
  EXPECT_EQ(info.tensor_parallel(), 2u);
  EXPECT_EQ(info.kv_block_tokens(), 32u);
  ASSERT_EQ(info.replica_info_size(), 2);
  EXPECT_EQ(info.replica_info(1).state(), "loading");
  EXPECT_EQ(info.replica_info(0).kv_blocks_used(), 17u);
  ASSERT_EQ(info.workers_size(), 1);
}

// ---- With a real Scheduler over a LocalExecutor.

// Holds steps while closed: Execute waits until the gate opens, so a test can keep a request
// in flight (or queued behind one) for as long as it needs.
class GatedExecutor final : public StepExecutor {
 public:
  explicit GatedExecutor(StepExecutor* inner) : inner_(inner) {}
  ExecutorState state() const override { return inner_->state(); }
  ExecutorState WaitReady(absl::Duration timeout) override { return inner_->WaitReady(timeout); }
  absl::StatusOr<v1::StepResult> Execute(const v1::Step& step) override {
    {
      absl::MutexLock l(&mu_);
      ++entered_;
      mu_.Await(absl::Condition(&open_));
    }
    absl::StatusOr<v1::StepResult> result = inner_->Execute(step);
    if (result.ok()) {
      absl::MutexLock l(&mu_);
      sampled_ += result->sampled_size();
      if (close_after_ > 0 && sampled_ >= close_after_) open_ = false;
    }
    return result;
  }
  // Closes the gate (behind the step that returns it) once steps have sampled `n` tokens in
  // all, so a test can hold a request in flight after exactly that many, however fast it runs.
  void CloseAfterSampled(int64_t n) {
    absl::MutexLock l(&mu_);
    close_after_ = sampled_ + n;
  }
  void Close() {
    absl::MutexLock l(&mu_);
    open_ = false;
  }
  void Open() {
    absl::MutexLock l(&mu_);
    open_ = true;
    close_after_ = 0;
  }
  // Waits until `n` steps have entered Execute (true) or a minute passes.
  bool WaitEntered(int64_t n) {
    absl::MutexLock l(&mu_);
    auto reached = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return entered_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), absl::Minutes(1));
  }
  int64_t entered() {
    absl::MutexLock l(&mu_);
    return entered_;
  }

 private:
  StepExecutor* inner_;
  absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = true;
  int64_t entered_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t sampled_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t close_after_ ABSL_GUARDED_BY(mu_) = 0;
};

// A model served through a Scheduler over a (gated) LocalExecutor, plus an independent Engine
// on the same weights for in-process reference runs.
class Stack {
 public:
  Stack(const ServedModel& model, const WeightSource& weights, int64_t max_waiting = 64,
        int64_t kv_blocks = 0)
      : model_(model), weights_(weights), backend_(2) {
    LocalExecutorOptions lo;
    lo.kv_block_tokens = 4;
    lo.kv_blocks = kv_blocks;
    auto ex = LocalExecutor::Create(&weights, &backend_, lo);
    EXPECT_TRUE(ex.ok()) << ex.status();
    local_ = *std::move(ex);
    gate_ = std::make_unique<GatedExecutor>(local_.get());
    SchedulerOptions so;
    so.context_length = model.config.n_ctx;
    so.tokenizer = model.tokenizer.get();
    so.max_waiting = max_waiting;
    auto sc = Scheduler::Create(gate_.get(), so);
    EXPECT_TRUE(sc.ok()) << sc.status();
    scheduler_ = *std::move(sc);
    Scheduler* sp = scheduler_.get();
    ServiceReplica replica{[sp](ScheduledRequest r) { return sp->Submit(std::move(r)); },
                           [sp] { return sp->load(); }};
    served_ = std::make_unique<Served>(model, std::vector<ServiceReplica>{replica});
  }
  ~Stack() {
    gate_->Open();
    served_.reset();
    scheduler_->Stop();
  }

  Served& served() { return *served_; }
  GatedExecutor& gate() { return *gate_; }
  LocalExecutor& local() { return *local_; }

  // The reference: model/generate.h's single-sequence loop on a fresh Engine.
  GenerateResult InProcess(const std::vector<int32_t>& prompt, const ScheduledRequest& like) {
    EngineOptions eo;
    eo.kv_budget_bytes = 16 << 20;
    auto engine =
        Engine::Create(weights_, ModelShard::Whole(weights_.config()), &backend_, nullptr, eo);
    EXPECT_TRUE(engine.ok()) << engine.status();
    GenerateRequest req;
    req.prompt = prompt;
    req.sampling = like.sampling;
    req.max_tokens = like.stop.max_tokens;
    req.stop = like.stop.stop_strings;
    req.stop_token_ids = like.stop.stop_token_ids;
    auto r = tessera::Generate(**engine, *model_.tokenizer, req, 1, nullptr);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : GenerateResult{};
  }

  // Polls GetModelInfo until `done` holds (true) or a minute passes.
  bool WaitInfo(const std::function<bool(const v1::ReplicaInfo&)>& done) {
    const absl::Time give_up = absl::Now() + absl::Minutes(1);
    while (absl::Now() < give_up) {
      v1::ModelInfo info = served_->Info();
      if (info.replica_info_size() == 1 && done(info.replica_info(0))) return true;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return false;
  }

 private:
  const ServedModel& model_;
  const WeightSource& weights_;
  CpuBackend backend_;
  std::unique_ptr<LocalExecutor> local_;
  std::unique_ptr<GatedExecutor> gate_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<Served> served_;
};

std::unique_ptr<SyntheticWeights> TinyWeights(const ModelConfig& c) {
  auto w = SyntheticWeights::Create(c, GgmlType::kQ8_0, 42);
  EXPECT_TRUE(w.ok()) << w.status();
  return *std::move(w);
}

// Checks a streamed answer against in-process Generate() of the same prepared request.
void ExpectSameAsInProcess(Stack& stack, const ServedModel& model, const v1::GenerateRequest& req,
                           const std::string& what) {
  auto prepared = PrepareRequest(model, req, {});
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  const GenerateResult want = stack.InProcess(prepared->prompt, *prepared);
  Served::Answer got = stack.served().Generate(req);
  ASSERT_TRUE(got.status.ok()) << what << ": " << got.status.error_message();
  std::vector<int32_t> want_ids;
  for (const SampledToken& t : want.tokens) want_ids.push_back(t.id);
  EXPECT_EQ(got.ids, want_ids) << what;
  EXPECT_EQ(got.text, want.text) << what;
  ASSERT_FALSE(got.messages.empty());
  const v1::GenerateResponse& last = got.messages.back();
  const char* names[] = {"", "length", "stop", "eos", "cancelled"};
  EXPECT_EQ(names[last.finish_reason()], want.finish_reason) << what;
  EXPECT_EQ(last.usage().prompt_tokens(), prepared->prompt.size()) << what;
  EXPECT_EQ(last.usage().generated_tokens(), want.tokens.size()) << what;
  if (req.logprobs() > 0) {
    size_t k = 0;
    for (const v1::GenerateResponse& m : got.messages) {
      for (const v1::Token& t : m.tokens()) {
        ASSERT_LT(k, want.tokens.size());
        const SampledToken& w = want.tokens[k++];
        // Same logits, log-softmax in double on both sides: equal to float rounding.
        EXPECT_NEAR(t.logprob(), w.logprob, 1e-4) << what << " token " << k;
        ASSERT_EQ(t.top_logprobs_size(), static_cast<int>(w.top_logprobs.size())) << what;
        for (int j = 0; j < t.top_logprobs_size(); ++j) {
          EXPECT_EQ(t.top_logprobs(j).id(), w.top_logprobs[j].id) << what;
        }
      }
    }
  }
}

TEST(GenerateServiceStackTest, StreamedGenerateEqualsInProcessGenerate) {
  auto model = TinyServedModel();
  auto weights = TinyWeights(model->config);
  Stack stack(*model, *weights);

  v1::GenerateRequest greedy = Prompt("hello world", 24);
  ExpectSameAsInProcess(stack, *model, greedy, "greedy");

  v1::GenerateRequest sampled = Prompt("the quick brown fox", 20);
  sampled.mutable_sampling()->set_temperature(0.9f);
  sampled.mutable_sampling()->set_top_p(0.9f);
  sampled.mutable_sampling()->set_top_k(20);
  sampled.mutable_sampling()->set_seed(7);
  sampled.set_logprobs(3);
  ExpectSameAsInProcess(stack, *model, sampled, "sampled with logprobs");

  v1::GenerateRequest penalized = Prompt("abcabcabc", 20);
  penalized.mutable_sampling()->set_temperature(0.7f);
  penalized.mutable_sampling()->set_seed(11);
  penalized.mutable_sampling()->set_repetition_penalty(1.3f);
  penalized.mutable_sampling()->set_frequency_penalty(0.5f);
  penalized.mutable_sampling()->set_presence_penalty(0.25f);
  ExpectSameAsInProcess(stack, *model, penalized, "penalties");

  // A stop string taken from the middle of the unconstrained answer: both stop there.
  auto prepared = PrepareRequest(*model, greedy, {});
  ASSERT_TRUE(prepared.ok());
  const std::string full = stack.InProcess(prepared->prompt, *prepared).text;
  ASSERT_GE(full.size(), 8u) << full;
  v1::GenerateRequest stopped = greedy;
  stopped.add_stop(full.substr(4, 2));
  ExpectSameAsInProcess(stack, *model, stopped, "stop string");

  // The chat template path.
  v1::GenerateRequest chat;
  chat.set_max_tokens(12);
  chat.mutable_sampling()->set_temperature(0);
  auto* m = chat.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("Hi");
  ExpectSameAsInProcess(stack, *model, chat, "chat");
}

TEST(GenerateServiceStackTest, ConcurrentClientsEachGetWhatTheyGetAlone) {
  auto model = TinyServedModel();
  auto weights = TinyWeights(model->config);
  Stack stack(*model, *weights);
  std::vector<v1::GenerateRequest> reqs;
  for (int i = 0; i < 6; ++i) {
    v1::GenerateRequest r = Prompt(absl::StrCat("prompt number ", i, std::string(i, '!')), 10 + i);
    if (i % 2) {
      r.mutable_sampling()->set_temperature(0.8f);
      r.mutable_sampling()->set_seed(100 + i);
    }
    reqs.push_back(r);
  }
  std::vector<std::vector<int32_t>> alone;
  for (const auto& r : reqs) alone.push_back(stack.served().Generate(r).ids);
  std::vector<Served::Answer> together(reqs.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < reqs.size(); ++i) {
    threads.emplace_back([&, i] { together[i] = stack.served().Generate(reqs[i]); });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_TRUE(together[i].status.ok()) << together[i].status.error_message();
    EXPECT_EQ(together[i].ids, alone[i]) << "request " << i;
  }
}

TEST(GenerateServiceStackTest, ClientThatGoesAwayFreesItsKvBlocks) {
  auto model = TinyServedModel();
  auto weights = TinyWeights(model->config);
  Stack stack(*model, *weights);
  const v1::ModelInfo before = stack.served().Info();
  ASSERT_EQ(before.replica_info_size(), 1);
  EXPECT_EQ(before.replica_info(0).kv_blocks_used(), 0u);
  EXPECT_GT(before.replica_info(0).kv_blocks_total(), 0u);

  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Minutes(1)));
  // The request stays in flight after its third token: no step completes from there (the
  // tiny model would otherwise finish all 40 tokens before the client reads three).
  stack.gate().CloseAfterSampled(3);
  auto reader = stack.served().stub().Generate(&ctx, Prompt("tell me a long story", 40));
  v1::GenerateResponse m;
  int tokens = 0;
  while (tokens < 3 && reader->Read(&m)) tokens += m.tokens_size();
  ASSERT_EQ(tokens, 3);
  ASSERT_TRUE(stack.WaitInfo([](const v1::ReplicaInfo& r) {
    return r.running_sequences() == 1 && r.kv_blocks_used() > 0;
  }));
  const int64_t steps_at_cancel = stack.gate().entered();
  ctx.TryCancel();
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The service notices a client that went away within its poll interval (20 ms); the tiny
  // model would run all 40 steps in less once the gate opens, so give the notice time first.
  absl::SleepFor(absl::Milliseconds(200));
  stack.gate().Open();
  EXPECT_TRUE(stack.WaitInfo([](const v1::ReplicaInfo& r) {
    return r.running_sequences() == 0 && r.kv_blocks_used() == 0;
  }));
  // The sequence was dropped, not run to its 40 tokens: at most the step that was held, then
  // one free-only step that releases its blocks on the engine at once.
  EXPECT_LE(stack.gate().entered(), steps_at_cancel + 2);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (stack.local().engine_used_blocks() != 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(stack.local().engine_used_blocks(), 0);
  EXPECT_TRUE(stack.served().Generate(Prompt("next", 2)).status.ok());
}

TEST(GenerateServiceStackTest, FullQueueIsResourceExhausted) {
  auto model = TinyServedModel();
  auto weights = TinyWeights(model->config);
  Stack stack(*model, *weights, /*max_waiting=*/1);
  stack.gate().Close();
  Served::Answer a, b;
  std::thread ta([&] { a = stack.served().Generate(Prompt("first", 4)); });
  ASSERT_TRUE(stack.gate().WaitEntered(1));  // A runs (held in its first step)
  std::thread tb([&] { b = stack.served().Generate(Prompt("second", 4)); });
  ASSERT_TRUE(stack.WaitInfo([](const v1::ReplicaInfo& r) { return r.waiting_requests() == 1; }));
  Served::Answer c = stack.served().Generate(Prompt("third", 4));
  EXPECT_EQ(c.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(c.status.error_message(), HasSubstr("1"));
  stack.gate().Open();
  ta.join();
  tb.join();
  EXPECT_TRUE(a.status.ok()) << a.status.error_message();
  EXPECT_TRUE(b.status.ok()) << b.status.error_message();
  EXPECT_EQ(a.ids.size(), 4u);
  EXPECT_EQ(b.ids.size(), 4u);
}

TEST(GenerateServiceStackTest, DeadlineIsHonouredAndFreesTheBlocks) {
  auto model = TinyServedModel();
  auto weights = TinyWeights(model->config);
  Stack stack(*model, *weights);
  stack.gate().Close();
  Served::Answer a = stack.served().Generate(Prompt("slow", 8), absl::Milliseconds(300));
  EXPECT_EQ(a.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  stack.gate().Open();
  EXPECT_TRUE(stack.WaitInfo([](const v1::ReplicaInfo& r) {
    return r.running_sequences() == 0 && r.waiting_requests() == 0 && r.kv_blocks_used() == 0;
  }));
  EXPECT_TRUE(stack.served().Generate(Prompt("fast", 2)).status.ok());
}

TEST(GenerateServiceStackTest, ABrokenGroupFailsTheRequestUnavailable) {
  auto model = TinyServedModel();
  auto weights = TinyWeights(model->config);
  Stack stack(*model, *weights);
  stack.local().FailNextStep("worker w1 went away");
  Served::Answer a = stack.served().Generate(Prompt("doomed", 8));
  EXPECT_EQ(a.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(a.status.error_message(), HasSubstr("worker w1 went away"));
  // The next epoch serves again.
  Served::Answer b = stack.served().Generate(Prompt("again", 3));
  EXPECT_TRUE(b.status.ok()) << b.status.error_message();
}

// The real model (when present): its tokenizer and chat template, its weights.
TEST(GenerateServiceStackTest, RealModelChatEqualsInProcessGenerate) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "the real model takes about a minute under the sanitizers; the tiny model "
                  "covers the same paths";
#endif
  const char* path = std::getenv("TESSERA_TEST_MODEL");
  if (path == nullptr || ::access(path, R_OK) != 0) {
    GTEST_SKIP() << "real model not found (TESSERA_TEST_MODEL)";
  }
  auto opened = OpenGgufModel(path);
  ASSERT_TRUE(opened.ok()) << opened.status();
  auto model = ServedModel::FromGguf(*opened->file);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->quantization, "Q4_1");
  Stack stack(**model, *opened->weights);

  v1::GenerateRequest chat;
  chat.set_max_tokens(16);
  chat.mutable_sampling()->set_temperature(0);
  auto* m = chat.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("What is the capital of Japan?");
  // The prompt as `tessera generate --chat` builds it, independently of the service.
  auto tmpl = ChatTemplate::FromGguf(*opened->file);
  ASSERT_TRUE(tmpl.ok());
  auto text = tmpl->Render({{"user", "What is the capital of Japan?"}}, true);
  ASSERT_TRUE(text.ok());
  auto ids = (*model)->tokenizer->Encode(*text, true, true);
  ASSERT_TRUE(ids.ok());
  auto prepared = PrepareRequest(**model, chat, {});
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(prepared->prompt, *ids);
  ExpectSameAsInProcess(stack, **model, chat, "real model chat");

  v1::GenerateRequest prompt = Prompt("The capital of France is", 8);
  prompt.set_logprobs(2);
  ExpectSameAsInProcess(stack, **model, prompt, "real model prompt");
}

}  // namespace
}  // namespace tessera
