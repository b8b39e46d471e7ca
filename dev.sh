#!/usr/bin/env bash
# pacer's one entry point for people and CI:
#   ./dev.sh demo    install what is missing, build, run the demo fleet
#   ./dev.sh test    install what is missing, build, run every test
#                    (a normal build, then an ASan+UBSan build)
#   ./dev.sh build   install what is missing and build (build/)
#   ./dev.sh deps    only install the Debian packages
#   ./dev.sh bench   install what the benchmarks need too, and build
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(build-essential cmake ninja-build pkg-config
  libzmq3-dev cppzmq-dev libsqlite3-dev nlohmann-json3-dev libcurl4-openssl-dev
  libssl-dev
  doctest-dev libcli11-dev libtomlplusplus-dev libcpp-httplib-dev libsimdjson-dev
  bc curl jq sqlite3)
# Only the benchmarks need these: nginx (a fast upstream to measure against,
# and limit_req for bench/conformance.sh), Flask-Limiter (conformance).
BENCH_PACKAGES=(nginx-light python3-flask python3-flask-limiter)

JOBS=${JOBS:-$(nproc)}

# Each step says how long the command has run: where the time goes.
step() { echo "==> [$(date -u +%H:%M:%S), ${SECONDS}s] $*"; }

deps() {  # [extra packages...]
  local missing=()
  for p in "${PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  step "installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # nginx is only a benchmark peer: never leave the packaged service running.
  if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
    $sudo systemctl stop nginx || true
  fi
}

# Debug information is line tables only (-g1): enough for backtraces and
# sanitizer reports with file:line, and a quarter less compile time than
# full -g. For a debugger's view of locals, configure a build of your own.
build() {  # build DIR [cmake args...]; TARGETS="a b" builds only those
  local dir=$1; shift
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" -DCMAKE_CXX_FLAGS_DEBUG="-g1" \
    "$@" >/dev/null
  local targets=()
  [ -z "${TARGETS:-}" ] || targets=(--target $TARGETS)
  cmake --build "$dir" -j "$JOBS" "${targets[@]}"
}

run_tests() {  # DIR
  ctest --test-dir "$1" --output-on-failure --timeout 900 -j "${CTEST_JOBS:-2}"
}

case "${1:-}" in
  deps) deps ;;
  build) deps; build build ;;
  bench)
    deps "${BENCH_PACKAGES[@]}"
    # express-rate-limit for bench/conformance.sh: node and npm, then its
    # locked packages. Debian's npm only where there is none: a nodejs from
    # another source (nodesource) carries its own npm, which Debian's would
    # conflict with.
    command -v npm >/dev/null || deps nodejs npm
    if [ ! bench/conformance/express/node_modules/.package-lock.json -nt bench/conformance/express/package-lock.json ]; then
      (cd bench/conformance/express && npm ci --no-audit --no-fund --loglevel=error)
    fi
    build build
    ;;
  demo)
    # Only what the demo runs: the tests are most of the build.
    deps; TARGETS="pacer-broker pacer-worker pacer pacer-mock-api" build build
    exec ./scripts/demo.sh "${@:2}"
    ;;
  test)
    deps
    step "build (release with line tables)"
    build build
    step "tests"
    run_tests build
    if [ "${PACER_SKIP_SANITIZE:-0}" != 1 ]; then
      step "build (AddressSanitizer + UndefinedBehaviorSanitizer)"
      # -O0: instrumented -O2 code takes four times as long to compile
      # (226 s against 23 s for the largest test file; -O1 3.5 times) and
      # finds nothing more.
      build build-asan -DPACER_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
      step "tests under sanitizers"
      ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        run_tests build-asan
    fi
    step "all tests passed"
    ;;
  *)
    echo "usage: ./dev.sh demo | test | build | bench | deps" >&2
    exit 2
    ;;
esac
