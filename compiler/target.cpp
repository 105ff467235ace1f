#include "compiler/target.h"

namespace cellfuse {

std::string_view target_name(Target target) {
  switch (target) {
    case Target::Cpu: return "cpu";
    case Target::Cuda: return "cuda";
  }
  return "?";
}

std::optional<Target> parse_target(std::string_view text) {
  for (Target t : {Target::Cpu, Target::Cuda})
    if (text == target_name(t)) return t;
  return std::nullopt;
}

std::string_view storage_name(Storage storage) {
  switch (storage) {
    case Storage::Native: return "native";
    case Storage::BF16: return "bf16";
    case Storage::F16: return "f16";
  }
  return "?";
}

std::optional<Storage> parse_storage(std::string_view text) {
  for (Storage s : {Storage::Native, Storage::BF16, Storage::F16})
    if (text == storage_name(s)) return s;
  return std::nullopt;
}

}  // namespace cellfuse
