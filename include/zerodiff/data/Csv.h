// zerodiff/data/Csv.h — a small RFC 4180 CSV parser for metadata.csv.
//
// Fields are separated by commas, records by LF or CRLF. A field that starts with a double quote is quoted:
// it ends at the next lone quote, may contain commas, CR and LF, and "" inside it stands for one quote. A
// UTF-8 byte-order mark at the start is skipped. Blank lines are skipped. No type conversion: every field is
// a string, kept byte for byte (no trimming).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace zerodiff::data {

/// One CSV record and the 1-based line it starts on.
struct CsvRecord {
  int64_t line = 0;
  std::vector<std::string> fields;
};

/// Parses `text`; `name` labels errors. Throws IoError:
///   "<name>:<line>: unterminated quoted field"                 (a quote never closed; line of its start)
///   "<name>:<line>: unexpected character 'x' after a closing quote"
std::vector<CsvRecord> parse_csv(std::string_view text, const std::string& name);

}  // namespace zerodiff::data
