// Entry point of pacer-mock-api: parses the command line, binds the server,
// announces the port on stdout and serves until SIGINT/SIGTERM.

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <thread>

#include "tests/mock_api/limit_spec.h"
#include "tests/mock_api/mock_api.h"
#include "tests/mock_api/mock_server.h"
#include "tests/mock_api/rate_headers.h"
#include "tests/mock_api/rate_limiter.h"

namespace {

constexpr int kUsageExitCode = 2;
constexpr int kRuntimeExitCode = 1;
constexpr int kMaxThreads = 4096;
constexpr int kMaxTimeoutSeconds = 3600;
constexpr double kMaxLatencyMs = 3'600'000.0;
// Time allowed for httplib to write replies whose handlers have returned.
constexpr std::chrono::milliseconds kWriteGrace{100};

int UsageError(const std::string& message) {
  std::cerr << "pacer-mock-api: error: " << message << std::endl;
  return kUsageExitCode;
}

int Run(int argc, char** argv) {
  // Blocked before any thread exists so every thread inherits the mask and
  // the stop signals can only be consumed by the sigwait below, where it is
  // safe to call into the server.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // A client hanging up mid-response must not kill the server.
  signal(SIGPIPE, SIG_IGN);

  pacer::mock::ServerOptions server_options;
  std::string limit_text;
  std::string algorithm_text = "fixed";
  std::string window_start_text = "aligned";
  int64_t burst = 0;
  std::string reset_rounding_text = "up";
  double latency_ms = 0.0;
  double error_rate = 0.0;
  uint64_t seed = 1;
  std::string dialect_text = "retry-after";
  int reject_status = 0;  // 0 = the dialect's default
  std::string token_limit_text;
  std::string shared_load_text;

  CLI::App app{
      "pacer-mock-api: a rate-limited mock upstream that reports exactly "
      "what it accepted (GET /stats)."};
  app.add_option("--host", server_options.host, "Address to bind")
      ->capture_default_str();
  app.add_option("--port", server_options.port,
                 "Port to bind; 0 picks a free ephemeral port")
      ->capture_default_str();
  app.add_option("--limit", limit_text,
                 "Rate limit N/W, e.g. 50/s, 600/min, 10/100ms, 5/2s; "
                 "absent = unlimited");
  app.add_option("--algorithm", algorithm_text,
                 "fixed | sliding | token-bucket | leaky")
      ->capture_default_str();
  app.add_option("--window-start", window_start_text,
                 "Where fixed windows begin: aligned (to the limiter's "
                 "start) | first-request (at a request after the previous "
                 "window ended)")
      ->capture_default_str();
  CLI::Option* burst_option =
      app.add_option("--burst", burst,
                     "nginx limit_req burst B for --algorithm leaky: B + 1 "
                     "requests at once, then one per W/N; absent = N at once");
  app.add_option("--reset-rounding", reset_rounding_text,
                 "Whole-second resets and Retry-After: up | down (truncated, "
                 "as Flask-Limiter)")
      ->capture_default_str();
  bool headers_after_call = false;
  app.add_flag("--headers-after-call", headers_after_call,
               "Rate-limit headers describe the count when the reply is "
               "sent, after --latency (as Flask-Limiter's)");
  app.add_option("--latency", latency_ms,
                 "Delay added to every /v1/* reply, in ms (fractional ok)")
      ->capture_default_str();
  app.add_option("--error-rate", error_rate,
                 "Fraction (0..1) of admitted /v1/* requests answered 500")
      ->capture_default_str();
  app.add_option("--seed", seed, "Seed for the --error-rate RNG")
      ->capture_default_str();
  app.add_option("--dialect", dialect_text,
                 "Rate-limit headers to send: retry-after | ietf-6 | ietf-7 | "
                 "ietf-8 | x-ratelimit | github | openai | anthropic | "
                 "retry-after-date | none")
      ->capture_default_str();
  app.add_option("--reject-status", reject_status,
                 "Status of a rate-limit rejection, 429 or 503 (default 429; "
                 "503 with --dialect none)");
  app.add_option("--token-limit", token_limit_text,
                 "Second limit in tokens, N/W like --limit; a request costs "
                 "its JSON body's \"tokens\" field (default 1)");
  app.add_option("--shared-load", shared_load_text,
                 "Rate N/W at which an invisible other client spends the "
                 "same quota, e.g. 20/s");
  app.add_option("--threads", server_options.threads,
                 "Server worker threads (one per open connection)")
      ->capture_default_str();
  app.add_option("--keep-alive-timeout", server_options.keep_alive_timeout_s,
                 "Seconds an idle keep-alive connection is kept open")
      ->capture_default_str();
  app.add_option("--read-timeout", server_options.read_timeout_s,
                 "Seconds to wait for a request to arrive in full")
      ->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {
      return app.exit(e);  // --help
    }
    return UsageError(e.what());
  }

  if (server_options.port < 0 || server_options.port > 65535) {
    return UsageError("--port must be between 0 and 65535");
  }
  pacer::mock::MockConfig config;
  if (!limit_text.empty() && limit_text != "none" &&
      limit_text != "unlimited") {
    std::string error;
    config.limit = pacer::mock::ParseLimitSpec(limit_text, &error);
    if (!config.limit) return UsageError("--limit: " + error);
  }
  const std::optional<pacer::mock::Algorithm> algorithm =
      pacer::mock::ParseAlgorithm(algorithm_text);
  if (!algorithm) {
    return UsageError("--algorithm: '" + algorithm_text +
                      "' is not one of fixed, sliding, token-bucket, leaky");
  }
  config.algorithm = *algorithm;
  const std::optional<pacer::mock::WindowStart> window_start =
      pacer::mock::ParseWindowStart(window_start_text);
  if (!window_start) {
    return UsageError("--window-start: '" + window_start_text +
                      "' is not one of aligned, first-request");
  }
  config.window_start = *window_start;
  if (burst_option->count() > 0) {
    if (burst < 0 || burst > pacer::mock::kMaxBurst) {
      return UsageError("--burst must be between 0 and 1000000000000");
    }
    config.burst = burst;
  }
  const std::optional<pacer::mock::ResetRounding> reset_rounding =
      pacer::mock::ParseResetRounding(reset_rounding_text);
  if (!reset_rounding) {
    return UsageError("--reset-rounding: '" + reset_rounding_text +
                      "' is not one of up, down");
  }
  config.reset_rounding = *reset_rounding;
  config.headers_after_call = headers_after_call;
  if (!std::isfinite(latency_ms) || latency_ms < 0 ||
      latency_ms > kMaxLatencyMs) {
    return UsageError("--latency must be between 0 and 3600000 ms");
  }
  config.latency_ms = latency_ms;
  if (!(error_rate >= 0.0 && error_rate <= 1.0)) {
    return UsageError("--error-rate must be between 0 and 1");
  }
  config.error_rate = error_rate;
  config.seed = seed;
  const std::optional<pacer::mock::Dialect> dialect =
      pacer::mock::ParseDialect(dialect_text);
  if (!dialect) {
    return UsageError("--dialect: '" + dialect_text + "' is not one of " +
                      std::string(pacer::mock::DialectNames()));
  }
  config.dialect = *dialect;
  if (reject_status != 0) {
    if (reject_status != 429 && reject_status != 503) {
      return UsageError("--reject-status must be 429 or 503");
    }
    config.reject_status = reject_status;
  }
  if (!token_limit_text.empty()) {
    std::string error;
    config.token_limit = pacer::mock::ParseLimitSpec(token_limit_text, &error);
    if (!config.token_limit) return UsageError("--token-limit: " + error);
  }
  if (!shared_load_text.empty()) {
    std::string error;
    config.shared_load = pacer::mock::ParseSharedLoad(shared_load_text, &error);
    if (!config.shared_load) return UsageError("--shared-load: " + error);
  }
  if (const std::optional<std::string> error =
          pacer::mock::CheckLimiterConfig(config)) {
    return UsageError(*error);
  }
  if (server_options.threads < 1 || server_options.threads > kMaxThreads) {
    return UsageError("--threads must be between 1 and 4096");
  }
  if (server_options.keep_alive_timeout_s < 1 ||
      server_options.keep_alive_timeout_s > kMaxTimeoutSeconds ||
      server_options.read_timeout_s < 1 ||
      server_options.read_timeout_s > kMaxTimeoutSeconds) {
    return UsageError("timeouts must be between 1 and 3600 seconds");
  }

  pacer::mock::MockApi api(config);
  pacer::mock::MockServer server(api, server_options);
  const int port = server.Bind();
  if (port < 0) {
    std::cerr << "pacer-mock-api: error: cannot bind " << server_options.host
              << ":" << server_options.port << std::endl;
    return kRuntimeExitCode;
  }
  // The harness reads this single line to learn the port; flush so it is
  // not stuck in a pipe buffer.
  std::cout << "listening on " << server_options.host << ":" << port
            << std::endl;

  std::atomic<bool> stop_requested{false};
  std::atomic<bool> finished{false};
  std::atomic<bool> served_ok{true};
  std::thread serve_thread([&] {
    served_ok = server.Serve();
    finished = true;
    // Serving ended on its own: wake the sigwait below.
    if (!stop_requested) kill(getpid(), SIGTERM);
  });

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  stop_requested = true;
  // stop() is a no-op until Serve has flagged itself running, so a signal
  // that arrives right after startup must wait for that.
  while (!finished && !server.IsRunning()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!finished) server.Stop();

  // Serve only returns once every connection has closed, and httplib 0.11
  // keeps idle keep-alive connections open until their timeout even after
  // stop(). So wait only until no request is owed a reply (plus a moment
  // for httplib to write the last ones), then leave without joining.
  auto quiet_since = std::chrono::steady_clock::now();
  while (!finished) {
    const auto now = std::chrono::steady_clock::now();
    if (server.InFlight() > 0) {
      quiet_since = now;
    } else if (now - quiet_since >= kWriteGrace) {
      std::cout.flush();
      std::cerr.flush();
      // Skips destructors on purpose: the server object is still in use by
      // the threads parked on idle connections.
      std::_Exit(0);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  serve_thread.join();

  if (!served_ok) {
    std::cerr << "pacer-mock-api: error: server stopped unexpectedly"
              << std::endl;
    return kRuntimeExitCode;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
