// Table: a plain-text table for the command line. Columns are as wide as
// their widest cell (counted in UTF-8 code points), separated by two spaces,
// left-aligned unless marked numeric; no trailing whitespace. Control
// characters in cells are shown as spaces so one row stays one line.
// A value; thread-compatible.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace pacer::client {

class Table {
 public:
  explicit Table(std::vector<std::string> headers);

  // Right-aligns column `index` (for counts and ids).
  Table& align_right(std::size_t index);
  // A row shorter than the header is padded with "-"; extra cells are dropped.
  void add_row(std::vector<std::string> cells);
  std::size_t rows() const { return rows_.size(); }

  // The header line and every row, each ending in '\n'.
  std::string render() const;

 private:
  std::vector<std::string> headers_;
  std::vector<bool> right_;
  std::vector<std::vector<std::string>> rows_;
};

// The number of code points in a UTF-8 string (its width in a terminal, for
// the scripts a table of ids, names and URLs holds).
std::size_t display_width(const std::string& text);

}  // namespace pacer::client
