#include "tests/support/sql.h"

#include <doctest/doctest.h>
#include <sqlite3.h>

namespace pacer::testing {

std::vector<std::vector<std::string>> sql_rows(const std::string& db,
                                               const std::string& sql) {
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) ==
          SQLITE_OK);
  // The broker may be writing: wait for its transaction, do not fail.
  sqlite3_busy_timeout(h, 5000);
  sqlite3_stmt* st = nullptr;
  const int rc = sqlite3_prepare_v2(h, sql.c_str(), -1, &st, nullptr);
  if (rc != SQLITE_OK) {
    std::string error = sqlite3_errmsg(h);
    sqlite3_close(h);
    FAIL(sql << ": " << error);
  }
  std::vector<std::vector<std::string>> out;
  while (sqlite3_step(st) == SQLITE_ROW) {
    std::vector<std::string> row;
    for (int i = 0; i < sqlite3_column_count(st); ++i) {
      auto* p = reinterpret_cast<const char*>(sqlite3_column_text(st, i));
      row.push_back(p ? p : "NULL");
    }
    out.push_back(std::move(row));
  }
  sqlite3_finalize(st);
  sqlite3_close(h);
  return out;
}

std::int64_t sql_count(const std::string& db, const std::string& sql) {
  auto rows = sql_rows(db, sql);
  if (rows.empty() || rows[0].empty() || rows[0][0] == "NULL") return -1;
  return std::stoll(rows[0][0]);
}

}  // namespace pacer::testing
