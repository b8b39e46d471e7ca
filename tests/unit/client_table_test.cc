#include <doctest/doctest.h>

#include "client/format.h"
#include "client/table.h"

using pacer::client::display_width;
using pacer::client::Table;

TEST_CASE("columns are as wide as their widest cell, two spaces apart") {
  Table t({"ID", "API", "STATE"});
  t.add_row({"1", "echo", "queued"});
  t.add_row({"1234", "openai-chat", "succeeded"});
  CHECK(t.render() ==
        "ID    API          STATE\n"
        "1     echo         queued\n"
        "1234  openai-chat  succeeded\n");
}

TEST_CASE("right-aligned columns pad on the left; no trailing spaces") {
  Table t({"ID", "NAME"});
  t.align_right(0);
  t.add_row({"7", "a"});
  t.add_row({"12345", ""});
  CHECK(t.render() ==
        "   ID  NAME\n"
        "    7  a\n"
        "12345\n");
}

TEST_CASE(
    "short rows are padded with '-', long rows cut, control chars blanked") {
  Table t({"A", "B", "C"});
  t.add_row({"x"});
  t.add_row({"1", "2", "3", "4"});
  t.add_row({"line\nbreak", "tab\there", "ok"});
  CHECK(t.rows() == 3);
  CHECK(t.render() ==
        "A           B         C\n"
        "x           -         -\n"
        "1           2         3\n"
        "line break  tab here  ok\n");
}

TEST_CASE("width counts UTF-8 code points, not bytes") {
  CHECK(display_width("abc") == 3);
  CHECK(display_width("héllo") == 5);
  CHECK(display_width("日本") == 2);
  Table t({"NAME", "X"});
  t.add_row({"héllo", "1"});
  t.add_row({"ab", "2"});
  CHECK(t.render() ==
        "NAME   X\n"
        "héllo  1\n"
        "ab     2\n");
}

TEST_CASE("a header-only table renders its header") {
  Table t({"ID", "API"});
  CHECK(t.render() == "ID  API\n");
}

TEST_CASE("JSON fields become cells robustly") {
  using pacer::client::field;
  using pacer::client::int_field;
  using pacer::client::to_text;
  nlohmann::json j = {{"s", "text"},
                      {"n", 42},
                      {"f", 2.5},
                      {"z", nullptr},
                      {"b", true},
                      {"limits", {"50/1s", "600/1m0s"}},
                      {"empty", nlohmann::json::array()},
                      {"obj", {{"k", 1}}}};
  CHECK(field(j, "s") == "text");
  CHECK(field(j, "n") == "42");
  CHECK(field(j, "f") == "2.5");
  CHECK(field(j, "z") == "-");
  CHECK(field(j, "missing") == "-");
  CHECK(field(j, "b") == "true");
  CHECK(field(j, "limits") == "50/1s, 600/1m0s");
  CHECK(field(j, "empty") == "-");
  CHECK(field(j, "obj") == "{\"k\":1}");
  CHECK(field(nlohmann::json::array(), "s") == "-");
  CHECK(to_text(nlohmann::json(1500.0)) == "1500");
  CHECK(int_field(j, "n") == 42);
  CHECK_FALSE(int_field(j, "s"));
  CHECK_FALSE(int_field(j, "f"));
  CHECK(pacer::client::plural(1, "job") == "1 job");
  CHECK(pacer::client::plural(0, "job") == "0 jobs");
  auto stripped =
      pacer::client::without_envelope({{"req", "r1"}, {"ok", true}, {"x", 1}});
  CHECK(stripped == nlohmann::json{{"x", 1}});
}
