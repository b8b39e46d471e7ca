#include "common/batch.h"

#include <utility>

namespace pacer {
namespace {

using Json = nlohmann::ordered_json;

constexpr std::size_t kSnippetBytes = 80;

// The reference tokens of a pointer already known to be valid.
std::vector<std::string> pointer_tokens(const std::string& pointer) {
  std::vector<std::string> tokens;
  if (pointer.empty()) return tokens;
  std::size_t start = 1;
  while (true) {
    auto end = pointer.find('/', start);
    std::string raw = pointer.substr(start, end - start);
    std::string token;
    for (std::size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '~' && i + 1 < raw.size()) {
        token += raw[i + 1] == '1' ? '/' : '~';
        ++i;
      } else {
        token += raw[i];
      }
    }
    tokens.push_back(std::move(token));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return tokens;
}

bool array_index(const std::string& token, std::size_t size, std::size_t& out) {
  if (token.empty() || token.size() > 9) return false;
  if (token.size() > 1 && token[0] == '0') return false;
  std::size_t v = 0;
  for (char c : token) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<std::size_t>(c - '0');
  }
  if (v >= size) return false;
  out = v;
  return true;
}

// What `pointer` refers to in `doc`, or null; never throws.
const Json* resolve(const Json& doc, const std::string& pointer) {
  const Json* at = &doc;
  for (const auto& token : pointer_tokens(pointer)) {
    if (at->is_object()) {
      auto it = at->find(token);
      if (it == at->end()) return nullptr;
      at = &*it;
    } else if (at->is_array()) {
      std::size_t i = 0;
      if (!array_index(token, at->size(), i)) return nullptr;
      at = &(*at)[i];
    } else {
      return nullptr;
    }
  }
  return at;
}

std::string dump(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// Whether brackets in `text` nest deeper than `limit` (strings skipped).
bool too_deep(std::string_view text, int limit) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

// Printable ASCII of the first bytes of `text`; other bytes as \xNN.
std::string snippet(std::string_view text) {
  std::string out = "'";
  static const char* kHex = "0123456789abcdef";
  for (std::size_t i = 0; i < text.size() && i < kSnippetBytes; ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  out += text.size() > kSnippetBytes ? "\u2026' (first 80 bytes)" : "'";
  return out;
}

// A description of a body that did not parse as JSON.
std::string describe_non_json(std::string_view body, std::size_t error_byte) {
  std::size_t i = 0;
  while (i < body.size() && (body[i] == ' ' || body[i] == '\t' ||
                             body[i] == '\r' || body[i] == '\n'))
    ++i;
  if (i == body.size()) return body.empty() ? "an empty body" : "a blank body";
  bool binary = false;
  for (char ch : body.substr(0, 512)) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 && c != '\t' && c != '\r' && c != '\n') binary = true;
  }
  std::string kind;
  if (binary)
    kind = "binary-looking";
  else if (body[i] == '<')
    kind = "HTML-looking";
  else if (body[i] == '{' || body[i] == '[' || body[i] == '"')
    kind = "malformed JSON (parse error at byte " + std::to_string(error_byte) +
           ")";
  else
    kind = "text/plain-looking";
  return kind + " " + snippet(body);
}

std::string type_phrase(const Json& j) {
  switch (j.type()) {
    case Json::value_t::object:
      return "an object";
    case Json::value_t::array:
      return "an array";
    case Json::value_t::string:
      return "a string";
    case Json::value_t::boolean:
      return "a boolean";
    case Json::value_t::null:
      return "null";
    default:
      return "a number";
  }
}

// At most kMaxItemErrorBytes of `text`, cut on a UTF-8 character boundary.
std::string clip(std::string text) {
  constexpr std::size_t kMaxItemErrorBytes = 500;
  if (text.size() <= kMaxItemErrorBytes) return text;
  std::size_t n = kMaxItemErrorBytes;
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  text.resize(n);
  return text + "\u2026";
}

std::string where(const std::string& pointer) {
  return pointer.empty() ? "the top level" : pointer;
}

// Parses one member body and picks its element. Errors without the index.
Result<Json> member_element(const BatchConfig& config,
                            const std::optional<std::string>& body) {
  if (!body) {
    if (config.member_pointer.empty()) return Json(nullptr);
    return Error{"has no body, and member_pointer " + config.member_pointer +
                 " needs one"};
  }
  if (too_deep(*body, kMaxBatchJsonDepth))
    return Error{"body nests deeper than " +
                 std::to_string(kMaxBatchJsonDepth) + " levels"};
  Json parsed;
  try {
    parsed = Json::parse(*body);
  } catch (const Json::parse_error& e) {
    return Error{"body is not JSON: " + describe_non_json(*body, e.byte)};
  }
  if (config.member_pointer.empty()) return parsed;
  const Json* picked = resolve(parsed, config.member_pointer);
  if (!picked)
    return Error{"body has nothing at member_pointer " + config.member_pointer +
                 ": " + snippet(*body)};
  return Json(*picked);
}

// `tmpl` with `elements` as the array at `request_array`.
Result<Json> place(const BatchConfig& config, Json elements) {
  if (config.request_array.empty()) {
    if (!config.body_template.empty())
      return Error{"a template needs a request_array inside it"};
    return elements;
  }
  Json body = config.body_template;
  if (!body.is_object()) return Error{"the template must be a JSON object"};
  auto tokens = pointer_tokens(config.request_array);
  Json* at = &body;
  for (std::size_t i = 0; i + 1 < tokens.size(); ++i) {
    Json& next = (*at)[tokens[i]];
    if (next.is_null()) next = Json::object();
    if (!next.is_object())
      return Error{"the template has a non-object on the way to " +
                   config.request_array};
    at = &next;
  }
  if (at->contains(tokens.back()))
    return Error{"the template already has " + config.request_array};
  (*at)[tokens.back()] = std::move(elements);
  return body;
}

}  // namespace

bool is_json_pointer(const std::string& pointer) {
  try {
    Json::json_pointer check(pointer);
    return true;
  } catch (const Json::exception&) {
    return false;
  }
}

std::optional<std::string> check_batch_template(
    const Json& body_template, const std::string& request_array) {
  BatchConfig c;
  c.body_template = body_template;
  c.request_array = request_array;
  if (!is_json_pointer(request_array))
    return "request_array is not a JSON pointer";
  auto placed = place(c, Json::array());
  if (!placed) return placed.error();
  return std::nullopt;
}

nlohmann::json batch_spec_json(const BatchConfig& config) {
  return {{"request_array", config.request_array},
          {"member_pointer", config.member_pointer},
          // Through text: the wire's json has another object type.
          {"body_template", nlohmann::json::parse(dump(config.body_template))},
          {"response_array", config.response_array},
          {"item_error", config.item_error},
          {"item_status", config.item_status},
          {"max_items", config.max_items},
          {"max_bytes", config.max_bytes}};
}

Result<BatchConfig> batch_spec_from_json(const nlohmann::json& spec) {
  if (!spec.is_object()) return Error{"spec must be a JSON object"};
  BatchConfig c;
  struct PointerField {
    const char* name;
    std::string* out;
    bool required;
  };
  for (auto [name, out, required] :
       {PointerField{"request_array", &c.request_array, true},
        PointerField{"member_pointer", &c.member_pointer, false},
        PointerField{"response_array", &c.response_array, true},
        PointerField{"item_error", &c.item_error, false},
        PointerField{"item_status", &c.item_status, false}}) {
    auto it = spec.find(name);
    if (it == spec.end() && !required) continue;
    if (it == spec.end() || !it->is_string() ||
        !is_json_pointer(it->get<std::string>()))
      return Error{std::string("spec.") + name +
                   " must be a JSON pointer string"};
    *out = it->get<std::string>();
  }
  if (auto it = spec.find("body_template"); it != spec.end()) {
    if (!it->is_object())
      return Error{"spec.body_template must be a JSON object"};
    c.body_template = Json::parse(
        it->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  if (auto why = check_batch_template(c.body_template, c.request_array))
    return Error{"spec.body_template: " + *why};
  auto items = spec.find("max_items");
  if (items == spec.end() || !items->is_number_integer() ||
      items->get<std::int64_t>() < 1 ||
      items->get<std::int64_t>() > kMaxBatchItems)
    return Error{"spec.max_items must be an integer in 1.." +
                 std::to_string(kMaxBatchItems)};
  c.max_items = items->get<int>();
  if (auto it = spec.find("max_bytes"); it != spec.end()) {
    if (!it->is_number_integer() || it->get<std::int64_t>() <= 0)
      return Error{"spec.max_bytes must be a positive integer"};
    c.max_bytes = it->get<std::int64_t>();
  }
  return c;
}

Result<std::string> build_batch_body(
    const BatchConfig& config,
    const std::vector<std::optional<std::string>>& member_bodies) {
  if (member_bodies.empty()) return Error{"a batch needs at least one member"};
  if (member_bodies.size() > static_cast<std::size_t>(config.max_items))
    return Error{std::to_string(member_bodies.size()) +
                 " members exceed max_items " +
                 std::to_string(config.max_items)};
  const std::size_t limit = static_cast<std::size_t>(config.max_bytes);
  std::size_t bytes = batch_envelope_bytes(config);
  Json elements = Json::array();
  for (std::size_t i = 0; i < member_bodies.size(); ++i) {
    auto element = member_element(config, member_bodies[i]);
    if (!element)
      return Error{"batch member " + std::to_string(i) + " " + element.error()};
    bytes += dump(*element).size() + (i > 0 ? 1 : 0);
    if (bytes > limit)
      return Error{"batch member " + std::to_string(i) + " takes the body to " +
                   std::to_string(bytes) + " bytes, over max_bytes " +
                   std::to_string(limit)};
    elements.push_back(std::move(*element));
  }
  auto body = place(config, std::move(elements));
  if (!body) return Error{body.error()};
  return dump(*body);
}

std::size_t batch_envelope_bytes(const BatchConfig& config) {
  auto body = place(config, Json::array());
  return body ? dump(*body).size() : 2;
}

Result<std::size_t> batch_member_bytes(const BatchConfig& config,
                                       const std::optional<std::string>& body) {
  auto element = member_element(config, body);
  if (!element) return Error{element.error()};
  return dump(*element).size() + 1;
}

Result<std::vector<BatchItemResult>> split_batch_response(
    const BatchConfig& config, std::size_t members, int http_status,
    std::string_view body) {
  if (http_status < 200 || http_status > 299)
    return Error{"a batch response is split only on a 2xx status; got " +
                 std::to_string(http_status)};
  const std::string at = where(config.response_array);
  const std::string expected = "expected a JSON body with an array at " + at;
  if (too_deep(body, kMaxBatchJsonDepth))
    return Error{expected + "; got JSON nested deeper than " +
                 std::to_string(kMaxBatchJsonDepth) + " levels"};
  Json doc;
  try {
    doc = Json::parse(body);
  } catch (const Json::parse_error& e) {
    return Error{expected + "; got " + describe_non_json(body, e.byte)};
  }
  const Json* array = resolve(doc, config.response_array);
  if (!array)
    return Error{expected + "; got " + type_phrase(doc) + " without " + at +
                 ": " + snippet(body)};
  if (!array->is_array())
    return Error{"expected an array at " + at + "; got " + type_phrase(*array) +
                 ": " + snippet(dump(*array))};
  if (array->size() != members)
    return Error{"expected " + std::to_string(members) +
                 (members == 1 ? " result at " : " results at ") + at +
                 ", got " + std::to_string(array->size())};

  std::vector<BatchItemResult> out;
  out.reserve(members);
  for (const Json& item : *array) {
    BatchItemResult r;
    r.body = dump(item);
    std::string why;
    if (!config.item_status.empty()) {
      if (const Json* s = resolve(item, config.item_status)) {
        if (s->is_number_integer() && s->get<std::int64_t>() >= 100 &&
            s->get<std::int64_t>() <= 599) {
          r.status = static_cast<int>(s->get<std::int64_t>());
          if (*r.status < 200 || *r.status > 299)
            why = "status " + std::to_string(*r.status);
        } else if (!s->is_null()) {
          why = "expected an HTTP status at " + config.item_status +
                " of the item; got " + snippet(dump(*s));
        }
      }
    }
    if (!config.item_error.empty()) {
      const Json* e = resolve(item, config.item_error);
      if (e && !e->is_null() && *e != Json(false)) {
        std::string text = e->is_string() ? e->get<std::string>() : dump(*e);
        if (text.empty()) text = "error at " + config.item_error;
        why = why.empty() ? clip(std::move(text)) : why + ": " + clip(text);
      }
    }
    if (!why.empty()) {
      r.ok = false;
      r.error = std::move(why);
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace pacer
