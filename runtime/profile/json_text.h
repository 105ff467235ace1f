#pragma once
// The few pieces of JSON the profiler writes (the trace and the report): a quoted string and a
// number that every JSON reader accepts (no NaN or inf: those become null).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

namespace cellfuse::profile {

inline std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

inline std::string json_number(double v, int digits = 6) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

// Microseconds with nanosecond resolution, for trace timestamps ("ts", "dur").
inline std::string json_us(std::int64_t ns) {
  char buf[48];
  const bool negative = ns < 0;
  const long long a = negative ? -ns : ns;
  std::snprintf(buf, sizeof buf, "%s%lld.%03lld", negative ? "-" : "", a / 1000, a % 1000);
  return buf;
}

}  // namespace cellfuse::profile
