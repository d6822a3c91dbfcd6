#include "ConfigJson.h"

#include "zerodiff/core/Error.h"

namespace zerodiff::models::detail {

ConfigJsonReader::ConfigJsonReader(const nlohmann::json& config, std::string model)
    : config_(config), model_(std::move(model)) {
  if (!config_.is_object()) {
    throw ConfigError(str(model_, " config: expected a JSON object, got ", config_.dump()));
  }
  auto it = config_.find("_class_name");
  if (it != config_.end() && !it->is_null()) {
    if (!it->is_string() || it->get<std::string>() != model_) {
      throw ConfigError(str(model_, " config: key '_class_name' must be \"", model_, "\", got ", it->dump()));
    }
  }
}

bool ConfigJsonReader::has(const std::string& key) const {
  auto it = config_.find(key);
  return it != config_.end() && !it->is_null();
}

const nlohmann::json* ConfigJsonReader::find(const std::string& key) {
  declared_.insert(key);
  auto it = config_.find(key);
  if (it == config_.end() || it->is_null()) return nullptr;
  return &*it;
}

void config_key_error(const std::string& model, const std::string& key, const std::string& message) {
  throw ConfigError(str(model, " config: key '", key, "' ", message));
}

void config_key_unsupported(const std::string& model, const std::string& key, const std::string& message) {
  throw NotImplementedError(str(model, " config: key '", key, "' ", message));
}

void ConfigJsonReader::fail(const std::string& key, const std::string& message) const {
  config_key_error(model_, key, message);
}

void ConfigJsonReader::unsupported(const std::string& key, const std::string& message) const {
  config_key_unsupported(model_, key, message);
}

void ConfigJsonReader::type_error(const std::string& key, const char* expected,
                                  const nlohmann::json& got) const {
  fail(key, str("expects ", expected, ", got ", got.dump()));
}

int64_t ConfigJsonReader::get_int(const std::string& key, int64_t fallback) {
  const nlohmann::json* v = find(key);
  if (!v) return fallback;
  if (!v->is_number_integer()) type_error(key, "an integer", *v);
  return v->get<int64_t>();
}

double ConfigJsonReader::get_double(const std::string& key, double fallback) {
  const nlohmann::json* v = find(key);
  if (!v) return fallback;
  if (!v->is_number()) type_error(key, "a number", *v);
  return v->get<double>();
}

bool ConfigJsonReader::get_bool(const std::string& key, bool fallback) {
  const nlohmann::json* v = find(key);
  if (!v) return fallback;
  if (!v->is_boolean()) type_error(key, "true or false", *v);
  return v->get<bool>();
}

std::string ConfigJsonReader::get_string(const std::string& key, const std::string& fallback) {
  const nlohmann::json* v = find(key);
  if (!v) return fallback;
  if (!v->is_string()) type_error(key, "a string", *v);
  return v->get<std::string>();
}

std::optional<double> ConfigJsonReader::get_optional_double(const std::string& key) {
  const nlohmann::json* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_number()) type_error(key, "a number or null", *v);
  return v->get<double>();
}

std::optional<std::vector<double>> ConfigJsonReader::get_optional_double_list(const std::string& key) {
  const nlohmann::json* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_array()) type_error(key, "a list of numbers or null", *v);
  std::vector<double> out;
  for (const auto& e : *v) {
    if (!e.is_number()) type_error(key, "a list of numbers or null", *v);
    out.push_back(e.get<double>());
  }
  return out;
}

std::vector<int64_t> ConfigJsonReader::get_int_or_int_list(const std::string& key,
                                                           const std::vector<int64_t>& fallback) {
  const nlohmann::json* v = find(key);
  if (!v) return fallback;
  if (v->is_number_integer()) return {v->get<int64_t>()};
  if (!v->is_array() || v->empty()) type_error(key, "an integer or a list of integers", *v);
  std::vector<int64_t> out;
  for (const auto& e : *v) {
    if (!e.is_number_integer()) type_error(key, "an integer or a list of integers", *v);
    out.push_back(e.get<int64_t>());
  }
  return out;
}

std::vector<int64_t> ConfigJsonReader::get_int_list(const std::string& key,
                                                    const std::vector<int64_t>& fallback) {
  const nlohmann::json* v = find(key);
  if (!v) return fallback;
  if (!v->is_array() || v->empty()) type_error(key, "a non-empty list of integers", *v);
  std::vector<int64_t> out;
  for (const auto& e : *v) {
    if (!e.is_number_integer()) type_error(key, "a non-empty list of integers", *v);
    out.push_back(e.get<int64_t>());
  }
  return out;
}

std::vector<std::string> ConfigJsonReader::get_string_list(const std::string& key,
                                                           const std::vector<std::string>& fallback) {
  const nlohmann::json* v = find(key);
  if (!v) return fallback;
  if (!v->is_array() || v->empty()) type_error(key, "a non-empty list of strings", *v);
  std::vector<std::string> out;
  for (const auto& e : *v) {
    if (!e.is_string()) type_error(key, "a non-empty list of strings", *v);
    out.push_back(e.get<std::string>());
  }
  return out;
}

std::vector<bool> ConfigJsonReader::get_bool_or_bool_list(const std::string& key, bool fallback) {
  const nlohmann::json* v = find(key);
  if (!v) return {fallback};
  if (v->is_boolean()) return {v->get<bool>()};
  if (!v->is_array() || v->empty()) type_error(key, "true, false or a list of them", *v);
  std::vector<bool> out;
  for (const auto& e : *v) {
    if (!e.is_boolean()) type_error(key, "true, false or a list of them", *v);
    out.push_back(e.get<bool>());
  }
  return out;
}

std::string ConfigJsonReader::get_choice(const std::string& key, const std::vector<std::string>& supported,
                                         const std::string& fallback) {
  const nlohmann::json* v = find(key);
  if (!v) return fallback;
  if (!v->is_string()) type_error(key, "a string", *v);
  const std::string value = v->get<std::string>();
  for (const auto& s : supported) {
    if (s == value) return value;
  }
  std::string list;
  for (const auto& s : supported) list += (list.empty() ? "" : ", ") + ("\"" + s + "\"");
  unsupported(key, str("= ", v->dump(), " is not supported by zerodiff (supported: ", list, ")"));
}

void ConfigJsonReader::require_default(const std::string& key, const nlohmann::json& default_value,
                                       const std::string& why) {
  declared_.insert(key);
  auto it = config_.find(key);
  if (it == config_.end()) return;
  if (*it == default_value) return;
  unsupported(key, str("= ", it->dump(), " is not supported by zerodiff (supported: ", default_value.dump(), ")",
                       why.empty() ? "" : "; ", why));
}

nlohmann::json ConfigJsonReader::get_raw(const std::string& key, const nlohmann::json& fallback) {
  declared_.insert(key);
  auto it = config_.find(key);
  return it == config_.end() ? fallback : *it;
}

void ConfigJsonReader::finish() const {
  for (auto it = config_.begin(); it != config_.end(); ++it) {
    const std::string& key = it.key();
    if (!key.empty() && key[0] == '_') continue;
    if (declared_.count(key)) continue;
    throw NotImplementedError(
        str(model_, " config: unknown key '", key, "' (= ", it.value().dump(), ") is not supported by zerodiff"));
  }
}

nlohmann::json int_or_list(const std::vector<int64_t>& values) {
  if (values.size() == 1) return values[0];
  return nlohmann::json(values);
}

}  // namespace zerodiff::models::detail
