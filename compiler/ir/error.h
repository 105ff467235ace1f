#pragma once
// The one exception type for user mistakes: bad shapes, unknown ops, malformed text, compiler
// failures. Its message always names the op, the values and the shapes (or line:column).
#include <stdexcept>
#include <string>

namespace cellfuse {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Internal invariant broken: a bug in cellfuse, not in the user's input.
class InternalError : public std::logic_error {
 public:
  explicit InternalError(const std::string& message)
      : std::logic_error("cellfuse internal error: " + message) {}
};

}  // namespace cellfuse
