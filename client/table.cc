#include "client/table.h"

#include <algorithm>

namespace pacer::client {
namespace {

std::string clean(std::string cell) {
  for (char& c : cell)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) c = ' ';
  return cell;
}

}  // namespace

std::size_t display_width(const std::string& text) {
  return static_cast<std::size_t>(std::count_if(
      text.begin(), text.end(),
      [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

Table::Table(std::vector<std::string> headers)
    : headers_(std::move(headers)), right_(headers_.size(), false) {}

Table& Table::align_right(std::size_t index) {
  if (index < right_.size()) right_[index] = true;
  return *this;
}

void Table::add_row(std::vector<std::string> cells) {
  cells.resize(headers_.size(), "-");
  for (auto& c : cells) c = clean(std::move(c));
  rows_.push_back(std::move(cells));
}

std::string Table::render() const {
  std::vector<std::size_t> width(headers_.size(), 0);
  for (std::size_t i = 0; i < headers_.size(); ++i)
    width[i] = display_width(headers_[i]);
  for (const auto& row : rows_)
    for (std::size_t i = 0; i < row.size(); ++i)
      width[i] = std::max(width[i], display_width(row[i]));

  std::string out;
  auto emit = [&](const std::vector<std::string>& row) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      std::size_t pad = width[i] - display_width(row[i]);
      bool last = i + 1 == row.size();
      if (i > 0) line += "  ";
      if (right_[i]) {
        line.append(pad, ' ');
        line += row[i];
      } else {
        line += row[i];
        if (!last) line.append(pad, ' ');
      }
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  };
  emit(headers_);
  for (const auto& row : rows_) emit(row);
  return out;
}

}  // namespace pacer::client
