# Precompiled headers. nlohmann/json and doctest make up most of the compile
# time of every translation unit (a test file took 55 s at -O2 -g, 32 s with
# the headers precompiled), so two donor targets build them once and every
# other target reuses the result:
#   pacer_pch       the standard library, nlohmann/json and cppzmq
#   pacer_test_pch  the same plus doctest, for the test executables
# Only headers whose meaning does not depend on macros set per target belong
# here (not toml++, CLI11 or cpp-httplib, which take configuration macros).
# -DPACER_PCH=OFF turns it off, e.g. to check that every file includes what it
# uses.
option(PACER_PCH "Use precompiled headers" ON)

# Test code (not the code under test) is compiled without optimization: at
# -O2 -g a test file of doctest cases and JSON literals took 30 s, at -O0 -g
# 10 s, and the tests run as fast (they drive optimized libraries and real
# processes). -DPACER_TEST_CXX_OPTIONS= compiles the tests like the rest.
set(PACER_TEST_CXX_OPTIONS "-O0" CACHE STRING
    "Extra compile options for test code (appended after the build type's)")

set(PACER_PCH_HEADERS
  <algorithm> <atomic> <chrono> <cstdint> <functional> <map> <memory>
  <optional> <random> <set> <string> <string_view> <utility> <vector>
  <nlohmann/json.hpp> <zmq.hpp>)

if(PACER_PCH)
  add_library(pacer_pch STATIC ${PROJECT_SOURCE_DIR}/cmake/pch_anchor.cc)
  target_link_libraries(pacer_pch PRIVATE nlohmann_json::nlohmann_json cppzmq)
  target_precompile_headers(pacer_pch PRIVATE ${PACER_PCH_HEADERS})
  if(BUILD_TESTING)
    add_library(pacer_test_pch STATIC ${PROJECT_SOURCE_DIR}/cmake/pch_anchor.cc)
    target_link_libraries(pacer_test_pch PRIVATE
      nlohmann_json::nlohmann_json cppzmq doctest::doctest)
    target_precompile_headers(pacer_test_pch PRIVATE
      ${PACER_PCH_HEADERS} <doctest/doctest.h>)
    # Built with the test code's options, or GCC refuses the header.
    target_compile_options(pacer_test_pch PRIVATE ${PACER_TEST_CXX_OPTIONS})
  endif()
endif()

# pacer_use_pch(TARGET... ) and pacer_use_test_pch(TARGET...): reuse the
# donors' headers (no-ops when PACER_PCH is off).
function(pacer_use_pch)
  if(PACER_PCH)
    foreach(t ${ARGN})
      target_precompile_headers(${t} REUSE_FROM pacer_pch)
    endforeach()
  endif()
endfunction()

function(pacer_use_test_pch)
  if(PACER_PCH AND TARGET pacer_test_pch)
    foreach(t ${ARGN})
      target_precompile_headers(${t} REUSE_FROM pacer_test_pch)
    endforeach()
  endif()
endfunction()

# pacer_test_code(TARGET...): a target made of test code (test executables,
# their support library): compiled with PACER_TEST_CXX_OPTIONS and the test
# headers precompiled. The code under test keeps the build's own options.
function(pacer_test_code)
  foreach(t ${ARGN})
    target_compile_options(${t} PRIVATE ${PACER_TEST_CXX_OPTIONS})
    pacer_use_test_pch(${t})
  endforeach()
endfunction()
