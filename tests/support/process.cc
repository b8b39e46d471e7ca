#include "tests/support/process.h"

#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace pacer::testing {
namespace fs = std::filesystem;

std::string binary(const std::string& name) {
  std::string dir = PACER_TEST_BINARY_DIR;
  if (name == "pacer-broker") return dir + "/broker/pacer-broker";
  if (name == "pacer-worker") return dir + "/worker/pacer-worker";
  if (name == "pacer") return dir + "/client/pacer";
  if (name == "pacer-mock-api") return dir + "/tests/mock_api/pacer-mock-api";
  return dir + "/" + name;
}

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "pacer-test-XXXXXX").string();
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  if (std::getenv("PACER_KEEP_TEST_DIRS") == nullptr) fs::remove_all(path_, ec);
}

void TempDir::write(const std::string& name, const std::string& text) const {
  std::ofstream(file(name)) << text;
}

static std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Process::Process(std::vector<std::string> argv, const std::string& log_dir,
                 const std::string& name,
                 std::map<std::string, std::string> env)
    : name_(name),
      out_path_(log_dir + "/" + name + ".out"),
      err_path_(log_dir + "/" + name + ".err") {
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    int out = open(out_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    int err = open(err_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    int in = open("/dev/null", O_RDONLY);
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    for (auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
}

Process::~Process() {
  if (running()) {
    ::kill(pid_, SIGKILL);
    wait(10s);
  }
}

bool Process::running() {
  if (status_) return false;
  int st = 0;
  pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return false;
  }
  return r == 0;
}

void Process::signal(int sig) {
  if (running()) ::kill(pid_, sig);
}

std::optional<int> Process::wait(std::chrono::milliseconds timeout) {
  wait_until([&] { return !running(); }, timeout, 5ms);
  return status_;
}

int Process::stop(std::chrono::milliseconds grace) {
  signal(SIGTERM);
  if (auto code = wait(grace)) return *code;
  signal(SIGKILL);
  return wait(10s).value_or(-1);
}

std::string Process::out() const { return read_file(out_path_); }
std::string Process::err() const { return read_file(err_path_); }

std::optional<std::string> Process::wait_for_output(
    const std::string& needle, std::chrono::milliseconds timeout) {
  std::optional<std::string> line;
  wait_until(
      [&] {
        std::string text = out();
        auto pos = text.find(needle);
        if (pos == std::string::npos) return false;
        auto start = text.rfind('\n', pos);
        start = start == std::string::npos ? 0 : start + 1;
        auto end = text.find('\n', pos);
        if (end == std::string::npos) return false;  // line not complete yet
        line = text.substr(start, end - start);
        return true;
      },
      timeout);
  return line;
}

bool wait_until(const std::function<bool()>& done,
                std::chrono::milliseconds timeout,
                std::chrono::milliseconds interval) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    // Poll interval of a condition wait with a deadline, not a fixed wait.
    std::this_thread::sleep_for(interval);
  }
}

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

CommandResult run_command(const std::vector<std::string>& argv,
                          std::chrono::milliseconds timeout,
                          const std::string& stdin_text) {
  TempDir dir;
  CommandResult r;
  std::vector<std::string> args = argv;
  std::string in_path = dir.file("stdin");
  dir.write("stdin", stdin_text);
  {
    // Run through the shell only to redirect stdin; arguments stay separate.
    std::vector<std::string> wrapped = {
        "/bin/sh", "-c", "exec \"$0\" \"$@\" < \"$PACER_STDIN\""};
    wrapped.insert(wrapped.end(), args.begin(), args.end());
    Process p(wrapped, dir.path(), "cmd", {{"PACER_STDIN", in_path}});
    auto code = p.wait(timeout);
    if (!code) {
      p.signal(SIGKILL);
      code = p.wait(10s);
      r.exit_code = -1;
    } else {
      r.exit_code = *code;
    }
    r.out = p.out();
    r.err = p.err();
  }
  return r;
}

std::optional<nlohmann::json> http_json(int port, const std::string& method,
                                        const std::string& path,
                                        const std::string& body) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_connection_timeout(5, 0);
  cli.set_read_timeout(10, 0);
  httplib::Result res = method == "GET"
                            ? cli.Get(path.c_str())
                            : cli.Post(path.c_str(), body, "application/json");
  if (!res) return std::nullopt;
  auto j = nlohmann::json::parse(res->body, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

MockApi::MockApi(const TempDir& dir, std::vector<std::string> args) {
  std::vector<std::string> argv = {binary("pacer-mock-api"), "--port", "0"};
  argv.insert(argv.end(), args.begin(), args.end());
  static int counter = 0;
  proc_ = std::make_unique<Process>(argv, dir.path(),
                                    "mock-api-" + std::to_string(counter++));
  auto line = proc_->wait_for_output("listening on", 20s);
  if (!line)
    throw std::runtime_error("mock API did not start: " + proc_->err());
  auto colon = line->rfind(':');
  port_ = std::stoi(line->substr(colon + 1));
}

std::string MockApi::base_url() const {
  return "http://127.0.0.1:" + std::to_string(port_);
}

nlohmann::json MockApi::stats() const {
  auto j = http_json(port_, "GET", "/stats");
  if (!j) throw std::runtime_error("mock API /stats failed");
  return *j;
}

}  // namespace pacer::testing
