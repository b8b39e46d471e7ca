// doctest's runner and main(), compiled once for every test executable (the
// test files only include <doctest/doctest.h>, which also lets them use the
// precompiled header).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
