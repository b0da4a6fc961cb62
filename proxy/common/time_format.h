// RFC 3339 timestamps in UTC, for /config, the access log and anything else machine-read.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

namespace sepal {

// "2026-11-25T10:52:27.096Z" (milliseconds) or, with `microseconds`, ".096123Z".
inline std::string FormatRfc3339(std::chrono::system_clock::time_point when,
                                 bool microseconds = false) {
  using namespace std::chrono;
  auto us = floor<std::chrono::microseconds>(when);
  auto day = floor<days>(us);
  year_month_day date{day};
  hh_mm_ss<std::chrono::microseconds> time{us - day};
  long fraction = static_cast<long>(time.subseconds().count());
  char text[40];
  std::snprintf(text, sizeof(text), "%04d-%02u-%02uT%02d:%02d:%02d.%0*ldZ", int(date.year()),
                unsigned(date.month()), unsigned(date.day()), int(time.hours().count()),
                int(time.minutes().count()), int(time.seconds().count()), microseconds ? 6 : 3,
                microseconds ? fraction : fraction / 1000);
  return text;
}

}  // namespace sepal
