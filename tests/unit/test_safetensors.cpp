// safetensors: round trip of every dtype, metadata, atomic writes, and malformed files rejected by name.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <torch/torch.h>

#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>

#include "zerodiff/core/Error.h"
#include "zerodiff/io/Safetensors.h"

namespace zio = zerodiff::io;
namespace fs = std::filesystem;

namespace {

std::string temp_path(const std::string& name) {
  const fs::path dir = fs::path(testing::TempDir()) / "zd_safetensors";
  fs::create_directories(dir);
  return (dir / name).string();
}

// Writes a raw safetensors file from a header string and a data section.
std::string write_raw(const std::string& name, const std::string& header, const std::string& data,
                      int64_t declared_len = -1) {
  const std::string path = temp_path(name);
  std::ofstream out(path, std::ios::binary);
  const uint64_t len = declared_len < 0 ? header.size() : static_cast<uint64_t>(declared_len);
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((len >> (8 * i)) & 0xff));
  out << header << data;
  return path;
}

std::string open_error(const std::string& path) {
  try {
    zio::SafetensorsFile::open(path);
  } catch (const zerodiff::IoError& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace

TEST(Safetensors, RoundTripEveryDtype) {
  torch::manual_seed(1);
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"f32", torch::randn({3, 4})},
      {"f64", torch::randn({2, 5}, torch::kDouble)},
      {"f16", torch::randn({7}).to(torch::kHalf)},
      {"bf16", torch::randn({2, 3, 2}).to(torch::kBFloat16)},
      {"i8", torch::randint(-128, 127, {9}, torch::kChar)},
      {"i16", torch::randint(-30000, 30000, {4}, torch::kShort)},
      {"i32", torch::randint(-100000, 100000, {4}, torch::kInt)},
      {"i64", torch::randint(-100000, 100000, {3}, torch::kLong)},
      {"u8", torch::randint(0, 255, {5}, torch::kByte)},
      {"bool", torch::rand({6}) > 0.5},
      {"scalar", torch::tensor(3.5)},
      {"empty", torch::empty({0, 4})},
      {"view", torch::arange(12, torch::kFloat).reshape({3, 4}).t()},  // non-contiguous input
      {"f8", torch::randn({4}).to(torch::kFloat8_e4m3fn)},
  };
  const std::string path = temp_path("all.safetensors");
  zio::save_safetensors(path, tensors, {{"format", "pt"}, {"note", "zerodiff test"}});
  const auto file = zio::SafetensorsFile::open(path);
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.metadata().at("note"), "zerodiff test");
  ASSERT_EQ(file.names().size(), tensors.size());
  for (const auto& [name, expected] : tensors) {
    const auto got = file.get(name);
    EXPECT_EQ(got.scalar_type(), expected.scalar_type()) << name;
    EXPECT_EQ(got.sizes(), expected.sizes()) << name;
    if (expected.scalar_type() == torch::kFloat8_e4m3fn) {
      EXPECT_TRUE(torch::equal(got.to(torch::kFloat), expected.to(torch::kFloat))) << name;
    } else {
      EXPECT_TRUE(torch::equal(got, expected)) << name;
    }
  }
  // Header size is padded so the data section starts 8-byte aligned.
  std::ifstream in(path, std::ios::binary);
  uint64_t len = 0;
  in.read(reinterpret_cast<char*>(&len), 8);
  EXPECT_EQ(len % 8, 0u);
}

TEST(Safetensors, LoadedTensorsAreWritableCopyOnWrite) {
  const std::string path = temp_path("cow.safetensors");
  zio::save_safetensors(path, {{"w", torch::ones({4})}});
  {
    auto w = zio::load_safetensors(path).at("w");
    w.mul_(3);
    EXPECT_TRUE(torch::equal(w, torch::full({4}, 3.0)));
  }
  EXPECT_TRUE(torch::equal(zio::load_safetensors(path).at("w"), torch::ones({4})));  // file unchanged
}

TEST(Safetensors, RejectsMalformedFiles) {
  const std::string f32x2 = std::string(8, '\0');
  const auto ok_header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_EQ(open_error(write_raw("ok.st", ok_header, f32x2)), "<no error>");

  const std::string tiny = temp_path("tiny.st");
  std::ofstream(tiny, std::ios::binary) << "abc";
  EXPECT_EQ(open_error(tiny), tiny + ": file is 3 bytes, too small for a safetensors header (truncated?)");

  auto p = write_raw("past_end.st", ok_header, f32x2, 4096);
  EXPECT_EQ(open_error(p), p + ": header length 4096 is past the end of the file (" +
                               std::to_string(8 + std::string(ok_header).size() + 8) + " bytes; truncated?)");
  p = write_raw("huge.st", ok_header, f32x2, 200'000'000);
  EXPECT_EQ(open_error(p), p + ": header length 200000000 exceeds the 100 MB limit (corrupt file?)");

  p = write_raw("badjson.st", R"({"a":{"dtype":"F32",)", "");
  EXPECT_NE(open_error(p).find(p + ": invalid JSON header: "), std::string::npos) << open_error(p);

  // Found by fuzz_safetensors: a number too large for a double is nlohmann's out_of_range, not a parse_error.
  p = write_raw("overflow.st", R"({"s": 1E999999})", "");
  EXPECT_EQ(open_error(p), p + ": invalid JSON header: [json.exception.out_of_range.406] number overflow parsing '1E999999'");

  p = write_raw("dtype.st", R"({"a":{"dtype":"F17","shape":[2],"data_offsets":[0,8]}})", f32x2);
  EXPECT_EQ(open_error(p), p + ": tensor 'a': unknown safetensors dtype 'F17' (expected one of F64, F32, F16, BF16, "
                               "I64, I32, I16, I8, U64, U32, U16, U8, BOOL, F8_E4M3, F8_E5M2)");

  p = write_raw("range.st", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", f32x2);
  EXPECT_EQ(open_error(p), p + ": tensor 'a': data_offsets [0, 16) out of range (data section is 8 bytes)");

  p = write_raw("size.st", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", f32x2);
  EXPECT_EQ(open_error(p), p + ": tensor 'a': data_offsets [0, 8) hold 8 bytes but shape [3] x F32 needs 12");

  p = write_raw("overlap.st",
                R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                f32x2);
  EXPECT_EQ(open_error(p), p + ": tensor 'b': data_offsets [4, 8) overlap tensor 'a' [0, 8)");

  p = write_raw("gap.st", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", f32x2);
  EXPECT_EQ(open_error(p), p + ": tensor 'a': data_offsets [4, 8) leave a gap of 4 bytes after offset 0");

  p = write_raw("trailing.st", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", f32x2);
  EXPECT_EQ(open_error(p), p + ": data section is 8 bytes but the tensors cover only 4");

  p = write_raw("dup.st",
                R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                f32x2);
  EXPECT_EQ(open_error(p), p + ": tensor 'a' appears twice in the header");

  p = write_raw("shape.st", R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", f32x2);
  EXPECT_EQ(open_error(p), p + ": tensor 'a': shape [-2] is not a list of non-negative integers");

  // 2^61 F64 elements are 2^64 bytes: the byte count wraps to 0 and must not match data_offsets [0, 0).
  p = write_raw("wrap.st", R"({"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]}})", "");
  EXPECT_EQ(open_error(p), p + ": tensor 'a': shape [2305843009213693952] overflows");

  // A dimension past int64 with a zero-sized shape (numel 0, so no byte-count mismatch to catch it).
  p = write_raw("bigdim.st", R"({"a":{"dtype":"U8","shape":[9223372036854775808,0],"data_offsets":[0,0]}})", "");
  EXPECT_EQ(open_error(p), p + ": tensor 'a': shape [9223372036854775808,0] has a dimension over 2^63 - 1");

  p = write_raw("notobj.st", R"([1,2])", "");
  EXPECT_EQ(open_error(p), p + ": header is not a JSON object");

  p = write_raw("meta.st", R"({"__metadata__":{"k":1}})", "");
  EXPECT_EQ(open_error(p), p + ": __metadata__ value of 'k' is not a string");

  const std::string missing = temp_path("does_not_exist.st");
  EXPECT_EQ(open_error(missing), missing + ": cannot open: No such file or directory");
}

TEST(Safetensors, PickleFilesAreRefusedWithTheWayToConvertThem) {
  // torch.save's zip archive (what a .bin / .pt / .ckpt usually is) and a bare pickle (protocol 2-5).
  const std::string zip = temp_path("pytorch_model.bin"), pickle = temp_path("model.ckpt");
  {
    std::ofstream(zip, std::ios::binary) << std::string("PK\x03\x04", 4) << std::string(60, '\0');
    std::ofstream(pickle, std::ios::binary) << std::string("\x80\x04\x95\x10\0\0\0\0\0\0\0}", 12);
  }
  const std::string how = ", not safetensors: zerodiff never loads pickle files, which can execute arbitrary code. "
                          "Convert it once in Python: `from safetensors.torch import save_file; import torch; "
                          "sd = torch.load(IN, weights_only=True); sd = sd.get('state_dict', sd); "
                          "save_file({k: v.contiguous() for k, v in sd.items()}, OUT)` (a full Stable Diffusion "
                          ".ckpt: diffusers' convert_original_stable_diffusion_to_diffusers.py)";
  EXPECT_EQ(open_error(zip), zip + ": a PyTorch zip archive (torch.save)" + how);
  EXPECT_EQ(open_error(pickle), pickle + ": a Python pickle" + how);
  EXPECT_THROW(zio::load_safetensors(zip), zerodiff::IoError);
  // A real safetensors header of 640 (0x280) bytes also starts with 0x80 0x02: it must load (found in review).
  std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  header.resize(640, ' ');
  const std::string p = write_raw("header640.st", header, std::string("\0\0\x80?", 4));
  EXPECT_EQ(open_error(p), "<no error>");
  EXPECT_EQ(zio::load_safetensors(p).at("a").item<float>(), 1.0f);
  // Deep nesting is refused while parsing (dump() and the destructor would recurse through it).
  const std::string deep = write_raw("deep.st", R"({"a":{"shape":[[[[[[1]]]]]]}})", "");
  EXPECT_EQ(open_error(deep), deep + ": header nests deeper than 4 levels (not a safetensors header)");
}

TEST(Safetensors, ParseFromMemoryChecksLikeOpen) {
  const std::string path = temp_path("mem.st");
  zio::save_safetensors(path, {{"w", torch::arange(6, torch::kFloat).reshape({2, 3})}});
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto file = zio::SafetensorsFile::parse(bytes, "<memory>");
  EXPECT_TRUE(torch::equal(file.get("w"), torch::arange(6, torch::kFloat).reshape({2, 3})));
  try {
    zio::SafetensorsFile::parse(bytes.substr(0, bytes.size() - 4), "<memory>");
    FAIL();
  } catch (const zerodiff::IoError& e) {
    EXPECT_EQ(std::string(e.what()), "<memory>: tensor 'w': data_offsets [0, 24) out of range (data section is 20 bytes)");
  }
}

TEST(Safetensors, TruncatedFileFailsCleanly) {
  const std::string path = temp_path("trunc.safetensors");
  zio::save_safetensors(path, {{"w", torch::randn({64, 64})}});
  fs::resize_file(path, fs::file_size(path) - 100);
  const std::string err = open_error(path);
  EXPECT_EQ(err, path + ": tensor 'w': data_offsets [0, 16384) out of range (data section is 16284 bytes)");
}

TEST(Safetensors, WriterRejectsBadInputAndKeepsPreviousFile) {
  const std::string path = temp_path("keep.safetensors");
  zio::save_safetensors(path, {{"w", torch::ones({2})}});
  EXPECT_THROW(zio::save_safetensors(path, {{"x", torch::ones({1})}, {"x", torch::ones({1})}}), zerodiff::IoError);
  EXPECT_THROW(zio::save_safetensors(path, {{"c", torch::ones({1}, torch::kComplexFloat)}}), zerodiff::IoError);
  EXPECT_TRUE(torch::equal(zio::load_safetensors(path).at("w"), torch::ones({2})));
  for (const auto& entry : fs::directory_iterator(fs::path(path).parent_path())) {
    EXPECT_EQ(entry.path().string().find(".tmp."), std::string::npos) << "leftover " << entry.path();
  }
}

TEST(Safetensors, FullDiskDuringWriteLosesNothing) {
  // A file-size limit makes write() fail with EFBIG, as a full disk fails with ENOSPC.
  const std::string path = temp_path("disk.safetensors");
  zio::save_safetensors(path, {{"w", torch::ones({2})}});
  std::signal(SIGXFSZ, SIG_IGN);
  rlimit old{};
  getrlimit(RLIMIT_FSIZE, &old);
  rlimit small = old;
  small.rlim_cur = 64 * 1024;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string error;
  try {
    zio::save_safetensors(path, {{"big", torch::zeros({1 << 20})}});
  } catch (const zerodiff::IoError& e) {
    error = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &old);
  EXPECT_EQ(error, path + ": write failed: File too large (previous file left untouched)");
  EXPECT_TRUE(torch::equal(zio::load_safetensors(path).at("w"), torch::ones({2})));
}
