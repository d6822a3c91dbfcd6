#include "zerodiff/memory/ChunkManager.h"

#include <algorithm>
#include <optional>
#include <set>

#include "zerodiff/core/Error.h"

namespace zerodiff::memory {

int64_t packing_padding(const std::vector<int64_t>& numels, int64_t chunk_numel) {
  int64_t padding = 0, used = 0;
  bool open = false;
  for (int64_t n : numels) {
    if (!open || used + n > chunk_numel) {
      if (open) padding += chunk_numel - used;
      used = 0;
      open = true;
    }
    used += n;
  }
  if (open) padding += chunk_numel - used;
  return padding;
}

int64_t search_chunk_numel(const std::vector<int64_t>& numels, int world_size, int64_t search_range, int64_t step) {
  ZD_CHECK(!numels.empty(), "chunk size search: no parameters");
  ZD_CHECK(step >= 1 && search_range >= 0 && world_size >= 1, "chunk size search: step ", step, ", range ",
           search_range);
  const int64_t n = world_size;
  const int64_t largest = *std::max_element(numels.begin(), numels.end());
  const int64_t lo = (largest + n - 1) / n * n;
  int64_t best = lo, best_padding = packing_padding(numels, lo);
  for (int64_t size = lo + step; size <= lo + search_range; size += step) {
    const int64_t c = (size + n - 1) / n * n;
    const int64_t p = packing_padding(numels, c);
    if (p < best_padding) {
      best = c;
      best_padding = p;
    }
  }
  return best;
}

ChunkManager::ChunkManager(dist::ProcessGroup& group, const std::vector<UnitParams>& units, int64_t chunk_numel,
                           int64_t keep_gathered_numel)
    : group_(group) {
  // Each tensor once, in unit order; a small unit's new parameters are marked to stay gathered.
  std::map<const void*, size_t> index_of;
  std::vector<std::vector<size_t>> unit_params(units.size());
  std::vector<uint8_t> kept;
  for (size_t u = 0; u < units.size(); ++u) {
    unit_names_.push_back(units[u].name);
    const size_t first_new = params_.size();
    int64_t new_numel = 0;
    for (const auto& [name, p] : units[u].params) {
      auto [it, fresh] = index_of.emplace(p.unsafeGetTensorImpl(), params_.size());
      if (fresh) {
        params_.emplace_back(name, p);
        new_numel += p.numel();
      }
      unit_params[u].push_back(it->second);
    }
    kept.resize(params_.size(), new_numel > 0 && new_numel < keep_gathered_numel ? 1 : 0);
    (void)first_new;
  }
  ZD_CHECK(!params_.empty(), "ChunkManager: no parameters to shard");
  std::vector<int64_t> numels;
  for (const auto& [name, p] : params_) {
    ZD_CHECK(p.is_contiguous(), "ChunkManager: parameter '", name, "' is not contiguous");
    numels.push_back(p.numel());
    numel_ += p.numel();
  }
  const int64_t n = group.size();
  if (chunk_numel <= 0) {
    chunk_numel_ = search_chunk_numel(numels, group.size(), int64_t{32} << 20, int64_t{1} << 20);
  } else {
    chunk_numel_ = (chunk_numel + n - 1) / n * n;
  }
  // Greedy packing in registration order; a new chunk also starts where the dtype changes. A parameter
  // larger than the chunk size (e.g. a text encoder's token embedding) gets a chunk of its own size.
  // Kept-gathered parameters pack into their own chunks (the last open one of each kind is tracked).
  std::optional<size_t> open[2];
  locations_.resize(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& p = params_[i].second;
    const bool keep = kept[i] != 0;
    std::optional<size_t>& current = open[keep ? 1 : 0];
    if (p.numel() > chunk_numel_) {
      chunks_.push_back(std::make_unique<Chunk>(p.numel(), p.scalar_type(), p.device(), group.rank(), group.size(), keep));
      current.reset();
      locations_[i] = {chunks_.size() - 1, chunks_.back()->append(params_[i].first, p)};
      continue;
    }
    if (!current || !chunks_[*current]->fits(p.numel()) || chunks_[*current]->dtype() != p.scalar_type()) {
      chunks_.push_back(
          std::make_unique<Chunk>(chunk_numel_, p.scalar_type(), p.device(), group.rank(), group.size(), keep));
      current = chunks_.size() - 1;
    }
    locations_[i] = {*current, chunks_[*current]->append(params_[i].first, p)};
  }
  for (auto& c : chunks_) c->close();
  for (size_t u = 0; u < units.size(); ++u) {
    std::set<size_t> cs;
    for (size_t i : unit_params[u]) cs.insert(locations_[i].first);
    unit_chunks_.emplace_back(cs.begin(), cs.end());
  }
  peak_ = resident_bytes();
}

int64_t ChunkManager::padding() const {
  int64_t total = 0;
  for (const auto& c : chunks_) total += c->chunk_numel() - c->used_numel();
  return total;
}

int64_t ChunkManager::shard_bytes() const {
  int64_t total = 0;
  for (const auto& c : chunks_) {
    total += c->keep_gathered() ? c->chunk_bytes() : c->shard_bytes();
  }
  return total;
}

int64_t ChunkManager::resident_bytes() const {
  int64_t total = 0;
  for (const auto& c : chunks_) total += c->resident_bytes();
  return total;
}

void ChunkManager::gather_all() {
  for (auto& c : chunks_) c->gather(group_, /*async=*/true);
  for (auto& c : chunks_) c->wait();
  note_resident();
}

void ChunkManager::release_all() {
  for (auto& c : chunks_) c->release();
}

}  // namespace zerodiff::memory
