// Test support: read-only queries against a pacer database file, through a
// connection of its own (what another process would see). Failures are
// doctest failures of the calling test.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pacer::testing {

// The first column of the first row as an integer; -1 when there is no row.
std::int64_t sql_count(const std::string& db, const std::string& sql);
// Every row, every column as text ("NULL" for null).
std::vector<std::vector<std::string>> sql_rows(const std::string& db,
                                               const std::string& sql);

}  // namespace pacer::testing
