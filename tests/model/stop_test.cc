// Stop handling: StopMatcher against an independent whole-string reference (find the first
// byte at which any stop string completes, cut before it) under random cuttings of the text
// into pieces, plus hand-written cases; StopChecker's token-level finish reasons.
#include "model/stop.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

StopMatcher MakeMatcher(std::vector<std::string> stops) {
  absl::StatusOr<StopMatcher> m = StopMatcher::Create(std::move(stops));
  EXPECT_TRUE(m.ok()) << m.status();
  return *std::move(m);
}

// Feeds `pieces`; returns everything released (including Flush when no stop), the released
// text after each piece, and the stop index.
struct Streamed {
  std::string text;
  std::vector<std::string> after_each;
  int stop_index = -1;
};
Streamed Stream(const std::vector<std::string>& stops, const std::vector<std::string>& pieces) {
  StopMatcher m = MakeMatcher(stops);
  Streamed out;
  for (const std::string& piece : pieces) {
    StopMatcher::Result r = m.Push(piece);
    out.text += r.text;
    out.after_each.push_back(out.text);
    if (r.stopped()) out.stop_index = r.stop_index;
  }
  if (out.stop_index < 0) out.text += m.Flush();
  return out;
}

// Reference on the whole text: scan end positions left to right; the first at which some stop
// string ends wins, the longest of those if several. Returns (output, stop index or -1).
std::pair<std::string, int> ReferenceStop(const std::string& text,
                                          const std::vector<std::string>& stops) {
  for (size_t end = 1; end <= text.size(); ++end) {
    int best = -1;
    for (size_t i = 0; i < stops.size(); ++i) {
      const std::string& s = stops[i];
      if (s.size() <= end && text.compare(end - s.size(), s.size(), s) == 0 &&
          (best < 0 || s.size() > stops[best].size())) {
        best = static_cast<int>(i);
      }
    }
    if (best >= 0) return {text.substr(0, end - stops[best].size()), best};
  }
  return {text, -1};
}

// What may be streamed once `text` has arrived and no stop has completed: all but the longest
// suffix that is a proper prefix of a stop string.
std::string ReferenceReleasable(const std::string& text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const std::string& s : stops) {
    for (size_t len = 1; len < s.size() && len <= text.size(); ++len) {
      if (text.compare(text.size() - len, len, s, 0, len) == 0) hold = std::max(hold, len);
    }
  }
  return text.substr(0, text.size() - hold);
}

TEST(StopMatcher, StopStringSplitAcrossPiecesIsNeverStreamed) {
  const Streamed s = Stream({"</end>"}, {"Hello </", "en", "d> world"});
  EXPECT_EQ(s.text, "Hello ");
  EXPECT_EQ(s.stop_index, 0);
  EXPECT_EQ(s.after_each, (std::vector<std::string>{"Hello ", "Hello ", "Hello "}));
}

TEST(StopMatcher, PartialMatchIsReleasedWhenItTurnsOutNotToBeAStop) {
  const Streamed s = Stream({"STOP"}, {"a ST", "OR", "M!"});
  // "ST" could start "STOP": held; "STOR" cannot: released.
  EXPECT_EQ(s.after_each, (std::vector<std::string>{"a ", "a STOR", "a STORM!"}));
  EXPECT_EQ(s.text, "a STORM!");
  EXPECT_EQ(s.stop_index, -1);
  // Overlapping self-prefix: "aaab" with stop "aab" stops after one "a".
  const Streamed t = Stream({"aab"}, {"a", "a", "a", "b", "tail"});
  EXPECT_EQ(t.after_each, (std::vector<std::string>{"", "", "a", "a", "a"}));
  EXPECT_EQ(t.text, "a");
}

TEST(StopMatcher, TextHeldAtTheEndIsFlushed) {
  const Streamed s = Stream({"###"}, {"done #", "#"});
  EXPECT_EQ(s.after_each, (std::vector<std::string>{"done ", "done "}));
  EXPECT_EQ(s.text, "done ##");  // Flush released the "##" that never became "###"
}

TEST(StopMatcher, MultipleStopStringsFirstCompletedWins) {
  // "bc" completes at byte 3, before "abcd" (byte 4), even though "abcd" starts earlier.
  for (const auto& pieces :
       {std::vector<std::string>{"abcd"}, std::vector<std::string>{"a", "b", "c", "d"}}) {
    const Streamed s = Stream({"abcd", "bc"}, pieces);
    EXPECT_EQ(s.text, "a");
    EXPECT_EQ(s.stop_index, 1);
  }
  // Two completing at the same byte: the longer one, so less text is shown.
  const Streamed s = Stream({"cd", "bcd"}, {"ab", "cd"});
  EXPECT_EQ(s.text, "a");
  EXPECT_EQ(s.stop_index, 1);
}

TEST(StopMatcher, MultiByteCharactersSplitAcrossPieces) {
  // "é" is C3 A9; the detokenizer may hand over pieces split anywhere by the caller's choice.
  const Streamed s = Stream({"é!"}, {"caf\xC3", "\xA9", "!", " more"});
  EXPECT_EQ(s.text, "caf");
  EXPECT_EQ(s.after_each[0], "caf");  // the lone lead byte is held, never streamed
  const Streamed t = Stream({"é!"}, {"caf\xC3", "\xA9", "?"});
  EXPECT_EQ(t.text, "café?");
}

TEST(StopMatcher, AfterAStopNothingMoreIsReleased) {
  StopMatcher m = MakeMatcher({"x"});
  EXPECT_TRUE(m.Push("abxcd").stopped());
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.Push("more").text, "");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopMatcher, RandomTextsAndCuttingsMatchWholeStringReference) {
  uint64_t x = 12345;
  auto next = [&x](int n) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<int>((x >> 33) % static_cast<uint64_t>(n));
  };
  auto random_string = [&](int min_len, int max_len) {
    std::string s;
    const int len = min_len + next(max_len - min_len + 1);
    for (int i = 0; i < len; ++i) s.push_back("abc"[next(3)]);
    return s;
  };
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<std::string> stops;
    const int n_stops = 1 + next(3);
    for (int i = 0; i < n_stops; ++i) stops.push_back(random_string(1, 4));
    const std::string text = random_string(0, 24);
    std::vector<std::string> pieces;
    for (size_t at = 0; at < text.size();) {
      const size_t len = static_cast<size_t>(next(5));  // empty pieces included
      pieces.push_back(text.substr(at, len));
      at += len;
    }
    const auto [ref_text, ref_index] = ReferenceStop(text, stops);
    const Streamed got = Stream(stops, pieces);
    ASSERT_EQ(got.text, ref_text) << "trial " << trial << " text " << text;
    ASSERT_EQ(got.stop_index < 0, ref_index < 0) << "trial " << trial;
    if (ref_index >= 0) {
      ASSERT_EQ(stops[got.stop_index], stops[ref_index]) << "trial " << trial;
    }
    // Streaming never shows text the final output does not contain, and shows all it can.
    std::string so_far;
    for (size_t i = 0; i < pieces.size(); ++i) {
      so_far += pieces[i];
      const bool stopped_yet = ReferenceStop(so_far, stops).second >= 0;
      const std::string expect =
          stopped_yet ? ReferenceStop(so_far, stops).first : ReferenceReleasable(so_far, stops);
      ASSERT_EQ(got.after_each[i], expect) << "trial " << trial << " piece " << i;
      ASSERT_EQ(ref_text.compare(0, got.after_each[i].size(), got.after_each[i]), 0);
    }
  }
}

TEST(StopConditions, ValidationNamesTheField) {
  StopConditions c;
  EXPECT_TRUE(c.Validate().ok());
  c.max_tokens = -3;
  EXPECT_THAT(c.Validate().message(), HasSubstr("max_tokens=-3"));
  c = StopConditions();
  c.stop_token_ids = {5, -1};
  EXPECT_THAT(c.Validate().message(), HasSubstr("stop_token_ids[1]=-1"));
  c = StopConditions();
  c.stop_strings = {"ok", ""};
  EXPECT_THAT(c.Validate().message(), HasSubstr("stop string 1 is empty"));
  c.stop_strings = std::vector<std::string>(17, "x");
  EXPECT_THAT(c.Validate().message(), HasSubstr("17 stop strings given, at most 16"));
  c.stop_strings = {std::string(257, 'x')};
  EXPECT_THAT(c.Validate().message(), HasSubstr("257 bytes long"));
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(StopChecker::Create(c).ok());
  EXPECT_FALSE(StopMatcher::Create({""}).ok());
}

TEST(StopChecker, FinishReasons) {
  EXPECT_EQ(FinishReasonName(FinishReason::kLength), "length");
  EXPECT_EQ(FinishReasonName(FinishReason::kStop), "stop");
  EXPECT_EQ(FinishReasonName(FinishReason::kEos), "eos");
  EXPECT_EQ(FinishReasonName(FinishReason::kCancelled), "cancelled");

  StopConditions c;
  c.max_tokens = 4;
  c.eos_token_ids = {2};
  c.stop_token_ids = {7};
  c.stop_strings = {"\n\n"};
  auto make = [&c] {
    absl::StatusOr<StopChecker> s = StopChecker::Create(c);
    EXPECT_TRUE(s.ok()) << s.status();
    return *std::move(s);
  };
  {  // EOS: held-back text released, the EOS token's own text not streamed.
    StopChecker s = make();
    EXPECT_EQ(s.OnToken(10, "Hi\n").text, "Hi");
    const StopChecker::Step step = s.OnToken(2, "</s>");
    EXPECT_EQ(step.text, "\n");
    EXPECT_EQ(step.finish, FinishReason::kEos);
    const StopChecker::Step after = s.OnToken(11, "x");
    EXPECT_EQ(after.text, "");
    EXPECT_EQ(after.finish, FinishReason::kEos);
    EXPECT_EQ(s.n_generated(), 2);
  }
  {  // User stop token id.
    StopChecker s = make();
    const StopChecker::Step step = s.OnToken(7, "<|eot|>");
    EXPECT_EQ(step.text, "");
    EXPECT_EQ(step.finish, FinishReason::kStop);
  }
  {  // Stop string spanning two tokens.
    StopChecker s = make();
    EXPECT_FALSE(s.OnToken(10, "a\n").finish.has_value());
    const StopChecker::Step step = s.OnToken(11, "\nb");
    EXPECT_EQ(step.text, "");
    EXPECT_EQ(step.finish, FinishReason::kStop);
  }
  {  // Length: the 4th token ends it, releasing what was held back.
    StopChecker s = make();
    std::string text;
    for (int i = 0; i < 3; ++i) {
      const StopChecker::Step step = s.OnToken(10, "ab");
      EXPECT_FALSE(step.finish.has_value());
      text += step.text;
    }
    const StopChecker::Step step = s.OnToken(10, "c\n");
    EXPECT_EQ(step.finish, FinishReason::kLength);
    text += step.text;
    EXPECT_EQ(text, "abababc\n");
    EXPECT_EQ(s.finish(), FinishReason::kLength);
  }
  {  // max_tokens = 0: no length limit here.
    c.max_tokens = 0;
    StopChecker s = make();
    for (int i = 0; i < 1000; ++i) ASSERT_FALSE(s.OnToken(10, "z").finish.has_value());
    EXPECT_EQ(s.n_generated(), 1000);
  }
}

}  // namespace
}  // namespace tessera
