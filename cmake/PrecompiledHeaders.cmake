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
