// TextStream: stop strings across token boundaries, held-back prefixes, UTF-8 cut between tokens.
#include "engine/text_stream.h"

#include <gtest/gtest.h>

namespace leanlm {
namespace {

std::string feed(TextStream& t, const std::vector<std::string>& pieces) {
  std::string out;
  for (const auto& p : pieces) out += t.push(p);
  return out;
}

TEST(TextStream, PassesTextThroughWithoutStops) {
  TextStream t;
  EXPECT_EQ(feed(t, {"Hel", "lo", " world"}), "Hello world");
  EXPECT_EQ(t.flush(), "");
  EXPECT_FALSE(t.stopped());
}

TEST(TextStream, StopStringAcrossTokensIsNeverSent) {
  TextStream t({"\n\nUser:"});
  std::string out = t.push("Paris.");
  EXPECT_EQ(out, "Paris.");
  EXPECT_EQ(t.push("\n"), "");        // could start the stop string: held back
  EXPECT_EQ(t.push("\nUs"), "");
  EXPECT_EQ(t.push("er: hi"), "");    // the stop string completed
  EXPECT_TRUE(t.stopped());
  EXPECT_EQ(t.text(), "Paris.");
  EXPECT_EQ(t.push("more"), "");
}

TEST(TextStream, HeldBackTextIsReleasedWhenItCannotStop) {
  TextStream t({"END"});
  EXPECT_EQ(t.push("the E"), "the ");
  EXPECT_EQ(t.push("N"), "");
  EXPECT_EQ(t.push("D?"), "");
  EXPECT_TRUE(t.stopped());
  TextStream u({"END"});
  EXPECT_EQ(u.push("the EN"), "the ");
  EXPECT_EQ(u.push("X"), "ENX");
  EXPECT_EQ(u.flush(), "");
}

TEST(TextStream, EarliestOfSeveralStopStringsWins) {
  TextStream t({"b", "ab"});
  EXPECT_EQ(t.push("xxab"), "xx");
  EXPECT_TRUE(t.stopped());
}

TEST(TextStream, Utf8CutBetweenTokensWaitsForTheRest) {
  TextStream t;
  const std::string e_acute = "\xC3\xA9";
  EXPECT_EQ(t.push("caf" + e_acute.substr(0, 1)), "caf");
  EXPECT_EQ(t.push(e_acute.substr(1)), e_acute);
  const std::string emoji = "\xF0\x9F\x98\x80";
  EXPECT_EQ(t.push(emoji.substr(0, 2)), "");
  EXPECT_EQ(t.push(emoji.substr(2)), emoji);
}

TEST(TextStream, InvalidBytesBecomeReplacementCharacters) {
  TextStream t;
  EXPECT_EQ(t.push("a\xFF" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(t.push("\xE2\x82"), "");          // an incomplete character...
  EXPECT_EQ(t.flush(), "\xEF\xBF\xBD\xEF\xBF\xBD");  // ...left at the end is replaced
  EXPECT_EQ(utf8_sanitize("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // a surrogate
  EXPECT_EQ(utf8_complete_prefix("ab\xE2\x82"), 2u);
}

}  // namespace
}  // namespace leanlm
