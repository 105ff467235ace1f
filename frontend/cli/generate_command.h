#pragma once
// `cellfuse generate MODEL ...`: samples text from a generator file (runtime/generate).
namespace cellfuse::cli {

// argv[0] is "generate". Returns the exit status; throws Error for bad arguments or files.
int generate_command(int argc, char** argv);

}  // namespace cellfuse::cli
