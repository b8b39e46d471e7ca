// Batching in the lane (lane.h, "batching"): which call a lane sends next
// when its window holds jobs with batch keys. The flush rules under explicit
// times: full by items, by bytes, by units; the oldest member's wait; and,
// when nothing else can go, the best-ranked accumulator as it is. Also what
// a batch is charged and that taking it empties its accumulator.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "broker/lane.h"
#include "common/batch.h"
#include "common/config.h"
#include "common/limit_spec.h"

using pacer::BatchConfig;
using pacer::BatchCost;
using pacer::JobId;
using pacer::Lane;
using pacer::Millis;
using pacer::ReadyEntry;

namespace {

constexpr Millis t0 = 1'700'000'000'000;

pacer::ApiConfig api(int max_items, Millis max_wait_ms,
                     std::vector<std::string> limits = {"10/s"}) {
  pacer::ApiConfig c;
  c.name = "echo";
  c.base_url = "http://127.0.0.1:8080";
  for (auto& l : limits) {
    auto spec = pacer::parse_limit(l);
    REQUIRE_MESSAGE(spec.ok(), spec.error());
    c.limits.push_back(*spec);
  }
  BatchConfig b;
  b.path = "/v1/batch";
  b.max_items = max_items;
  b.max_wait_ms = max_wait_ms;
  b.request_array = "/inputs";
  c.batch = b;
  return c;
}

// A job with a batch key; `bytes` stands for batch_member_bytes of its body.
ReadyEntry keyed(JobId id, const std::string& key, Millis run_at = t0,
                 std::int64_t bytes = 10, std::int64_t cost = 1) {
  ReadyEntry e;
  e.id = id;
  e.run_at = run_at;
  e.cost = cost;
  e.batch_key = key;
  e.batch_bytes = bytes;
  return e;
}

ReadyEntry single(JobId id, Millis run_at = t0) {
  ReadyEntry e;
  e.id = id;
  e.run_at = run_at;
  return e;
}

std::vector<JobId> ids(const Lane::Selection& s) {
  std::vector<JobId> out;
  for (auto& m : s.members) out.push_back(m.id);
  return out;
}

}  // namespace

TEST_CASE("a job without a key goes before an accumulator that may wait") {
  Lane lane(api(3, 1000), 100);
  lane.refill({keyed(1, "k"), keyed(2, "k"), single(3, t0 + 1)}, true);
  CHECK(lane.accumulated("k") == 2);
  auto s = lane.select(t0 + 10);
  CHECK_FALSE(s.batch);
  CHECK(ids(s) == std::vector<JobId>{3});
}

TEST_CASE("full by items: the accumulator goes at once, max_items at most") {
  Lane lane(api(3, 1000), 100);
  lane.refill({keyed(1, "k"), keyed(2, "k"), keyed(4, "k"), keyed(5, "k"),
               single(3, t0 + 1)},
              true);
  auto s = lane.select(t0 + 10);
  CHECK(s.batch);
  CHECK(s.key == "k");
  CHECK(ids(s) == std::vector<JobId>{1, 2, 4});
  CHECK(s.units == 3);
  CHECK(s.requests == 1);
  lane.take(s);
  CHECK(lane.accumulated("k") == 1);
  CHECK(lane.window_size() == 2);
  // One member left, not full, not old: the single job goes first.
  CHECK(ids(lane.select(t0 + 10)) == std::vector<JobId>{3});
}

TEST_CASE("full by bytes: members that would pass max_bytes wait") {
  pacer::ApiConfig c = api(100, 1000);
  // The empty body is {"inputs":[]}, 13 bytes; a batch body is the
  // envelope plus the members' bytes minus one.
  const auto envelope =
      static_cast<std::int64_t>(pacer::batch_envelope_bytes(*c.batch));
  REQUIRE(envelope == 13);
  c.batch->max_bytes = envelope - 1 + 25;  // room for two 10s, not three
  Lane lane(c, 100);
  lane.refill({keyed(1, "k", t0, 10), keyed(2, "k", t0, 10), single(9, t0 + 1)},
              true);
  // 20 bytes of members: not full yet.
  CHECK(ids(lane.select(t0 + 1)) == std::vector<JobId>{9});
  lane.offer(keyed(4, "k", t0, 10));
  auto s = lane.select(t0 + 1);
  CHECK(s.batch);
  CHECK(ids(s) == std::vector<JobId>{1, 2});
}

TEST_CASE("the oldest member's wait: an accumulator goes after max_wait") {
  Lane lane(api(50, 200), 100);
  lane.refill({keyed(1, "k", t0), keyed(2, "k", t0 + 50), single(3, t0 + 60)},
              true);
  CHECK(ids(lane.select(t0 + 199)) == std::vector<JobId>{3});
  auto s = lane.select(t0 + 200);
  CHECK(s.batch);
  CHECK(ids(s) == std::vector<JobId>{1, 2});
}

TEST_CASE("max_wait 0: an accumulator is always ready to go") {
  Lane lane(api(50, 0), 100);
  lane.refill({keyed(1, "k", t0), single(3, t0 + 1)}, true);
  auto s = lane.select(t0);
  CHECK(s.batch);
  CHECK(ids(s) == std::vector<JobId>{1});
}

TEST_CASE("nothing else to send: the best-ranked accumulator goes as it is") {
  Lane lane(api(50, 10'000), 100);
  lane.refill(
      {keyed(2, "b", t0 + 5), keyed(1, "a", t0 + 7), keyed(3, "b", t0 + 9)},
      true);
  auto s = lane.select(t0 + 10);
  CHECK(s.batch);
  CHECK(s.key == "b");
  CHECK(ids(s) == std::vector<JobId>{2, 3});
  lane.take(s);
  CHECK(lane.accumulated("b") == 0);
  auto next = lane.select(t0 + 10);
  CHECK(next.key == "a");
  CHECK(ids(next) == std::vector<JobId>{1});
}

TEST_CASE("accumulators grow while the lane waits, up to a batch") {
  // The lane cannot send for a while (quota): what arrives meanwhile joins
  // the accumulator, and the call that finally goes is as large as allowed.
  Lane lane(api(5, 0), 100);
  lane.refill({}, true);
  for (JobId id = 1; id <= 8; ++id) lane.offer(keyed(id, "k", t0 + id));
  CHECK(lane.accumulated("k") == 8);
  auto s = lane.select(t0 + 1000);
  CHECK(ids(s) == std::vector<JobId>{1, 2, 3, 4, 5});
}

TEST_CASE("unit limits bound a batch's summed cost") {
  Lane lane(api(50, 0, {"10/s", "10 tokens/min"}), 100);
  lane.refill({keyed(1, "k", t0, 10, 4), keyed(2, "k", t0, 10, 4),
               keyed(3, "k", t0, 10, 4)},
              true);
  auto s = lane.select(t0);
  CHECK(ids(s) == std::vector<JobId>{1, 2});
  CHECK(s.units == 8);
  CHECK(lane.gate(s.units, t0, s.requests) == t0);
}

TEST_CASE("cost = per_item charges one request per member") {
  pacer::ApiConfig c = api(50, 0, {"3/s"});
  c.batch->cost = BatchCost::kPerItem;
  Lane lane(c, 100);
  lane.refill({keyed(1, "k"), keyed(2, "k"), keyed(3, "k"), keyed(4, "k")},
              true);
  auto s = lane.select(t0);
  // At most the request limit in one call.
  CHECK(ids(s) == std::vector<JobId>{1, 2, 3});
  CHECK(s.requests == 3);
  lane.on_start(s.units, t0, s.requests);
  lane.take(s);
  auto rest = lane.select(t0);
  CHECK(rest.requests == 1);
  CHECK(lane.gate(rest.units, t0, rest.requests) > t0);

  // cost = request: the same members are one request.
  Lane one(api(50, 0, {"3/s"}), 100);
  one.refill({keyed(1, "k"), keyed(2, "k"), keyed(3, "k"), keyed(4, "k")},
             true);
  auto all = one.select(t0);
  CHECK(all.members.size() == 4);
  CHECK(all.requests == 1);
  one.on_start(all.units, t0, all.requests);
  CHECK(one.gate(1, t0, 1) == t0);  // two requests of the second left
}

TEST_CASE("a job that cannot go in a batch is selected alone") {
  // batch_error set (its body cannot be a member): it is not in any
  // accumulator; the dispatcher gets it alone and ends it with the error.
  Lane lane(api(3, 1000), 100);
  ReadyEntry bad = keyed(1, "k");
  bad.batch_error = "cannot go in a batch";
  lane.refill({bad, keyed(2, "k", t0 + 1)}, true);
  CHECK(lane.accumulated("k") == 1);
  auto s = lane.select(t0 + 2);
  CHECK_FALSE(s.batch);
  CHECK(ids(s) == std::vector<JobId>{1});
}

TEST_CASE("a lane without a batch section ignores keys") {
  pacer::ApiConfig c = api(3, 1000);
  c.batch.reset();
  Lane lane(c, 100);
  lane.refill({keyed(1, "k"), keyed(2, "k")}, true);
  CHECK(lane.accumulated("k") == 0);
  auto s = lane.select(t0);
  CHECK_FALSE(s.batch);
  CHECK(ids(s) == std::vector<JobId>{1});
}

TEST_CASE("eviction and removal keep the accumulators in step") {
  Lane lane(api(2, 0), 4);  // the window holds at least 2 * max_items
  CHECK(lane.window_cap() == 4);
  lane.refill({keyed(1, "k", t0), keyed(2, "k", t0 + 1), keyed(3, "k", t0 + 2),
               keyed(4, "k", t0 + 3), keyed(5, "k", t0 + 4)},
              false);
  CHECK(lane.window_size() == 4);
  CHECK(lane.accumulated("k") == 4);
  lane.remove(2);
  CHECK(lane.accumulated("k") == 3);
  CHECK(ids(lane.select(t0 + 10)) == std::vector<JobId>{1, 3});
  lane.pop_head();
  CHECK(lane.accumulated("k") == 2);

  Lane small(api(50, 0), 10);
  CHECK(small.window_cap() == 100);
}
