// Key files, key folders, the loopback rule and the [security] table.
#include <doctest/doctest.h>

#include <sys/stat.h>

#include <fstream>

#include "common/config.h"
#include "common/security.h"
#include "tests/support/process.h"

using namespace pacer;

TEST_CASE("keys are written, read back and checked") {
  testing::TempDir dir;
  auto pub = write_keypair(dir.file("keys"), "w1");
  REQUIRE_MESSAGE(pub, pub.error());
  CHECK(pub->size() == kZ85KeyChars);
  struct stat st {};
  REQUIRE(::stat(dir.file("keys/w1.secret").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  auto secret = read_secret_key(dir.file("keys/w1.secret"));
  REQUIRE_MESSAGE(secret, secret.error());
  CHECK(public_of(*secret).value() == *pub);
  CHECK(read_public_key(dir.file("keys/w1.public")).value() == *pub);
  // Never overwritten.
  auto again = write_keypair(dir.file("keys"), "w1");
  REQUIRE_FALSE(again);
  CHECK(again.error().find("already exists") != std::string::npos);
  CHECK_FALSE(write_keypair(dir.file("keys"), "../x"));

  SUBCASE("a secret readable by others is refused") {
    ::chmod(dir.file("keys/w1.secret").c_str(), 0644);
    auto r = read_secret_key(dir.file("keys/w1.secret"));
    REQUIRE_FALSE(r);
    CHECK(r.error().find("chmod 600") != std::string::npos);
  }
  SUBCASE("a folder of public keys; a bad file in it is named") {
    REQUIRE(write_keypair(dir.file("keys"), "w2"));
    auto keys = read_key_folder(dir.file("keys"));
    REQUIRE_MESSAGE(keys, keys.error());
    CHECK(keys->size() == 2);
    CHECK(keys->count(*pub) == 1);
    dir.write("keys/bad.public", "not a key\n");
    auto bad = read_key_folder(dir.file("keys"));
    REQUIRE_FALSE(bad);
    CHECK(bad.error().find("bad.public: not a public key") !=
          std::string::npos);
    CHECK_FALSE(read_key_folder(dir.file("missing")));
  }
}

TEST_CASE("loopback endpoints") {
  for (const char* ep :
       {"ipc:///tmp/x.sock", "inproc://a", "tcp://127.0.0.1:5555",
        "tcp://127.1.2.3:1", "tcp://localhost:5555", "tcp://[::1]:5555"})
    CHECK_MESSAGE(loopback_endpoint(ep), ep);
  for (const char* ep :
       {"tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://10.0.0.1:5555",
        "tcp://eth0:5555", "tcp://127.0.0.1.evil.com:1", "tcp://[::]:5555",
        "tcp://localhost.example:1", "udp://127.0.0.1:1"})
    CHECK_FALSE_MESSAGE(loopback_endpoint(ep), ep);
}

TEST_CASE("[security] and broker.allow_insecure are read and checked") {
  auto c = parse_config(
      "[broker]\nallow_insecure = true\n"
      "[security]\nbroker_public_key = \"k/b.public\"\n"
      "secret_key = \"k/w.secret\"\n",
      "pacer.toml");
  REQUIRE_MESSAGE(c, c.error());
  CHECK(c->broker.allow_insecure);
  CHECK(c->security.enabled);
  CHECK(c->security.broker_public_key == "k/b.public");
  CHECK_FALSE(parse_config("", "x").value().security.enabled);
  auto typo = parse_config("[security]\nsecret = \"a\"\n", "pacer.toml");
  REQUIRE_FALSE(typo);
  CHECK(typo.error().find("security.secret") != std::string::npos);
  CHECK_FALSE(parse_config("[security]\nsecret_key = \"\"\n", "pacer.toml"));
  CHECK_FALSE(parse_config("[broker]\nallow_insecure = 1\n", "pacer.toml"));
  // Without the keys it names, a client cannot be set up.
  auto client = curve_client(c->security);
  REQUIRE_FALSE(client);
  CHECK(client.error().find("security.broker_public_key") != std::string::npos);
}

TEST_CASE("key paths are taken from the configuration file's folder") {
  testing::TempDir dir;
  dir.write("pacer.toml",
            "[security]\nsecret_key = \"keys/w.secret\"\n"
            "broker_public_key = \"/etc/pacer/b.public\"\n");
  auto c = load_config_file(dir.file("pacer.toml"));
  REQUIRE_MESSAGE(c, c.error());
  CHECK(c->security.secret_key == dir.file("keys/w.secret"));
  CHECK(c->security.broker_public_key == "/etc/pacer/b.public");
}
