// CaptionTransform: dropout to "" and kohya-style tag shuffling with the first K tags kept.
#include "zerodiff/data/CaptionTransform.h"

#include <algorithm>
#include <cstddef>
#include <vector>

#include "zerodiff/core/Error.h"

namespace zerodiff::data {

CaptionTransform::CaptionTransform(CaptionTransformOptions options) : options_(options) {
  ZD_CHECK(options_.dropout >= 0 && options_.dropout <= 1, "caption_dropout must be in [0, 1], got ",
           options_.dropout);
  ZD_CHECK(options_.keep_tokens >= 0, "keep_tokens must be >= 0, got ", options_.keep_tokens);
}

std::string CaptionTransform::operator()(const std::string& caption, Rng& rng) const {
  if (options_.dropout > 0 && rng.bernoulli(options_.dropout)) return "";
  if (!options_.shuffle_tags) return caption;
  std::vector<std::string> tags;
  size_t start = 0;
  while (start <= caption.size()) {
    size_t end = caption.find(',', start);
    if (end == std::string::npos) end = caption.size();
    const std::string tag = caption.substr(start, end - start);
    const auto first = tag.find_first_not_of(" \t\r\n");
    if (first != std::string::npos) {
      tags.push_back(tag.substr(first, tag.find_last_not_of(" \t\r\n") - first + 1));
    }
    start = end + 1;
  }
  const auto keep = std::min(tags.size(), static_cast<size_t>(options_.keep_tokens));
  std::vector<std::string> movable(tags.begin() + static_cast<std::ptrdiff_t>(keep), tags.end());
  rng.shuffle(movable);
  std::string out;
  for (size_t i = 0; i < tags.size(); ++i) {
    if (i) out += ", ";
    out += i < keep ? tags[i] : movable[i - keep];
  }
  return out;
}

}  // namespace zerodiff::data
