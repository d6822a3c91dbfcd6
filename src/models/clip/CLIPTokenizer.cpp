// CLIPTokenizer: byte-level BPE as transformers.CLIPTokenizer 5.23 (tokenizers backend) and openai/CLIP's
// simple_tokenizer.py run it; see the header for the exact pipeline and its documented differences.
#include "zerodiff/models/clip/CLIPTokenizer.h"

#include <ATen/ATen.h>
#include <re2/re2.h>
#include <zlib.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <climits>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/io/AtomicFile.h"

namespace fs = std::filesystem;

namespace zerodiff::models {
namespace {

// Number of merges used from the original BPE file: 49152 - 256 - 2 (lines 1 .. 48894 after the header).
constexpr size_t kClipMerges = 49152 - 256 - 2;
constexpr int64_t kClipVocabSize = 49408;
// Unicode White_Space inside a character class (RE2's \s is ASCII only).
#define ZD_CLIP_WS "\\t\\n\\x{0B}\\f\\r \\x{85}\\p{Z}"
// CLIP's pre-tokenizer pattern (transformers' CLIPTokenizer / openai/CLIP), with \s spelled as White_Space.
constexpr const char* kClipPattern =
    "(<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^" ZD_CLIP_WS
    "\\p{L}\\p{N}]+)";
// GPT-2's byte-level pattern (tokenizers' ByteLevel pre-tokenizer, use_regex=true) restricted to pieces without
// whitespace, which is all CLIP's pattern produces: " ?" prefixes and the whitespace branches never apply.
constexpr const char* kByteLevelPattern =
    "('s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}+|[^" ZD_CLIP_WS "\\p{L}\\p{N}]+)";
#undef ZD_CLIP_WS

constexpr const char* kEndOfWord = "</w>";

/// openai/CLIP's bytes_to_unicode: byte -> UTF-8 of the code point standing for it.
std::array<std::string, 256> bytes_to_unicode() {
  std::vector<int> bs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  std::vector<int> cs = bs;
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
      bs.push_back(b);
      cs.push_back(256 + n++);
    }
  }
  std::array<std::string, 256> out;
  for (size_t i = 0; i < bs.size(); ++i) {
    const auto cp = static_cast<uint32_t>(cs[i]);
    std::string u;
    if (cp < 0x80) {
      u += static_cast<char>(cp);
    } else {  // all below U+0800
      u += static_cast<char>(0xC0 | (cp >> 6));
      u += static_cast<char>(0x80 | (cp & 0x3F));
    }
    out[static_cast<size_t>(bs[i])] = u;
  }
  return out;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(str(path, ": cannot open file"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::json read_json_file(const std::string& path) {
  const std::string text = read_text_file(path);
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw IoError(str(path, ": not valid JSON"));
  return j;
}

std::string read_gzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw IoError(str(path, ": cannot open gzip file"));
  std::string out;
  std::vector<char> buf(1 << 16);
  for (;;) {
    const int n = gzread(f, buf.data(), static_cast<unsigned>(buf.size()));
    if (n < 0) {
      int errnum = 0;
      const std::string message = gzerror(f, &errnum);
      gzclose(f);
      throw IoError(str(path, ": gzip read error: ", message));
    }
    if (n == 0) break;
    out.append(buf.data(), static_cast<size_t>(n));
  }
  gzclose(f);
  return out;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
    start = end + 1;
  }
  return lines;
}

/// A special token as tokenizer_config.json / special_tokens_map.json write it: "text" or {"content": "text"}.
std::optional<std::string> special_token(const nlohmann::json& cfg, const char* key, const std::string& file) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && it->at("content").is_string()) {
    return it->at("content").get<std::string>();
  }
  throw IoError(str(file, ": '", key, "' must be a string or an object with \"content\", got ", it->dump()));
}

void apply_token_config(const nlohmann::json& cfg, const std::string& file, CLIPTokenizerOptions& options) {
  if (!cfg.is_object()) throw IoError(str(file, ": expected a JSON object"));
  if (auto v = special_token(cfg, "bos_token", file)) options.bos_token(*v);
  if (auto v = special_token(cfg, "eos_token", file)) options.eos_token(*v);
  if (auto v = special_token(cfg, "unk_token", file)) options.unk_token(*v);
  if (auto v = special_token(cfg, "pad_token", file)) options.pad_token(*v);
  auto it = cfg.find("model_max_length");
  if (it != cfg.end() && !it->is_null()) {
    if (!it->is_number()) throw IoError(str(file, ": 'model_max_length' must be a number, got ", it->dump()));
    const double v = it->get<double>();
    // transformers writes 1e30 (VERY_LARGE_INTEGER) for "no limit"; CLIP models always have 77 positions.
    if (v >= 1 && v <= 1e6) {
      options.model_max_length(static_cast<int64_t>(v));
    } else {
      ZD_LOG_WARN(file, ": model_max_length ", it->dump(), " is not a usable length; keeping ",
                  options.model_max_length());
    }
  }
}

}  // namespace

struct CLIPTokenizer::Impl {
  CLIPTokenizerOptions options;
  std::unordered_map<std::string, int64_t> encoder;
  std::vector<std::string> decoder;  // id -> token
  std::vector<std::pair<std::string, std::string>> merges;
  std::unordered_map<std::string, int64_t> ranks;  // "a b" -> rank
  std::array<std::string, 256> byte_encoder;
  std::unordered_map<std::string, uint8_t> byte_decoder;  // UTF-8 of a symbol code point -> byte
  std::vector<std::pair<std::string, int64_t>> specials;  // content -> id, for splitting raw text
  int64_t bos = 0, eos = 0, pad = 0, unk = 0;
  std::unique_ptr<RE2> clip_re, byte_level_re;
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int64_t>> cache;
  mutable std::unordered_set<std::string> warned;  // texts whose truncation was logged (once each; cache_mutex)

  int64_t id_of(const std::string& token, const char* what) const {
    auto it = encoder.find(token);
    ZD_CHECK(it != encoder.end(), "CLIPTokenizer: ", what, " '", token, "' is not in the vocabulary (",
             encoder.size(), " tokens)");
    return it->second;
  }

  /// BPE of one pre-tokenized piece (already byte-mapped symbols), with the end-of-word suffix.
  std::vector<int64_t> bpe(const std::string& piece) const {
    {
      std::lock_guard<std::mutex> lock(cache_mutex);
      auto it = cache.find(piece);
      if (it != cache.end()) return it->second;
    }
    // Symbols: one per byte of the piece (its bytes_to_unicode string); "</w>" on the last.
    std::vector<std::string> word;
    word.reserve(piece.size());
    for (unsigned char b : piece) word.push_back(byte_encoder[b]);
    if (!word.empty()) word.back() += kEndOfWord;
    while (word.size() > 1) {
      int64_t best = std::numeric_limits<int64_t>::max();
      size_t best_i = 0;
      for (size_t i = 0; i + 1 < word.size(); ++i) {
        auto it = ranks.find(word[i] + ' ' + word[i + 1]);
        if (it != ranks.end() && it->second < best) best = it->second, best_i = i;
      }
      if (best == std::numeric_limits<int64_t>::max()) break;
      const std::string first = word[best_i], second = word[best_i + 1];
      // Merge every occurrence of the best pair, left to right (simple_tokenizer.bpe).
      std::vector<std::string> merged;
      merged.reserve(word.size());
      for (size_t i = 0; i < word.size();) {
        if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
          merged.push_back(first + second);
          i += 2;
        } else {
          merged.push_back(word[i]);
          ++i;
        }
      }
      word.swap(merged);
    }
    std::vector<int64_t> ids;
    ids.reserve(word.size());
    for (const std::string& symbol : word) {
      auto it = encoder.find(symbol);
      ids.push_back(it == encoder.end() ? unk : it->second);
    }
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache.size() > 200000) cache.clear();
    cache.emplace(piece, ids);
    return ids;
  }

  void encode_segment(const std::string& raw, std::vector<int64_t>& out) const {
    const std::string text = clip_text::normalize(raw);
    re2::StringPiece input(text);
    re2::StringPiece piece;
    while (RE2::FindAndConsume(&input, *clip_re, &piece)) {
      re2::StringPiece sub_input(piece);
      re2::StringPiece sub;
      while (RE2::FindAndConsume(&sub_input, *byte_level_re, &sub)) {
        const std::vector<int64_t> ids = bpe(std::string(sub.data(), sub.size()));
        out.insert(out.end(), ids.begin(), ids.end());
      }
    }
  }

  std::vector<int64_t> encode(std::string_view text) const {
    std::vector<int64_t> out;
    // Cut special tokens out of the raw text (leftmost, then longest), encode the pieces between them.
    size_t start = 0, i = 0;
    while (i < text.size()) {
      const std::pair<std::string, int64_t>* match = nullptr;
      for (const auto& s : specials) {
        if (text.compare(i, s.first.size(), s.first) == 0 && (!match || s.first.size() > match->first.size())) {
          match = &s;
        }
      }
      if (!match) {
        ++i;
        continue;
      }
      if (i > start) encode_segment(std::string(text.substr(start, i - start)), out);
      out.push_back(match->second);
      i += match->first.size();
      start = i;
    }
    if (start < text.size()) encode_segment(std::string(text.substr(start)), out);
    return out;
  }
};

CLIPTokenizer::CLIPTokenizer(std::unordered_map<std::string, int64_t> vocab,
                             std::vector<std::pair<std::string, std::string>> merges, CLIPTokenizerOptions options)
    : impl_(std::make_shared<Impl>()) {
  Impl& m = *impl_;
  m.options = std::move(options);
  ZD_CHECK_GE(m.options.model_max_length(), 2, "CLIPTokenizer: model_max_length must leave room for bos and eos");
  m.encoder = std::move(vocab);
  int64_t max_id = -1;
  for (const auto& [token, id] : m.encoder) {
    ZD_CHECK(id >= 0, "CLIPTokenizer: token '", token, "' has negative id ", id);
    max_id = std::max(max_id, id);
  }
  ZD_CHECK_EQ(max_id + 1, static_cast<int64_t>(m.encoder.size()),
              "CLIPTokenizer: vocabulary ids must be 0..N-1 without gaps or duplicates");
  m.decoder.assign(m.encoder.size(), std::string());
  for (const auto& [token, id] : m.encoder) m.decoder[static_cast<size_t>(id)] = token;
  m.merges = std::move(merges);
  m.ranks.reserve(m.merges.size());
  for (size_t r = 0; r < m.merges.size(); ++r) {
    const auto& [a, b] = m.merges[r];
    ZD_CHECK(m.encoder.count(a + b), "CLIPTokenizer: merge ", r, " '", a, " ", b, "' produces '", a + b,
             "', which is not in the vocabulary");
    m.ranks.emplace(a + ' ' + b, static_cast<int64_t>(r));  // first occurrence keeps the lowest rank
  }
  m.byte_encoder = bytes_to_unicode();
  for (size_t b = 0; b < 256; ++b) {
    ZD_CHECK(m.encoder.count(m.byte_encoder[b] + kEndOfWord), "CLIPTokenizer: byte symbol '", m.byte_encoder[b],
             "</w>' is not in the vocabulary: not a CLIP byte-level BPE vocabulary");
    m.byte_decoder.emplace(m.byte_encoder[b], static_cast<uint8_t>(b));
  }
  m.bos = m.id_of(m.options.bos_token(), "bos_token");
  m.eos = m.id_of(m.options.eos_token(), "eos_token");
  m.unk = m.id_of(m.options.unk_token(), "unk_token");
  m.pad = m.id_of(m.options.pad_token(), "pad_token");
  for (const std::string* s : {&m.options.bos_token(), &m.options.eos_token(), &m.options.unk_token(),
                               &m.options.pad_token()}) {
    if (s->empty()) continue;
    const bool seen = std::any_of(m.specials.begin(), m.specials.end(), [&](const auto& e) { return e.first == *s; });
    if (!seen) m.specials.emplace_back(*s, m.encoder.at(*s));
  }
  RE2::Options re_options;
  re_options.set_encoding(RE2::Options::EncodingUTF8);
  re_options.set_log_errors(false);
  m.clip_re = std::make_unique<RE2>(kClipPattern, re_options);
  m.byte_level_re = std::make_unique<RE2>(kByteLevelPattern, re_options);
  ZD_INTERNAL_ASSERT(m.clip_re->ok(), m.clip_re->error());
  ZD_INTERNAL_ASSERT(m.byte_level_re->ok(), m.byte_level_re->error());
}

CLIPTokenizer CLIPTokenizer::from_pretrained(const std::string& dir, const std::optional<std::string>& pad_token) {
  const fs::path root(dir);
  ZD_CHECK_T(IoError, fs::is_directory(root), dir, ": tokenizer folder not found");
  const std::string vocab_path = (root / "vocab.json").string();
  const std::string merges_path = (root / "merges.txt").string();
  ZD_CHECK_T(IoError, fs::is_regular_file(vocab_path), dir,
             ": missing vocab.json (a CLIP tokenizer folder holds vocab.json and merges.txt)");
  ZD_CHECK_T(IoError, fs::is_regular_file(merges_path), dir,
             ": missing merges.txt (a CLIP tokenizer folder holds vocab.json and merges.txt)");
  const nlohmann::json vocab_json = read_json_file(vocab_path);
  ZD_CHECK_T(IoError, vocab_json.is_object(), vocab_path, ": expected an object of token -> id");
  std::unordered_map<std::string, int64_t> vocab;
  vocab.reserve(vocab_json.size());
  for (auto it = vocab_json.begin(); it != vocab_json.end(); ++it) {
    ZD_CHECK_T(IoError, it.value().is_number_integer(), vocab_path, ": id of '", it.key(), "' is not an integer");
    vocab.emplace(it.key(), it.value().get<int64_t>());
  }
  std::vector<std::pair<std::string, std::string>> merges;
  const std::vector<std::string> lines = split_lines(read_text_file(merges_path));
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    if (line.empty() || (i == 0 && line.rfind("#version", 0) == 0)) continue;
    const size_t space = line.find(' ');
    ZD_CHECK_T(IoError, space != std::string::npos && line.find(' ', space + 1) == std::string::npos, merges_path,
               ":", i + 1, ": expected two symbols separated by one space, got '", line, "'");
    merges.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  CLIPTokenizerOptions options;
  for (const char* name : {"tokenizer_config.json", "special_tokens_map.json"}) {
    const fs::path p = root / name;
    if (fs::is_regular_file(p)) apply_token_config(read_json_file(p.string()), p.string(), options);
  }
  if (pad_token) options.pad_token(*pad_token);
  try {
    return CLIPTokenizer(std::move(vocab), std::move(merges), options);
  } catch (const Error& e) {
    throw IoError(str(dir, ": ", e.what()));
  }
}

CLIPTokenizer CLIPTokenizer::from_bpe_gz(const std::string& path, CLIPTokenizerOptions options) {
  const std::vector<std::string> lines = split_lines(read_gzip(path));
  ZD_CHECK_T(IoError, lines.size() > kClipMerges, path, ": has ", lines.size(), " lines, expected at least ",
             kClipMerges + 1, " (header + merges)");
  const std::array<std::string, 256> bytes = bytes_to_unicode();
  std::vector<std::string> tokens;
  tokens.reserve(static_cast<size_t>(kClipVocabSize));
  // Order of openai/CLIP's simple_tokenizer: byte symbols in bytes_to_unicode's order (printable bytes first).
  std::vector<int> order;
  for (int b = '!'; b <= '~'; ++b) order.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) order.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) order.push_back(b);
  for (int b = 0; b < 256; ++b) {
    if (std::find(order.begin(), order.end(), b) == order.end()) order.push_back(b);
  }
  for (int b : order) tokens.push_back(bytes[static_cast<size_t>(b)]);
  for (int b : order) tokens.push_back(bytes[static_cast<size_t>(b)] + kEndOfWord);
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(kClipMerges);
  for (size_t i = 1; i <= kClipMerges; ++i) {
    std::istringstream ss(lines[i]);
    std::string a, b, extra;
    ZD_CHECK_T(IoError, (ss >> a >> b) && !(ss >> extra), path, ":", i + 1, ": expected a merge 'a b', got '",
               lines[i], "'");
    tokens.push_back(a + b);
    merges.emplace_back(std::move(a), std::move(b));
  }
  tokens.emplace_back("<|startoftext|>");
  tokens.emplace_back("<|endoftext|>");
  std::unordered_map<std::string, int64_t> vocab;
  vocab.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    ZD_CHECK_T(IoError, vocab.emplace(tokens[i], static_cast<int64_t>(i)).second, path, ": token '", tokens[i],
               "' appears twice");
  }
  try {
    return CLIPTokenizer(std::move(vocab), std::move(merges), std::move(options));
  } catch (const Error& e) {
    throw IoError(str(path, ": ", e.what()));
  }
}

std::string CLIPTokenizer::find_bpe_gz(const std::string& venv) {
  std::error_code ec;
  const fs::path lib = fs::path(venv) / "lib";
  if (!fs::is_directory(lib, ec)) return {};
  std::vector<fs::path> found;
  for (const auto& entry : fs::directory_iterator(lib, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("python3", 0) != 0) continue;
    const fs::path gz = entry.path() / "site-packages" / "open_clip" / "bpe_simple_vocab_16e6.txt.gz";
    if (fs::is_regular_file(gz, ec)) found.push_back(gz);
  }
  if (found.empty()) return {};
  std::sort(found.begin(), found.end());
  return found.back().string();
}

void CLIPTokenizer::save_pretrained(const std::string& dir) const {
  const Impl& m = *impl_;
  std::error_code ec;
  fs::create_directories(dir, ec);
  ZD_CHECK_T(IoError, !ec, dir, ": cannot create folder: ", ec.message());
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  for (size_t id = 0; id < m.decoder.size(); ++id) vocab[m.decoder[id]] = static_cast<int64_t>(id);
  io::write_file_atomic((fs::path(dir) / "vocab.json").string(), vocab.dump() + "\n");
  std::string merges = "#version: 0.2\n";
  for (const auto& [a, b] : m.merges) merges += a + " " + b + "\n";
  io::write_file_atomic((fs::path(dir) / "merges.txt").string(), merges);
  const auto added = [](const std::string& content, bool with_type) {
    nlohmann::ordered_json t = nlohmann::ordered_json::object();
    if (with_type) t["__type"] = "AddedToken";
    t["content"] = content;
    t["lstrip"] = false;
    t["normalized"] = false;
    t["rstrip"] = false;
    t["single_word"] = false;
    return t;
  };
  // A plain "!"-style pad stays a string, as the published SD 2 folders write it.
  const auto special = [&](const std::string& content, bool with_type) -> nlohmann::ordered_json {
    if (content.size() > 1) return added(content, with_type);
    return content;
  };
  nlohmann::ordered_json map = nlohmann::ordered_json::object();
  map["bos_token"] = special(m.options.bos_token(), false);
  map["eos_token"] = special(m.options.eos_token(), false);
  map["pad_token"] = special(m.options.pad_token(), false);
  map["unk_token"] = special(m.options.unk_token(), false);
  nlohmann::ordered_json config = nlohmann::ordered_json::object();
  config["add_prefix_space"] = false;
  config["bos_token"] = special(m.options.bos_token(), true);
  config["do_lower_case"] = true;
  config["eos_token"] = special(m.options.eos_token(), true);
  config["errors"] = "replace";
  config["model_max_length"] = m.options.model_max_length();
  config["pad_token"] = special(m.options.pad_token(), true);
  config["tokenizer_class"] = "CLIPTokenizer";
  config["unk_token"] = special(m.options.unk_token(), true);
  io::write_file_atomic((fs::path(dir) / "tokenizer_config.json").string(), config.dump(2) + "\n");
  io::write_file_atomic((fs::path(dir) / "special_tokens_map.json").string(), map.dump(2) + "\n");
}

std::vector<int64_t> CLIPTokenizer::encode(std::string_view text) const { return impl_->encode(text); }

CLIPTokens CLIPTokenizer::operator()(const std::vector<std::string>& texts, std::optional<int64_t> max_length) const {
  const Impl& m = *impl_;
  const int64_t L = max_length.value_or(m.options.model_max_length());
  ZD_CHECK_GE(L, 2, "CLIPTokenizer: max_length must leave room for bos and eos");
  const auto B = static_cast<int64_t>(texts.size());
  at::Tensor ids = at::full({B, L}, m.pad, at::kLong);
  at::Tensor mask = at::zeros({B, L}, at::kLong);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto mask_a = mask.accessor<int64_t, 2>();
  const auto keep = static_cast<size_t>(L - 2);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> tokens = m.encode(texts[static_cast<size_t>(b)]);
    if (tokens.size() > keep) {
      const std::vector<int64_t> removed(tokens.begin() + static_cast<std::ptrdiff_t>(keep), tokens.end());
      // Once per text and length (a training caption is tokenized every epoch), for the first kMaxWarned texts;
      // then one line saying that further truncations are not reported (shuffled tags make endless variants).
      constexpr size_t kMaxWarned = 1000;
      bool first = false, cap_reached = false;
      {
        std::lock_guard<std::mutex> lock(m.cache_mutex);
        if (m.warned.size() < kMaxWarned) {
          first = m.warned.insert(str(L, ":", texts[static_cast<size_t>(b)])).second;
          cap_reached = first && m.warned.size() == kMaxWarned;
        }
      }
      if (first) {
        ZD_LOG_WARN("The following part of your input was truncated because CLIP can only handle sequences up to ",
                    L, " tokens: ['", decode(removed), "']");
      }
      if (cap_reached) ZD_LOG_WARN("CLIPTokenizer: ", kMaxWarned, " truncated texts reported; further ones are not");
      tokens.resize(keep);
    }
    int64_t j = 0;
    ids_a[b][j] = m.bos, mask_a[b][j] = 1, ++j;
    for (int64_t t : tokens) ids_a[b][j] = t, mask_a[b][j] = 1, ++j;
    ids_a[b][j] = m.eos, mask_a[b][j] = 1;
  }
  return {ids, mask};
}

std::string CLIPTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  const Impl& m = *impl_;
  std::string symbols;
  for (int64_t id : ids) {
    const std::string& token = id_to_token(id);
    const bool special = std::any_of(m.specials.begin(), m.specials.end(), [&](const auto& s) { return s.second == id; });
    if (special && skip_special_tokens) continue;
    symbols += token;
  }
  // Byte symbols back to bytes; "</w>" is plain ASCII and survives, then becomes a space.
  std::string bytes;
  for (size_t i = 0; i < symbols.size();) {
    const auto c = static_cast<unsigned char>(symbols[i]);
    const size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : 4;
    const std::string sym = symbols.substr(i, len);
    auto it = m.byte_decoder.find(sym);
    if (it != m.byte_decoder.end()) {
      bytes += static_cast<char>(it->second);
    } else {
      bytes += sym;
    }
    i += len;
  }
  // tokenizers' ByteLevel decoder: String::from_utf8_lossy, then transformers replaces "</w>" with " ".
  bytes = clip_text::to_valid_utf8(bytes);
  std::string out;
  for (size_t i = 0; i < bytes.size();) {
    if (bytes.compare(i, 4, kEndOfWord) == 0) {
      out += ' ';
      i += 4;
    } else {
      out += bytes[i++];
    }
  }
  const size_t first = out.find_first_not_of(" \t\n\r\f\v");
  if (first == std::string::npos) return {};
  const size_t last = out.find_last_not_of(" \t\n\r\f\v");
  return out.substr(first, last - first + 1);
}

std::optional<int64_t> CLIPTokenizer::token_to_id(const std::string& token) const {
  auto it = impl_->encoder.find(token);
  if (it == impl_->encoder.end()) return std::nullopt;
  return it->second;
}

const std::string& CLIPTokenizer::id_to_token(int64_t id) const {
  ZD_CHECK(id >= 0 && id < vocab_size(), "CLIPTokenizer: token id ", id, " is out of range [0, ", vocab_size(), ")");
  return impl_->decoder[static_cast<size_t>(id)];
}

int64_t CLIPTokenizer::vocab_size() const { return static_cast<int64_t>(impl_->decoder.size()); }
int64_t CLIPTokenizer::bos_token_id() const { return impl_->bos; }
int64_t CLIPTokenizer::eos_token_id() const { return impl_->eos; }
int64_t CLIPTokenizer::pad_token_id() const { return impl_->pad; }
int64_t CLIPTokenizer::unk_token_id() const { return impl_->unk; }
const CLIPTokenizerOptions& CLIPTokenizer::options() const { return impl_->options; }

}  // namespace zerodiff::models
