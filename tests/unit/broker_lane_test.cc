// Lane: the bounded ready window and its invariant (lane.h): the window holds
// the top of the lane's ready jobs in dispatch order, and when it is not
// complete every ready job outside it ranks after its last entry. Also the
// concurrency count and the dispatch rate, under explicit times.
#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "broker/lane.h"
#include "common/config.h"

using pacer::JobId;
using pacer::Lane;
using pacer::Millis;
using pacer::ReadyEntry;

namespace {

constexpr Millis t0 = 1'700'000'000'000;

pacer::ApiConfig api(int concurrency = 0) {
  pacer::ApiConfig c;
  c.name = "echo";
  c.base_url = "http://127.0.0.1:8080";
  c.concurrency = concurrency;
  return c;
}

ReadyEntry entry(JobId id, std::int64_t priority = 0, Millis run_at = t0) {
  ReadyEntry e;
  e.id = id;
  e.priority = priority;
  e.run_at = run_at;
  return e;
}

// The dispatch order of lane.h, written out independently.
bool before(const ReadyEntry& a, const ReadyEntry& b) {
  if (a.priority != b.priority) return a.priority > b.priority;
  if (a.run_at != b.run_at) return a.run_at < b.run_at;
  return a.id < b.id;
}

// The window's ids in pop order, read from a copy so the lane is untouched.
std::vector<JobId> window_ids(const Lane& lane) {
  Lane copy = lane;
  std::vector<JobId> out;
  while (copy.has_ready()) out.push_back(copy.pop_head().id);
  return out;
}

std::vector<JobId> drain(Lane& lane) {
  std::vector<JobId> out;
  while (lane.has_ready()) out.push_back(lane.pop_head().id);
  return out;
}

}  // namespace

TEST_CASE("a new lane is empty and asks for a refill") {
  Lane lane(api(), 8);
  CHECK(lane.name() == "echo");
  CHECK(lane.window_cap() == 8);
  CHECK_FALSE(lane.has_ready());
  CHECK(lane.window_size() == 0);
  CHECK(lane.wants_refill());
  // Before the first refill the lane knows nothing: an offer is left to the
  // refill, which will find the job in the database.
  lane.offer(entry(1));
  CHECK_FALSE(lane.has_ready());
  CHECK(lane.wants_refill());
}

TEST_CASE("refill and pop follow priority desc, run_at, id") {
  Lane lane(api(), 16);
  lane.refill({entry(5, 0, t0), entry(3, 2, t0 + 10), entry(4, 2, t0),
               entry(1, 0, t0), entry(2, -1, t0 - 100), entry(6, 2, t0)},
              /*complete_hint=*/true);
  CHECK(lane.window_size() == 6);
  CHECK_FALSE(lane.wants_refill());  // complete: the database has nothing else
  CHECK(lane.head().id == 4);
  ReadyEntry first = lane.pop_head();
  CHECK(first.id == 4);
  CHECK(first.priority == 2);
  CHECK(first.run_at == t0);
  CHECK(drain(lane) == std::vector<JobId>{6, 3, 1, 5, 2});
  CHECK_FALSE(lane.has_ready());
  CHECK_FALSE(lane.wants_refill());  // still complete: nothing is waiting
}

TEST_CASE(
    "the cap evicts the lowest-ranked entries and makes the window "
    "incomplete") {
  Lane lane(api(), 4);
  std::vector<ReadyEntry> rows;
  for (JobId id = 1; id <= 6; ++id) rows.push_back(entry(id, 0, t0 + id));
  lane.refill(rows, /*complete_hint=*/true);  // more rows than the cap
  CHECK(lane.window_size() == 4);
  CHECK(window_ids(lane) == std::vector<JobId>{1, 2, 3, 4});
  CHECK_FALSE(lane.wants_refill());  // incomplete, but not low yet (4 > 4/2)
  lane.pop_head();
  CHECK_FALSE(lane.wants_refill());  // 3 > 2
  lane.pop_head();
  CHECK(lane.wants_refill());  // 2 <= 2 and the database may hold more
  // The refill brings the rest: a full page (4 of 4 asked), so the database
  // may still hold more.
  lane.refill({entry(3, 0, t0 + 3), entry(4, 0, t0 + 4), entry(5, 0, t0 + 5),
               entry(6, 0, t0 + 6)},
              /*complete_hint=*/false);
  CHECK(window_ids(lane) == std::vector<JobId>{3, 4, 5, 6});
  CHECK_FALSE(lane.wants_refill());

  // An offer into a full complete window evicts its last entry, so the
  // window is no longer complete.
  Lane full(api(), 3);
  full.refill({entry(1), entry(2), entry(3)}, true);
  full.offer(entry(10, 5));
  CHECK(window_ids(full) == std::vector<JobId>{10, 1, 2});
  full.pop_head();
  full.pop_head();
  CHECK(full.wants_refill());  // job 3 is only in the database now
}

TEST_CASE("a full-page refill makes a complete window incomplete again") {
  // The broker refills a complete lane when delayed jobs fall due; a full
  // page then means the database may hold more than the window.
  Lane lane(api(), 4);
  lane.refill({entry(1)}, true);
  CHECK_FALSE(lane.wants_refill());
  lane.refill({entry(1), entry(2), entry(3), entry(4)}, false);
  CHECK(lane.window_size() == 4);
  lane.pop_head();
  lane.pop_head();
  CHECK(lane.wants_refill());
  // And an offer ranked after the window is then left to the database.
  lane.offer(entry(9, -1));
  CHECK(window_ids(lane) == std::vector<JobId>{3, 4});
}

TEST_CASE("refill merges rows already in the window without duplicates") {
  Lane lane(api(), 8);
  lane.refill({entry(1), entry(2), entry(3)}, false);
  CHECK(lane.window_size() == 3);
  lane.refill({entry(2), entry(3), entry(4), entry(1), entry(4)}, true);
  CHECK(lane.window_size() == 4);
  CHECK(window_ids(lane) == std::vector<JobId>{1, 2, 3, 4});
  // Popping each id once empties the window: nothing was held twice.
  CHECK(drain(lane) == std::vector<JobId>{1, 2, 3, 4});
  CHECK_FALSE(lane.has_ready());
}

TEST_CASE("remove takes a job out of the window; unknown ids are ignored") {
  Lane lane(api(), 8);
  lane.refill({entry(1), entry(2, 3), entry(3)}, true);
  lane.remove(2);
  CHECK(window_ids(lane) == std::vector<JobId>{1, 3});
  lane.remove(2);
  lane.remove(99);
  CHECK(lane.window_size() == 2);
  // A removed job can come back (e.g. released again) and is held once.
  lane.offer(entry(2, 3));
  lane.offer(entry(2, 3));
  CHECK(window_ids(lane) == std::vector<JobId>{2, 1, 3});
  lane.remove(1);
  lane.remove(3);
  lane.remove(2);
  CHECK_FALSE(lane.has_ready());
}

TEST_CASE("offer keeps the invariant") {
  SUBCASE("complete window: every offer is kept, in order") {
    Lane lane(api(), 8);
    lane.refill({entry(1, 0, t0), entry(2, 0, t0 + 10)}, true);
    lane.offer(entry(3, 0, t0 + 5));
    lane.offer(entry(4, -1, t0));
    lane.offer(entry(5, 1, t0 + 100));
    CHECK(window_ids(lane) == std::vector<JobId>{5, 1, 3, 2, 4});
  }
  SUBCASE("incomplete window: a lower-ranked offer is left to the database") {
    Lane lane(api(), 8);
    lane.refill({entry(1, 0, t0), entry(2, 0, t0 + 10)}, false);
    lane.offer(entry(3, 0, t0 + 20));  // ranks after the last: not kept
    lane.offer(entry(4, -5, t0));      // lower priority: not kept
    lane.offer(
        entry(5, 0, t0 + 10));  // same priority and run_at, larger id: after 2
    CHECK(window_ids(lane) == std::vector<JobId>{1, 2});
    lane.offer(entry(6, 0, t0 + 5));   // between 1 and 2: kept
    lane.offer(entry(7, 1, t0 + 99));  // higher priority: kept
    CHECK(window_ids(lane) == std::vector<JobId>{7, 1, 6, 2});
  }
  SUBCASE("an id already held is not offered twice, even with another rank") {
    Lane lane(api(), 8);
    lane.refill({entry(1, 0), entry(2, 0)}, true);
    lane.offer(entry(2, 9));
    CHECK(lane.window_size() == 2);
    CHECK(window_ids(lane) == std::vector<JobId>{1, 2});
  }
}

TEST_CASE("the window stays the top of the ready set under random operations") {
  // A model database: the set of ready jobs. The lane must always hold a
  // prefix of it in dispatch order, and all of it when it claims to be
  // complete (no refill wanted while small).
  for (int cap : {1, 2, 3, 8}) {
    for (std::uint32_t seed = 1; seed <= 20; ++seed) {
      CAPTURE(cap);
      CAPTURE(seed);
      std::mt19937 rng(seed);
      auto rnd = [&](int n) {
        return static_cast<int>(rng() % static_cast<unsigned>(n));
      };
      std::set<ReadyEntry, decltype(&before)> db(&before);
      Lane lane(api(), cap);
      JobId next_id = 1;
      auto refill = [&] {
        std::vector<ReadyEntry> rows;
        for (auto& e : db) {
          if (static_cast<int>(rows.size()) == cap) break;
          rows.push_back(e);
        }
        lane.refill(rows, static_cast<int>(rows.size()) < cap);
      };
      for (int step = 0; step < 300; ++step) {
        switch (rnd(5)) {
          case 0:
          case 1: {  // a new job (or a released one) becomes ready
            ReadyEntry e = entry(next_id++, rnd(3), t0 + rnd(20));
            db.insert(e);
            lane.offer(e);
            break;
          }
          case 2:  // dispatch: the head is claimed
            if (lane.has_ready()) {
              ReadyEntry h = lane.pop_head();
              REQUIRE(db.count(h) == 1);
              db.erase(h);
            }
            break;
          case 3: {  // cancel a random ready job
            if (db.empty()) break;
            auto it = db.begin();
            std::advance(it, rnd(static_cast<int>(db.size())));
            lane.remove(it->id);
            db.erase(it);
            break;
          }
          case 4:  // the broker's refill rule
            if (lane.wants_refill()) refill();
            break;
        }
        std::vector<JobId> window = window_ids(lane);
        REQUIRE(static_cast<int>(window.size()) <= cap);
        std::vector<JobId> top;
        for (auto& e : db) {
          if (top.size() == window.size()) break;
          top.push_back(e.id);
        }
        REQUIRE(window == top);
        if (window.empty() && !db.empty()) REQUIRE(lane.wants_refill());
        // Small and not asking for a refill means complete: it holds all.
        if (!lane.wants_refill() && static_cast<int>(window.size()) <= cap / 2)
          REQUIRE(window.size() == db.size());
      }
    }
  }
}

TEST_CASE("concurrency counting") {
  Lane capped(api(2), 8);
  CHECK(capped.in_flight() == 0);
  CHECK(capped.under_concurrency());
  capped.started();
  CHECK(capped.under_concurrency());
  capped.started();
  CHECK(capped.in_flight() == 2);
  CHECK_FALSE(capped.under_concurrency());
  capped.finished();
  CHECK(capped.in_flight() == 1);
  CHECK(capped.under_concurrency());
  capped.finished();
  capped.finished();  // never below zero
  CHECK(capped.in_flight() == 0);
  capped.started();
  capped.started();
  CHECK_FALSE(capped.under_concurrency());

  Lane uncapped(api(0), 8);
  for (int i = 0; i < 1000; ++i) uncapped.started();
  CHECK(uncapped.in_flight() == 1000);
  CHECK(uncapped.under_concurrency());
}

TEST_CASE("next_due keeps the earliest future time") {
  Lane lane(api(), 8);
  CHECK_FALSE(lane.next_due().has_value());
  lane.note_future(t0 + 500);
  lane.note_future(t0 + 900);
  CHECK(lane.next_due() == std::optional<Millis>(t0 + 500));
  lane.note_future(t0 + 100);
  CHECK(lane.next_due() == std::optional<Millis>(t0 + 100));
  lane.set_next_due(std::nullopt);
  CHECK_FALSE(lane.next_due().has_value());
  lane.set_next_due(t0 + 7);
  CHECK(lane.next_due() == std::optional<Millis>(t0 + 7));
}

TEST_CASE("rate_per_s averages the last ten whole seconds") {
  Lane lane(api(), 8);
  const Millis s0 = 1'700'000'000'000;  // a whole second
  CHECK(lane.rate_per_s(s0) == 0.0);
  for (int i = 0; i < 20; ++i)
    lane.count_dispatch(s0 + i * 50);  // 20 in second 0
  CHECK(lane.dispatched_total() == 20);
  CHECK(lane.rate_per_s(s0 + 999) == 0.0);  // the current second is not counted
  CHECK(lane.rate_per_s(s0 + 1000) == doctest::Approx(2.0));
  CHECK(lane.rate_per_s(s0 + 10'999) ==
        doctest::Approx(2.0));                 // still in the last ten
  CHECK(lane.rate_per_s(s0 + 11'000) == 0.0);  // aged out

  for (int i = 0; i < 10; ++i)
    lane.count_dispatch(s0 + 5000 + i);  // 10 in second 5
  CHECK(lane.rate_per_s(s0 + 6000) == doctest::Approx(3.0));
  CHECK(lane.rate_per_s(s0 + 11'000) == doctest::Approx(1.0));
  CHECK(lane.rate_per_s(s0 + 15'999) == doctest::Approx(1.0));
  CHECK(lane.rate_per_s(s0 + 16'000) == 0.0);
  CHECK(lane.dispatched_total() == 30);

  // A steady 7 per second for a minute reads as 7.
  Lane steady(api(), 8);
  for (int sec = 0; sec < 60; ++sec)
    for (int k = 0; k < 7; ++k)
      steady.count_dispatch(s0 + sec * 1000 + k * 100);
  CHECK(steady.rate_per_s(s0 + 60'000) == doctest::Approx(7.0));
  CHECK(steady.rate_per_s(s0 + 59'500) == doctest::Approx(7.0));
  CHECK(steady.dispatched_total() == 420);
}
