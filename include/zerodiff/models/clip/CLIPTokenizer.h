// zerodiff/models/clip/CLIPTokenizer.h — CLIP's byte-level BPE tokenizer.
//
// Follows transformers.CLIPTokenizer 5.23 (a `tokenizers` pipeline), which is what diffusers'
// StableDiffusionPipeline calls as tokenizer(prompt, padding="max_length", max_length=77, truncation=True).
// The steps, in order, exactly as that pipeline runs them:
//   1. special tokens (bos, eos, unk, pad contents; case-sensitive, leftmost-longest) are cut out of the raw
//      text and become their ids; with SD 2's pad "!" every "!" in a prompt is the pad token (id 0);
//   2. each remaining segment is normalized: Unicode NFC, every run of Unicode White_Space -> one " ",
//      lower-case code point by code point (full mapping, e.g. U+0130 -> "i" U+0307; no final-sigma rule);
//   3. pre-tokenized with CLIP's pattern (RE2)
//        <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//      keeping the matches (so whitespace disappears), then split again by the GPT-2 byte-level pattern
//      (which only changes the literal "<|startoftext|>" / "<|endoftext|>" pieces: "<|", "...", "|>");
//   4. every piece's UTF-8 bytes are mapped through bytes_to_unicode, "</w>" is appended to the last symbol,
//      and merges are applied by rank (cached per piece);
//   5. bos + ids[:max_length-2] + eos, padded with the pad id to max_length; attention mask 1 on real tokens.
// What is NOT done, because the reference does not do it: ftfy.fix_text and html.unescape (openai/CLIP's
// simple_tokenizer does both; transformers 5's CLIPTokenizer does neither, so "&amp;" stays 3 tokens), and
// stripping of the text (leading/trailing whitespace vanishes in step 3 anyway).
// Unicode data (NFC, lower-case) comes from generated tables (src/models/clip/UnicodeTables.inc, Unicode 14);
// tokenizers' Rust tables can differ for code points assigned after that. Invalid UTF-8 bytes are decoded as
// U+FFFD (the reference only sees valid Python strings).
//
// Design rules: immutable after construction and cheap to copy (shared implementation); thread-safe (the BPE
// cache is guarded), so data-loader workers can share one instance.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace zerodiff::models {

/// Special tokens and lengths of a CLIPTokenizer (transformers' tokenizer_config.json fields).
struct CLIPTokenizerOptions {
  /// Sequence length for padding and truncation (SD: 77).
  TORCH_ARG(int64_t, model_max_length) = 77;
  TORCH_ARG(std::string, bos_token) = "<|startoftext|>";
  TORCH_ARG(std::string, eos_token) = "<|endoftext|>";
  TORCH_ARG(std::string, unk_token) = "<|endoftext|>";
  /// SD 1.x: "<|endoftext|>" (49407); SD 2.x (OpenCLIP): "!" (0).
  TORCH_ARG(std::string, pad_token) = "<|endoftext|>";
};

/// Output of CLIPTokenizer::operator(): both [B, max_length] int64 on the CPU.
struct CLIPTokens {
  at::Tensor input_ids;       // [B, L] int64
  at::Tensor attention_mask;  // [B, L] int64: 1 for bos, text and eos, 0 for padding
};

class CLIPTokenizer {
 public:
  /// Builds a tokenizer from a vocabulary (token -> id) and merges in rank order. Throws zerodiff::Error when a
  /// special token or a merge result is missing from the vocabulary, or a merge symbol is not in it.
  CLIPTokenizer(std::unordered_map<std::string, int64_t> vocab,
                std::vector<std::pair<std::string, std::string>> merges, CLIPTokenizerOptions options = {});

  /// Loads a diffusers/transformers `tokenizer/` folder: vocab.json, merges.txt, and (optional)
  /// tokenizer_config.json then special_tokens_map.json (which wins) for the special tokens and
  /// model_max_length. `pad_token`, when given, overrides the folder's. Throws IoError naming the file.
  static CLIPTokenizer from_pretrained(const std::string& dir, const std::optional<std::string>& pad_token = {});

  /// Loads OpenAI's original `bpe_simple_vocab_16e6.txt.gz` (zlib): the standard conversion, 49,408 tokens
  /// (256 byte symbols, the same with "</w>", 48,894 merges, <|startoftext|>, <|endoftext|>).
  static CLIPTokenizer from_bpe_gz(const std::string& path, CLIPTokenizerOptions options = {});

  /// Path of bpe_simple_vocab_16e6.txt.gz inside an installed open_clip package under `venv`
  /// (<venv>/lib/python3.*/site-packages/open_clip/), or "" when there is none.
  static std::string find_bpe_gz(const std::string& venv);

  /// Writes vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json into `dir` (created),
  /// a folder transformers' CLIPTokenizer.from_pretrained loads. Throws IoError on failure.
  void save_pretrained(const std::string& dir) const;

  /// Token ids of `text` without bos/eos, padding or truncation.
  std::vector<int64_t> encode(std::string_view text) const;

  /// transformers' tokenizer(texts, padding="max_length", max_length=L, truncation=True) with
  /// L = max_length or model_max_length: bos + first L-2 ids + eos, then pad ids. A prompt that is cut logs
  /// ZD_LOG_WARN "The following part of your input was truncated because CLIP can only handle sequences up to
  /// 77 tokens: [...]" (diffusers' warning) naming the removed text, once per text and length (for the first 1000 texts).
  CLIPTokens operator()(const std::vector<std::string>& texts, std::optional<int64_t> max_length = {}) const;

  /// Text of `ids` ("</w>" becomes a space, byte symbols back to UTF-8, specials dropped when asked), trimmed.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = true) const;

  /// Id of `token`, or nullopt when it is not in the vocabulary.
  std::optional<int64_t> token_to_id(const std::string& token) const;
  /// Token string of `id`; throws zerodiff::Error when out of range.
  const std::string& id_to_token(int64_t id) const;

  int64_t vocab_size() const;
  int64_t bos_token_id() const;
  int64_t eos_token_id() const;
  int64_t pad_token_id() const;
  int64_t unk_token_id() const;
  const CLIPTokenizerOptions& options() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

namespace clip_text {

/// NFC, then every run of Unicode White_Space -> " ", then per-code-point full lower-case: step 2 above.
/// Exposed for tests.
std::string normalize(std::string_view utf8);

/// `bytes` with every invalid UTF-8 sequence replaced by U+FFFD (maximal subparts, as Python's
/// bytes.decode("utf-8", errors="replace") and Rust's String::from_utf8_lossy).
std::string to_valid_utf8(std::string_view bytes);

/// NFC normalization of UTF-8 text (invalid bytes -> U+FFFD).
std::string nfc(std::string_view utf8);

/// Unicode version of the built-in normalization tables ("14.0.0").
const char* unicode_version();

}  // namespace clip_text

}  // namespace zerodiff::models
