// LoaderState <-> JSON for checkpoints.
#include "zerodiff/data/LoaderState.h"

#include "zerodiff/core/Error.h"

namespace zerodiff::data {

nlohmann::json LoaderState::to_json() const {
  return {{"epoch", epoch},           {"batch", batch},           {"seed", seed},
          {"batch_size", batch_size}, {"world_size", world_size}, {"dataset_size", dataset_size}};
}

LoaderState LoaderState::from_json(const nlohmann::json& json) {
  ZD_CHECK(json.is_object(), "loader state: expected a JSON object, got ", json.type_name());
  auto get = [&](const char* key) -> const nlohmann::json& {
    const auto it = json.find(key);
    ZD_CHECK(it != json.end() && it->is_number_integer(), "loader state: missing or non-integer key '", key, "'");
    return *it;
  };
  LoaderState state;
  state.epoch = get("epoch").get<int64_t>();
  state.batch = get("batch").get<int64_t>();
  state.seed = get("seed").get<uint64_t>();
  state.batch_size = get("batch_size").get<int64_t>();
  state.world_size = get("world_size").get<int64_t>();
  state.dataset_size = get("dataset_size").get<int64_t>();
  return state;
}

}  // namespace zerodiff::data
