// zerodiff-bench: every benchmark of benchmarks/ in one binary, so that they compile as one unity translation unit
// (each translation unit that includes LibTorch pays ~5 s of template instantiation; docs/development.md).
//
//   build/bin/bench_<name> [args]          a link to zerodiff-bench: the link's name picks the benchmark
//   build/bin/zerodiff-bench <name> [args] the same, e.g. zerodiff-bench attention --device cuda
//   build/bin/zerodiff-bench --list        the benchmarks' names
//
// Each benchmark's entry point is zerodiff_bench::bench_<name>::run(argc, argv), its argv[0] the benchmark's name.
#include <cstring>
#include <iostream>
#include <string>

namespace zerodiff_bench {
namespace bench_attention { int run(int argc, char** argv); }
namespace bench_checkpointing { int run(int argc, char** argv); }
namespace bench_data_loader { int run(int argc, char** argv); }
namespace bench_gemini { int run(int argc, char** argv); }
namespace bench_hybrid_adam { int run(int argc, char** argv); }
namespace bench_train_step { int run(int argc, char** argv); }
namespace bench_zero3 { int run(int argc, char** argv); }

namespace {

struct Entry {
  const char* name;
  int (*run)(int, char**);
};
constexpr Entry kBenchmarks[] = {
    {"bench_attention", bench_attention::run},   {"bench_checkpointing", bench_checkpointing::run},
    {"bench_data_loader", bench_data_loader::run}, {"bench_gemini", bench_gemini::run},
    {"bench_hybrid_adam", bench_hybrid_adam::run}, {"bench_train_step", bench_train_step::run},
    {"bench_zero3", bench_zero3::run},
};

std::string base_name(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}

int usage(std::ostream& out, int status) {
  out << "usage: zerodiff-bench <benchmark> [args...]   (or run the build/bin/bench_<benchmark> link)\nbenchmarks:";
  for (const auto& b : kBenchmarks) out << " " << (b.name + std::strlen("bench_"));
  out << std::endl;
  return status;
}

}  // namespace
}  // namespace zerodiff_bench

int main(int argc, char** argv) {
  using namespace zerodiff_bench;
  std::string name = argc > 0 ? base_name(argv[0]) : std::string();
  if (name.rfind("bench_", 0) != 0) {  // zerodiff-bench <name> [args...]
    if (argc < 2) return usage(std::cerr, 2);
    const std::string arg = argv[1];
    if (arg == "--list" || arg == "--help" || arg == "-h") return usage(std::cout, 0);
    name = arg.rfind("bench_", 0) == 0 ? arg : "bench_" + arg;
    ++argv;
    --argc;
  }
  for (const auto& b : kBenchmarks) {
    if (name == b.name) {
      std::string program = b.name;  // the benchmark's own name in its usage and error lines
      argv[0] = program.data();
      return b.run(argc, argv);
    }
  }
  std::cerr << "zerodiff-bench: no benchmark '" << name << "'\n";
  return usage(std::cerr, 2);
}
