// zerodiff/data/CaptionTransform.h — caption augmentation for text-to-image training.
//  * Dropout: with probability `dropout` the caption becomes "" (the unconditional prompt), which trains the
//    model for classifier-free guidance (Ho & Salimans 2022; diffusers' --proportion_empty_prompts).
//  * Tag shuffling (kohya-ss sd-scripts' --shuffle_caption with --keep_tokens): the caption is split at
//    commas, each tag trimmed of spaces, the first `keep_tokens` tags stay in place, the rest are shuffled,
//    and the tags are joined with ", ". Empty tags are dropped.
// Order: dropout first (one rng.uniform draw when dropout > 0; a dropped caption is not shuffled), then
// the shuffle (Fisher–Yates over the movable tags).
#pragma once

#include <string>

#include "zerodiff/data/Rng.h"

namespace zerodiff::data {

struct CaptionTransformOptions {
  double dropout = 0.0;       ///< probability in [0, 1] of replacing the caption by ""
  bool shuffle_tags = false;  ///< shuffle comma-separated tags
  int keep_tokens = 0;        ///< leading tags kept in place when shuffling (>= 0)
};

class CaptionTransform {
 public:
  /// Throws zerodiff::Error when dropout is outside [0, 1] or keep_tokens < 0.
  explicit CaptionTransform(CaptionTransformOptions options);

  /// The transformed caption (see the file comment for the draws taken from `rng`).
  std::string operator()(const std::string& caption, Rng& rng) const;

  const CaptionTransformOptions& options() const { return options_; }

 private:
  CaptionTransformOptions options_;
};

}  // namespace zerodiff::data
