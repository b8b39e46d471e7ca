#include "common/redact.h"

namespace pacer {

bool replace_secrets(std::string& text,
                     const std::vector<std::string>& secrets) {
  bool any = false;
  for (const auto& secret : secrets)
    for (auto at = text.find(secret); at != std::string::npos;
         at = text.find(secret, at + kRedactedMark.size())) {
      text.replace(at, secret.size(), kRedactedMark);
      any = true;
    }
  return any;
}

}  // namespace pacer
