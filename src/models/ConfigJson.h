// Private helper: reads a diffusers config.json object into typed values.
//
// Design rules: every key a model knows is declared exactly once through one of the getters (which
// also marks it as seen); finish() then rejects every key that was not declared, so no config field
// is silently ignored. Keys starting with '_' ("_class_name", "_diffusers_version", "_name_or_path")
// are metadata and always accepted. Messages name the model class and the key:
//   UNet2DConditionModel config: key 'attention_head_dim' expects an integer or a list of integers, got "x"
//   UNet2DConditionModel config: key 'class_embed_type' = "timestep" is not supported by zerodiff (supported: null)
//   UNet2DConditionModel config: unknown key 'foo' (= 3) is not supported by zerodiff
// Wrong JSON types are ConfigError; valid but unsupported values and unknown keys are NotImplementedError.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace zerodiff::models::detail {

class ConfigJsonReader {
 public:
  /// `model` names the diffusers class in messages ("UNet2DConditionModel"). Throws ConfigError when
  /// `config` is not an object or its "_class_name" (when present) is not `model`.
  ConfigJsonReader(const nlohmann::json& config, std::string model);

  /// True when `key` is present with a non-null value (does not declare the key).
  bool has(const std::string& key) const;

  int64_t get_int(const std::string& key, int64_t fallback);
  double get_double(const std::string& key, double fallback);
  bool get_bool(const std::string& key, bool fallback);
  std::string get_string(const std::string& key, const std::string& fallback);
  /// null or absent -> nullopt.
  std::optional<double> get_optional_double(const std::string& key);
  std::optional<std::vector<double>> get_optional_double_list(const std::string& key);
  /// An integer or a list of integers; an integer is returned as a 1-element vector.
  std::vector<int64_t> get_int_or_int_list(const std::string& key, const std::vector<int64_t>& fallback);
  std::vector<int64_t> get_int_list(const std::string& key, const std::vector<int64_t>& fallback);
  std::vector<std::string> get_string_list(const std::string& key, const std::vector<std::string>& fallback);
  /// A bool or a list of bools; a bool is returned as a 1-element vector.
  std::vector<bool> get_bool_or_bool_list(const std::string& key, bool fallback);
  /// A string restricted to `supported` (absent -> fallback). A string outside the list ->
  /// NotImplementedError; any other JSON type -> ConfigError.
  std::string get_choice(const std::string& key, const std::vector<std::string>& supported,
                         const std::string& fallback);

  /// Declares a field zerodiff does not implement: absent, or equal to `default_value` (numbers compare
  /// by value, so 1 == 1.0), is accepted; anything else throws NotImplementedError naming the key.
  void require_default(const std::string& key, const nlohmann::json& default_value,
                       const std::string& why = {});

  /// Declares a known key that carries no behaviour for zerodiff (e.g. "sample_size"): any value.
  nlohmann::json get_raw(const std::string& key, const nlohmann::json& fallback);

  /// Throws ConfigError "<model> config: key '<key>' <message>".
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;
  /// Throws NotImplementedError "<model> config: key '<key>' <message>".
  [[noreturn]] void unsupported(const std::string& key, const std::string& message) const;

  /// Rejects every non-metadata key that no getter declared (NotImplementedError naming it).
  void finish() const;

 private:
  const nlohmann::json* find(const std::string& key);
  [[noreturn]] void type_error(const std::string& key, const char* expected, const nlohmann::json& got) const;

  const nlohmann::json& config_;
  std::string model_;
  std::set<std::string> declared_;
};

/// Throws ConfigError "<model> config: key '<key>' <message>" (a value of the wrong kind or out of range).
[[noreturn]] void config_key_error(const std::string& model, const std::string& key, const std::string& message);
/// Throws NotImplementedError "<model> config: key '<key>' <message>" (a valid value zerodiff does not implement).
[[noreturn]] void config_key_unsupported(const std::string& model, const std::string& key, const std::string& message);

/// `values` as JSON: an integer when it has one element, a list otherwise.
nlohmann::json int_or_list(const std::vector<int64_t>& values);

}  // namespace zerodiff::models::detail
