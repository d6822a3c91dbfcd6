// make_dataset / make_loader_options: the `data:` config section into a dataset and loader options.
#include "zerodiff/data/DataConfig.h"

#include "zerodiff/core/Error.h"
#include "zerodiff/data/CaptionFolderDataset.h"
#include "zerodiff/data/ImageFolderDataset.h"
#include "zerodiff/data/SyntheticShapesDataset.h"

namespace zerodiff::data {

std::shared_ptr<const Dataset> make_dataset(const DataConfig& config) {
  switch (config.dataset) {
    case DatasetKind::synthetic:
      return std::make_shared<SyntheticShapesDataset>(SyntheticShapesOptions{
          config.synthetic_size, config.synthetic_image_size > 0 ? config.synthetic_image_size : config.resolution,
          static_cast<uint64_t>(config.seed)});
    case DatasetKind::captions:
      return std::make_shared<CaptionFolderDataset>(
          CaptionFolderOptions{config.path, config.caption_extension, config.max_image_pixels});
    case DatasetKind::imagefolder:
      return std::make_shared<ImageFolderDataset>(
          ImageFolderOptions{config.path, config.caption_column, config.max_image_pixels});
  }
  ZD_THROW("make_dataset: invalid DatasetKind ", static_cast<int>(config.dataset));
}

DataLoaderOptions make_loader_options(const DataConfig& config, int rank, int world_size) {
  DataLoaderOptions options;
  options.batch_size = config.batch_size;
  options.num_workers = config.num_workers;
  options.prefetch = config.prefetch;
  options.shuffle = config.shuffle;
  options.seed = static_cast<uint64_t>(config.seed);
  options.drop_last = config.drop_last;
  options.rank = rank;
  options.world_size = world_size;
  options.image = ImageTransformOptions{config.resolution, config.center_crop, config.random_flip};
  options.caption = CaptionTransformOptions{config.caption_dropout, config.shuffle_tags, config.keep_tokens};
  return options;
}

DataLoaderOptions make_validation_loader_options(const DataConfig& config, int rank, int world_size) {
  DataLoaderOptions options = make_loader_options(config, rank, world_size);
  options.shuffle = false;
  options.drop_last = false;
  options.num_workers = 0;  // the Trainer builds validation batches itself (build_batch): no prefetching threads
  options.image.center_crop = true;
  options.image.random_flip = false;
  options.caption = CaptionTransformOptions{};
  return options;
}

}  // namespace zerodiff::data
