// parse_csv: RFC 4180 records with quoted fields, "" escapes, CRLF, embedded newlines.
#include "zerodiff/data/Csv.h"

#include "zerodiff/core/Error.h"

namespace zerodiff::data {

std::vector<CsvRecord> parse_csv(std::string_view text, const std::string& name) {
  std::vector<CsvRecord> records;
  size_t i = 0;
  const size_t n = text.size();
  if (text.substr(0, 3) == "\xEF\xBB\xBF") i = 3;
  int64_t line = 1;
  while (i < n) {
    // Blank line (LF or CRLF): skipped.
    if (text[i] == '\n' || (text[i] == '\r' && i + 1 < n && text[i + 1] == '\n')) {
      i += text[i] == '\r' ? 2 : 1;
      ++line;
      continue;
    }
    CsvRecord record;
    record.line = line;
    bool end_of_record = false;
    while (!end_of_record) {
      std::string field;
      if (i < n && text[i] == '"') {
        const int64_t start_line = line;
        ++i;
        bool closed = false;
        while (i < n) {
          const char c = text[i];
          if (c == '"') {
            if (i + 1 < n && text[i + 1] == '"') {
              field += '"';
              i += 2;
              continue;
            }
            ++i;
            closed = true;
            break;
          }
          if (c == '\n') ++line;
          field += c;
          ++i;
        }
        ZD_CHECK_T(IoError, closed, name, ":", start_line, ": unterminated quoted field");
        if (i < n && text[i] != ',' && text[i] != '\n' && !(text[i] == '\r' && i + 1 < n && text[i + 1] == '\n')) {
          ZD_CHECK_T(IoError, false, name, ":", line, ": unexpected character '", text[i],
                     "' after a closing quote");
        }
      } else {
        while (i < n && text[i] != ',' && text[i] != '\n' && !(text[i] == '\r' && i + 1 < n && text[i + 1] == '\n')) {
          field += text[i];
          ++i;
        }
      }
      record.fields.push_back(std::move(field));
      if (i >= n) {
        end_of_record = true;
      } else if (text[i] == ',') {
        ++i;
      } else {  // LF or CRLF
        i += text[i] == '\r' ? 2 : 1;
        ++line;
        end_of_record = true;
      }
    }
    records.push_back(std::move(record));
  }
  return records;
}

}  // namespace zerodiff::data
