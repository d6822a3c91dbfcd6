// The source tree's root (ZERODIFF_SOURCE_DIR, set by tests/CMakeLists.txt), for tests that read configs or run
// the repository's scripts.
#pragma once

#include <string>

inline const std::string kSource = ZERODIFF_SOURCE_DIR;
