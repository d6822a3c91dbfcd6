// zerodiff/data/DataConfig.h — the `data:` section of a training config, and the dataset and loader it
// describes.
//
//   data:
//     dataset: imagefolder        # imagefolder (metadata.jsonl/csv) | captions (image + .txt) | synthetic
//     path: data/emoji-64
//     caption_column: text
//     resolution: 64
//     center_crop: true
//     random_flip: true
//     caption_dropout: 0.1
//     batch_size: 8
//     num_workers: 2
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "zerodiff/core/Enum.h"
#include "zerodiff/data/DataLoader.h"
#include "zerodiff/data/Dataset.h"
#include "zerodiff/data/ImageDecoder.h"

namespace zerodiff::data {

/// Which dataset a run reads (data.dataset; DataConfig documents each).
enum class DatasetKind { imagefolder, captions, synthetic };
inline constexpr EnumName<DatasetKind> kDatasetNames[] = {{DatasetKind::imagefolder, "imagefolder"},
                                                          {DatasetKind::captions, "captions"},
                                                          {DatasetKind::synthetic, "synthetic"}};
constexpr std::span<const EnumName<DatasetKind>> enum_names(DatasetKind) { return kDatasetNames; }

struct DataConfig {
  DatasetKind dataset = DatasetKind::imagefolder;
  std::string path;
  std::string caption_column = "text";
  std::string caption_extension = ".txt";
  int64_t synthetic_size = 1000;
  int64_t synthetic_image_size = 0;  // 0: the resolution
  int64_t resolution = 512;
  bool center_crop = false;
  bool random_flip = false;
  double caption_dropout = 0.0;
  bool shuffle_tags = false;
  int keep_tokens = 0;
  int64_t batch_size = 1;
  int num_workers = 2;
  int prefetch = 2;
  bool shuffle = true;
  int64_t seed = 0;
  bool drop_last = false;
  int64_t max_image_pixels = ImageDecoder::kDefaultMaxPixels;
  double validation_split = 0.0;

  template <class V>
  void visit(V& v) {
    v("dataset", dataset,
      "imagefolder: <path>/metadata.jsonl or metadata.csv; captions: image + caption sidecar files; "
      "synthetic: coloured shapes generated from the seed");
    v("path", path, "dataset folder (imagefolder, captions)");
    v("caption_column", caption_column, "metadata key/column of the caption(s) (imagefolder)");
    v("caption_extension", caption_extension, "extension of the caption files (captions)");
    v("synthetic_size", synthetic_size, "number of samples (synthetic)");
    v("synthetic_image_size", synthetic_image_size, "side of the generated images; 0 = resolution (synthetic)");
    v("resolution", resolution, "training image side in pixels (shorter side resized, then cropped)");
    v("center_crop", center_crop, "center crop instead of a random crop");
    v("random_flip", random_flip, "random horizontal flip");
    v("caption_dropout", caption_dropout, "probability of an empty caption (classifier-free guidance)");
    v("shuffle_tags", shuffle_tags, "shuffle comma-separated caption tags");
    v("keep_tokens", keep_tokens, "leading tags kept in place when shuffling");
    v("batch_size", batch_size, "samples per batch per rank");
    v("num_workers", num_workers, "loader threads; 0 = load in the training thread");
    v("prefetch", prefetch, "batches queued per worker");
    v("shuffle", shuffle, "reshuffle every epoch");
    v("seed", seed, "seed of the shuffle and the augmentations");
    v("drop_last", drop_last, "drop the incomplete last batch");
    v("max_image_pixels", max_image_pixels, "largest image (width x height) decoded; bigger ones are skipped");
    v("validation_split", validation_split,
      "fraction of the samples held out for validation (same split every run; 0 = no validation)");
    v.check(dataset == DatasetKind::synthetic || !path.empty(), "path", "is required for dataset '", dataset, "'");
    v.check(!caption_column.empty(), "caption_column", "must not be empty");
    v.check(synthetic_size >= 1, "synthetic_size", "must be >= 1, got ", synthetic_size);
    v.check(synthetic_image_size == 0 || synthetic_image_size >= 8, "synthetic_image_size",
            "must be 0 or >= 8, got ", synthetic_image_size);
    v.check(resolution >= 1, "resolution", "must be >= 1, got ", resolution);
    v.check(caption_dropout >= 0 && caption_dropout <= 1, "caption_dropout", "must be in [0, 1], got ",
            caption_dropout);
    v.check(keep_tokens >= 0, "keep_tokens", "must be >= 0, got ", keep_tokens);
    v.check(batch_size >= 1, "batch_size", "must be >= 1, got ", batch_size);
    v.check(num_workers >= 0, "num_workers", "must be >= 0, got ", num_workers);
    v.check(prefetch >= 1, "prefetch", "must be >= 1, got ", prefetch);
    v.check(validation_split >= 0 && validation_split <= 0.5, "validation_split", "must be in [0, 0.5], got ",
            validation_split);
    v.check(max_image_pixels >= 1, "max_image_pixels", "must be >= 1, got ", max_image_pixels);
  }
};

/// The dataset `config` describes (ImageFolderDataset, CaptionFolderDataset or SyntheticShapesDataset with
/// seed = config.seed). Throws what their constructors throw.
std::shared_ptr<const Dataset> make_dataset(const DataConfig& config);

/// The loader options `config` describes, for `rank` of `world_size`.
DataLoaderOptions make_loader_options(const DataConfig& config, int rank = 0, int world_size = 1);

/// Options of the validation loader: those of make_loader_options without the randomness of training (no
/// shuffle, center crop, no random flip, no caption dropout or tag shuffling), keeping the last incomplete batch,
/// and no worker threads (the Trainer builds validation batches on demand).
DataLoaderOptions make_validation_loader_options(const DataConfig& config, int rank = 0, int world_size = 1);

}  // namespace zerodiff::data
