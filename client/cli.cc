#include "client/cli.h"

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <exception>
#include <filesystem>

#include "client/probe.h"
#include "client/run.h"
#include "client/top.h"
#include "common/config.h"
#include "common/security.h"
#include "common/units.h"

namespace pacer::client {
namespace {

constexpr const char* kFooter = R"(
Exit codes: 0 success; 1 the command ran and the answer is no (a bad line,
a dead or canceled job, an unknown id, a refused request); 2 usage,
configuration or connection error; 124 `wait --timeout-wait` expired;
130 `run` interrupted (run it again to resume).
Options given before or after the command apply to it. See docs/cli.md.)";

struct GlobalOptions {
  std::string config;
  std::string broker;
  std::string timeout;
  bool json = false;
};

// --config, else $PACER_CONFIG, else ./pacer.toml when present, else defaults.
Result<Config> load_config(const std::string& flag) {
  std::string path = flag;
  if (path.empty()) {
    if (const char* env = std::getenv("PACER_CONFIG"); env && *env) path = env;
  }
  if (path.empty()) {
    std::error_code ec;
    if (std::filesystem::exists("pacer.toml", ec)) path = "pacer.toml";
  }
  if (path.empty()) return Config{};
  return load_config_file(path);
}

Result<Millis> positive_duration(const std::string& flag,
                                 const std::string& text) {
  auto d = parse_duration(text);
  if (!d) return Error{flag + ": " + d.error()};
  if (*d <= 0) return Error{flag + " must be positive"};
  return *d;
}

// Job ids are positive integers; CLI11's own range check reads poorly.
const CLI::Validator kJobId(
    [](std::string& text) -> std::string {
      bool digits = !text.empty() && text.size() < 19 &&
                    text.find_first_not_of("0123456789") == std::string::npos;
      if (!digits || std::stoll(text) <= 0)
        return "'" + text + "' is not a job id (a positive integer)";
      return "";
    },
    "ID");

int run(int argc, const char* const* argv, Io& io) {
  CLI::App app{
      "pacer: submit rate-limited HTTP jobs to a pacer broker and follow them",
      "pacer"};
  app.fallthrough();  // global options may follow the command
  app.require_subcommand(1);
  app.footer(kFooter);

  GlobalOptions g;
  app.add_option(
         "--config", g.config,
         "configuration file (default: $PACER_CONFIG, else ./pacer.toml "
         "if present, else built-in defaults)")
      ->type_name("FILE");
  app.add_option("--broker", g.broker,
                 "the broker's client endpoint (default: the config's "
                 "client.broker, else broker.client_endpoint)")
      ->type_name("ENDPOINT");
  app.add_option("--timeout", g.timeout,
                 "how long to wait for each broker reply, e.g. 10s (default: "
                 "the config's client.timeout, 10s)")
      ->type_name("DURATION");
  app.add_flag("--json", g.json, "print machine-readable JSON");

  // submit
  SubmitOptions so;
  std::int64_t priority = 0, cost = 1, max_attempts = 0;
  std::string body, delay, timeout_job;
  auto* submit = app.add_subcommand(
      "submit", "submit one job, or every job of a JSONL file");
  auto* o_api = submit->add_option("--api", so.api, "the API (lane) to call")
                    ->type_name("NAME");
  auto* o_method =
      submit
          ->add_option("--method", so.method,
                       "HTTP method (default POST with a body, GET without)")
          ->type_name("METHOD");
  auto* o_path = submit
                     ->add_option("--path", so.path,
                                  "path under the API's base URL (default /)")
                     ->type_name("PATH");
  auto* o_header = submit
                       ->add_option("--header,-H", so.headers,
                                    "a request header NAME:VALUE (repeatable)")
                       ->allow_extra_args(false)
                       ->type_name("NAME:VALUE");
  auto* o_body =
      submit
          ->add_option("--body", body,
                       "JSON request body, or @FILE to read it from a file")
          ->type_name("JSON|@FILE");
  auto* o_priority =
      submit
          ->add_option("--priority", priority, "higher runs first (default 0)")
          ->type_name("N");
  auto* o_delay = submit
                      ->add_option("--delay", delay,
                                   "do not start before this long, e.g. 10s")
                      ->type_name("DURATION");
  auto* o_cost =
      submit
          ->add_option(
              "--cost", cost,
              "units charged to non-request limits such as tokens (default 1)")
          ->type_name("N");
  auto* o_key =
      submit
          ->add_option(
              "--key", so.key,
              "idempotency key: submitting it again returns the first job")
          ->type_name("KEY");
  auto* o_batch =
      submit
          ->add_option("--batch-key", so.batch_key,
                       "jobs with the same key may share a batched call")
          ->type_name("KEY");
  auto* o_attempts =
      submit
          ->add_option("--max-attempts", max_attempts,
                       "attempts before the job is dead (default: the API's)")
          ->type_name("N");
  auto* o_tjob =
      submit
          ->add_option(
              "--timeout-job", timeout_job,
              "timeout of each HTTP attempt, e.g. 30s (default: the API's)")
          ->type_name("DURATION");
  submit
      ->add_option("--file,-f", so.file,
                   "submit every line of a JSONL file ('-' for stdin) instead "
                   "of one job")
      ->type_name("FILE");
  submit
      ->add_option("--group", so.group,
                   "with --file: the group id (default: a fresh g-... id)")
      ->type_name("GROUP");
  const std::vector<CLI::Option*> one_job_flags = {
      o_api,   o_method, o_path, o_header, o_body,     o_priority,
      o_delay, o_cost,   o_key,  o_batch,  o_attempts, o_tjob};

  // run
  RunOptions ro;
  auto* run_cmd = app.add_subcommand(
      "run",
      "submit every line of a JSONL file, wait, and write one result line per "
      "input line (resumable: run it again after an interruption)");
  run_cmd->add_option("file", ro.file, "the JSONL input ('-' for stdin)")
      ->required()
      ->type_name("FILE");
  run_cmd
      ->add_option("-o,--output", ro.output,
                   "the results file (JSONL); lines already there are kept "
                   "and not fetched again")
      ->required()
      ->type_name("FILE");
  run_cmd
      ->add_option("--api", ro.input.api,
                   "each line is a request body for this API (without it, "
                   "each line is a job as in submit --file)")
      ->type_name("NAME");
  run_cmd
      ->add_option("--path", ro.input.path,
                   "with --api: the path to send the bodies to (default /)")
      ->type_name("PATH");
  run_cmd
      ->add_option("--method", ro.input.method,
                   "with --api: the HTTP method (default POST)")
      ->type_name("METHOD");

  // status
  std::vector<JobId> status_ids;
  auto* status_cmd = app.add_subcommand("status", "show the state of jobs");
  status_cmd->add_option("ids", status_ids, "job ids")
      ->required()
      ->check(kJobId);

  // wait
  WaitOptions wo;
  std::string timeout_wait;
  auto* wait_cmd = app.add_subcommand("wait", "wait until jobs are finished");
  // Exactly one of ids, --group and --all: checked by wait() itself.
  wait_cmd->add_option("ids", wo.ids, "job ids")->check(kJobId);
  wait_cmd->add_option("--group", wo.group, "every job of a group")
      ->type_name("GROUP");
  wait_cmd->add_flag("--all", wo.all, "every job the broker has");
  wait_cmd
      ->add_option("--timeout-wait", timeout_wait,
                   "give up after this long (exit 124), e.g. 10min")
      ->type_name("DURATION");

  // result
  JobId result_id = 0;
  auto* result_cmd = app.add_subcommand(
      "result", "print a job's response body (status on stderr)");
  result_cmd->add_option("id", result_id, "job id")->required()->check(kJobId);

  // list
  ListOptions lo;
  auto* list_cmd = app.add_subcommand("list", "list jobs matching the filters");
  list_cmd->add_option("--state", lo.state, "only jobs in this state")
      ->type_name("STATE");
  list_cmd->add_option("--api", lo.api, "only jobs of this API")
      ->type_name("NAME");
  list_cmd->add_option("--group", lo.group, "only jobs of this group")
      ->type_name("GROUP");
  list_cmd
      ->add_option("--limit", lo.limit,
                   "at most this many jobs (default 100, 0 for all)")
      ->type_name("N");

  // cancel
  std::vector<JobId> cancel_ids;
  auto* cancel_cmd =
      app.add_subcommand("cancel", "cancel jobs that have not finished");
  cancel_cmd->add_option("ids", cancel_ids, "job ids")
      ->required()
      ->check(kJobId);

  // probe
  ProbeOptions po;
  int probe_status = 0;
  std::int64_t probe_now = 0;
  std::string probe_data;
  auto* probe_cmd = app.add_subcommand(
      "probe",
      "what a response says about rate limits: one real request to URL, or a "
      "saved response head (--headers)");
  probe_cmd->add_option("url", po.url, "the URL to request once")
      ->type_name("URL");
  probe_cmd
      ->add_option("--headers", po.headers_file,
                   "read a raw response head (status line, header lines, "
                   "optional body) from FILE, '-' for stdin; prints the "
                   "observation as JSON")
      ->type_name("FILE");
  auto* o_probe_status =
      probe_cmd
          ->add_option("--status", probe_status,
                       "with --headers: this HTTP status instead of the "
                       "status line's")
          ->check(CLI::Range(100, 999))
          ->type_name("N");
  auto* o_probe_now =
      probe_cmd
          ->add_option("--now-ms", probe_now,
                       "with --headers: the receive time in ms since the "
                       "epoch (default: now)")
          ->type_name("MS");
  probe_cmd
      ->add_option("-X,--request", po.method,
                   "with URL: the HTTP method (default GET, POST with --data)")
      ->type_name("METHOD");
  probe_cmd
      ->add_option("-H,--header", po.headers,
                   "with URL: a request header 'Name: value' (repeatable)")
      ->allow_extra_args(false)
      ->type_name("'NAME: VALUE'");
  auto* o_probe_data =
      probe_cmd
          ->add_option("--data,-d", probe_data, "with URL: the request body")
          ->type_name("BODY");
  probe_cmd
      ->add_option("--dialect", po.dialect,
                   "the rate-limit header profile: auto (default), generic or "
                   "a vendor (see docs/configuration.md)")
      ->type_name("DIALECT");

  auto* stats_cmd = app.add_subcommand(
      "stats", "per-lane counts, rates and connected workers");
  auto* apis_cmd = app.add_subcommand("apis", "the APIs the broker knows");
  auto* top_cmd = app.add_subcommand(
      "top", "a live view of every lane, refreshed in place (q quits)");
  TopOptions to;
  std::string top_interval = "1s";
  top_cmd->add_option("--interval", top_interval, "refresh period (default 1s)")
      ->type_name("DURATION");
  top_cmd->add_flag("--once", to.once,
                    "print one frame and exit (also what happens when the "
                    "output is not a terminal)");

  // dead list | show | replay
  auto* dead_cmd =
      app.add_subcommand("dead", "dead jobs: list them, show one, replay them");
  dead_cmd->require_subcommand(1);
  auto add_dead_filters = [](CLI::App* cmd, DeadFilterOptions& f) {
    cmd->add_option("--api", f.api, "only jobs of this API")->type_name("NAME");
    cmd->add_option("--class", f.failure_class,
                    "only jobs killed by this class of failure: "
                    "rate_limited, transient or permanent")
        ->type_name("CLASS");
    cmd->add_option("--since", f.since,
                    "only jobs dead since T: a duration ago (2h), epoch "
                    "milliseconds or an RFC 3339 time")
        ->type_name("T");
  };
  DeadListOptions dlo;
  auto* dead_list_cmd =
      dead_cmd->add_subcommand("list", "list dead jobs matching the filters");
  add_dead_filters(dead_list_cmd, dlo.filter);
  dead_list_cmd
      ->add_option("--limit", dlo.limit,
                   "at most this many jobs (default 100, 0 for all)")
      ->type_name("N");
  JobId dead_show_id = 0;
  auto* dead_show_cmd =
      dead_cmd->add_subcommand("show", "a dead job with every attempt");
  dead_show_cmd->add_option("id", dead_show_id, "job id")
      ->required()
      ->check(kJobId);
  DeadReplayOptions dro;
  auto* dead_replay_cmd = dead_cmd->add_subcommand(
      "replay",
      "move dead jobs back to queued with their attempts reset (paced by "
      "their lane like new jobs)");
  dead_replay_cmd->add_option("ids", dro.ids, "job ids")->check(kJobId);
  dead_replay_cmd->add_flag(
      "--all", dro.all,
      "every dead job that matches the filters (with no filter: every dead "
      "job)");
  add_dead_filters(dead_replay_cmd, dro.filter);
  dead_replay_cmd->add_flag("--dry-run", dro.dry_run,
                            "only count the jobs that would move");

  // keygen NAME [--dir D]
  std::string keygen_name, keygen_dir = ".";
  auto* keygen_cmd = app.add_subcommand(
      "keygen",
      "write a CURVE key pair for [security]: DIR/NAME.secret (mode 0600) "
      "and DIR/NAME.public; needs no broker or configuration");
  keygen_cmd->add_option("name", keygen_name,
                         "the key's name (broker, worker-1, ci, ...)")
      ->required();
  keygen_cmd->add_option("--dir", keygen_dir, "folder for the files")
      ->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e, io.out, io.err);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e, io.out, io.err);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e, io.out, io.err);
    io.err << "pacer: " << e.what() << " (see pacer --help)\n";
    return kExitError;
  }

  if (keygen_cmd->parsed()) {
    auto pub = write_keypair(keygen_dir, keygen_name);
    if (!pub) {
      io.err << "pacer: keygen: " << pub.error() << "\n";
      return kExitError;
    }
    const auto base = std::filesystem::path(keygen_dir) / keygen_name;
    io.out << "wrote " << base.string() << ".secret (keep it on this host, "
           << "mode 0600) and " << base.string() << ".public\n"
           << "public key " << *pub << "\n";
    return 0;
  }

  auto config = load_config(g.config);
  if (!config) {
    io.err << "pacer: " << config.error() << "\n";
    return kExitError;
  }
  Millis timeout_ms = config->client.timeout_ms;
  if (!g.timeout.empty()) {
    auto t = positive_duration("--timeout", g.timeout);
    if (!t) {
      io.err << "pacer: " << t.error() << "\n";
      return kExitError;
    }
    timeout_ms = *t;
  }
  std::string endpoint = g.broker.empty() ? config->client_broker() : g.broker;
  auto curve = curve_client(config->security);
  if (!curve) {
    io.err << "pacer: " << curve.error() << "\n";
    return kExitError;
  }
  Session session(io, endpoint, timeout_ms, g.json, *curve);

  if (submit->parsed()) {
    if (o_priority->count()) so.priority = priority;
    if (o_cost->count()) so.cost = cost;
    if (o_attempts->count()) so.max_attempts = max_attempts;
    if (o_body->count()) so.body = body;
    if (o_delay->count()) so.delay = delay;
    if (o_tjob->count()) so.timeout = timeout_job;
    if (!so.file.empty()) {
      for (auto* opt : one_job_flags)
        if (opt->count())
          return session.fail(
              kExitError, "--file cannot be combined with " + opt->get_name() +
                              " (give job fields in the file's lines)");
      return submit_file(session, so);
    }
    if (!so.group.empty())
      return session.fail(kExitError,
                          "--group is for --file (one job has no group)");
    if (so.api.empty())
      return session.fail(
          kExitError,
          "submit needs --api NAME (one job) or --file FILE (many jobs)");
    return submit_one(session, so);
  }
  if (run_cmd->parsed()) return run_file(session, ro);
  if (status_cmd->parsed()) return status(session, status_ids);
  if (wait_cmd->parsed()) {
    if (!timeout_wait.empty()) {
      auto t = positive_duration("--timeout-wait", timeout_wait);
      if (!t) return session.fail(kExitError, t.error());
      wo.timeout_ms = *t;
    }
    return wait(session, wo);
  }
  if (result_cmd->parsed()) return result(session, result_id);
  if (list_cmd->parsed()) return list(session, lo);
  if (cancel_cmd->parsed()) return cancel(session, cancel_ids);
  if (probe_cmd->parsed()) {
    if (o_probe_status->count()) po.status = probe_status;
    if (o_probe_now->count()) po.now_ms = probe_now;
    if (o_probe_data->count()) po.data = probe_data;
    po.timeout_ms = timeout_ms;
    return probe(session, po);
  }
  if (stats_cmd->parsed()) return stats(session);
  if (apis_cmd->parsed()) return apis(session);
  if (top_cmd->parsed()) {
    auto d = parse_duration(top_interval);
    if (!d || *d < 100)
      return session.fail(kExitError,
                          "--interval: give a duration of at least 100ms");
    to.interval_ms = *d;
    if (session.json()) return stats(session);  // the same data, for scripts
    return top(session, to);
  }
  if (dead_list_cmd->parsed()) return dead_list(session, dlo);
  if (dead_show_cmd->parsed()) return dead_show(session, dead_show_id);
  if (dead_replay_cmd->parsed()) return dead_replay(session, dro);
  return session.fail(kExitError, "no command given (see pacer --help)");
}

}  // namespace

int run_cli(int argc, const char* const* argv, Io& io) {
  try {
    return run(argc, argv, io);
  } catch (const std::exception& e) {
    io.err << "pacer: internal error: " << e.what() << "\n";
  } catch (...) {
    io.err << "pacer: internal error\n";
  }
  return kExitError;
}

}  // namespace pacer::client
