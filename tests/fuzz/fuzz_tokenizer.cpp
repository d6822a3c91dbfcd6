// libFuzzer target: the CLIP tokenizer (normalisation, RE2 pre-tokenisation, byte-level BPE) on arbitrary bytes,
// with the test vocabulary (tests/data/clip/tokenizer, the real 49,408-token CLIP vocabulary). Checks: every id is
// in the vocabulary, the padded batch is [1, 77] starting with BOS, and decode() accepts what encode() produced.
#include <cstddef>
#include <cstdint>
#include <string>

#include "zerodiff/models/clip/CLIPTokenizer.h"

namespace {
const zerodiff::models::CLIPTokenizer& tokenizer() {
  static const auto* t =
      new zerodiff::models::CLIPTokenizer(zerodiff::models::CLIPTokenizer::from_pretrained(ZERODIFF_FUZZ_TOKENIZER_DIR));
  return *t;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& tok = tokenizer();
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::vector<int64_t> ids = tok.encode(text);
  for (int64_t id : ids) {
    if (id < 0 || id >= tok.vocab_size()) __builtin_trap();
  }
  const auto batch = tok({text});
  if (batch.input_ids.dim() != 2 || batch.input_ids.size(0) != 1 || batch.input_ids.size(1) != 77) __builtin_trap();
  if (batch.input_ids[0][0].item<int64_t>() != tok.bos_token_id()) __builtin_trap();
  (void)tok.decode(ids);
  return 0;
}
