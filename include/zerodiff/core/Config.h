// zerodiff/core/Config.h — YAML configs into typed structs.
//
// A config struct lists its keys once, in a `visit` member template; the same list drives loading
// (config::Reader), and later documentation and dumping:
//
//   struct OptimizerConfig {
//     std::string name = "adamw";   // defaults are the member initialisers
//     double lr = 1e-4;
//     std::vector<double> betas{0.9, 0.999};
//     template <class V> void visit(V& v) {
//       v.choice("name", name, {"adamw", "adam"}, "Optimizer");
//       v("lr", lr, "Peak learning rate");
//       v("betas", betas, "Adam (beta1, beta2)");
//       v.check(lr > 0, "lr", "must be > 0, got ", lr);
//     }
//   };
//   auto cfg = config::load_file<TrainConfig>("configs/demo/train.yaml", {"optimizer.lr=3e-4"});
//
// Supported field types: bool, int, int64_t, double, float, std::string, std::optional<T> of those,
// std::vector of scalars, nested structs with `visit`, std::vector of such structs, and modes: an enum with a
// name table (core/Enum.h) reads as one of its names ("key 'trainer.strategy' must be one of single, ddp, ...").
//
// Errors are ConfigError with exact, user-facing texts (tests assert them):
//   train.yaml:3:5: unknown key 'optimizer.lerning_rate'; did you mean 'lr'?
//   train.yaml:4:9: key 'trainer.max_steps' expects an integer, got 'ten'
//   train.yaml:2:1: missing required key 'model.pretrained'
//   train.yaml:7:3: invalid YAML: end of map not found
//   override 'optimizer.lr=abc': key 'optimizer.lr' expects a number, got 'abc'
// Lines and columns are 1-based; a missing key is reported at the mapping that should hold it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "zerodiff/core/Enum.h"
#include "zerodiff/core/Error.h"

namespace zerodiff::config {

namespace detail {
template <class T, class = void>
struct is_visitable : std::false_type {};
struct NullVisitor;
template <class T>
struct is_visitable<T, std::void_t<decltype(&T::template visit<NullVisitor>)>> : std::true_type {};
template <class T>
struct is_vector : std::false_type {};
template <class T, class A>
struct is_vector<std::vector<T, A>> : std::true_type {};
template <class T>
struct is_list_of_structs : std::false_type {};
template <class T, class A>
struct is_list_of_structs<std::vector<T, A>> : is_visitable<T> {};
template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};
template <class T>
struct is_optional_enum : std::false_type {};
template <class T>
struct is_optional_enum<std::optional<T>> : std::is_enum<T> {};
struct Source;  // shared parse state: file name, overrides (pimpl over yaml-cpp)
struct NodeRef;  // a YAML node plus its key path
}  // namespace detail

/// Reads one YAML mapping into a struct through the struct's `visit`. Created by load_file /
/// load_string; structs only call its operator(), required(), choice() and check().
class Reader {
 public:
  Reader(std::shared_ptr<detail::Source> source, std::shared_ptr<detail::NodeRef> node);
  ~Reader();
  Reader(Reader&&) noexcept;
  Reader& operator=(Reader&&) noexcept;

  /// Optional key: leaves `value` (its default) untouched when absent.
  template <class T>
  void operator()(std::string_view key, T& value, std::string_view doc = {}) {
    field(key, value, /*required=*/false);
  }
  /// Required key: throws ConfigError "missing required key '<path>'" when absent.
  template <class T>
  void required(std::string_view key, T& value, std::string_view doc = {}) {
    field(key, value, /*required=*/true);
  }
  /// String key restricted to `choices`; throws "key 'a.b' must be one of x, y, z; got 'w'".
  void choice(std::string_view key, std::string& value, const std::vector<std::string>& choices,
              std::string_view doc = {}, bool required = false);
  /// Mode key restricted to some of its enum's values (their names from the enum's table, core/Enum.h).
  template <NamedEnum E>
  void choice(std::string_view key, E& value, std::span<const E> allowed, std::string_view doc = {},
              bool required = false) {
    std::string text(name_of(value));
    choice(key, text, names_of(allowed), doc, required);
    if (auto parsed = lookup_enum<E>(text)) value = *parsed;
  }
  /// Optional mode key restricted to some of its enum's values; null or "" leaves it empty (none).
  template <NamedEnum E>
  void choice(std::string_view key, std::optional<E>& value, std::span<const E> allowed, std::string_view doc = {},
              bool required = false) {
    declare(key);
    read_optional_enum(key, value, names_of(allowed), required);
  }
  /// Semantic check after reading: throws "<loc>: key '<path>' <message>" when !ok.
  template <class... Args>
  void check(bool ok, std::string_view key, const Args&... message) {
    if (!ok && !is_missing(key)) fail_value(key, zerodiff::str(message...));
  }
  /// Rejects keys present in the YAML mapping that `visit` did not declare (with a suggestion), then
  /// reports missing required keys (recorded while visiting). All problems of the mapping in one error.
  void finish();

  /// Dotted path of this mapping ("" for the document root).
  const std::string& path() const;

 private:
  template <class T>
  void field(std::string_view key, T& value, bool required) {
    declare(key);
    if constexpr (detail::is_visitable<T>::value) {
      std::optional<Reader> child = child_map(key, required);
      if (!child) return;
      value.visit(*child);
      child->finish();
    } else if constexpr (detail::is_list_of_structs<T>::value) {
      std::optional<std::vector<Reader>> items = child_list(key, required);
      if (!items) return;
      value.clear();
      for (Reader& item : *items) {
        typename T::value_type element{};
        element.visit(item);
        item.finish();
        value.push_back(std::move(element));
      }
    } else if constexpr (std::is_enum_v<T>) {
      std::string text(name_of(value));
      choice(key, text, enum_choices<T>(), {}, required);
      if (auto parsed = lookup_enum<T>(text)) value = *parsed;
    } else if constexpr (detail::is_optional_enum<T>::value) {
      read_optional_enum(key, value, enum_choices<typename T::value_type>(), required);
    } else {
      read(key, value, required);
    }
  }

  // An optional mode: null or "" is none; other words must be in `choices`.
  template <class E>
  void read_optional_enum(std::string_view key, std::optional<E>& value, const std::vector<std::string>& choices,
                          bool required) {
    std::optional<std::string> text;
    if (value) text = std::string(name_of(*value));
    read(key, text, required);
    if (!text || text->empty()) {
      value.reset();
      return;
    }
    check_choice(key, *text, choices);
    value = lookup_enum<E>(*text);
  }

  void declare(std::string_view key);
  bool is_missing(std::string_view key) const;  // a required key already reported missing
  void note_missing(std::string_view key);       // record a missing required key for finish()
  std::optional<Reader> child_map(std::string_view key, bool required);
  std::optional<std::vector<Reader>> child_list(std::string_view key, bool required);
  [[noreturn]] void fail_value(std::string_view key, const std::string& message);
  /// Throws "key '<path>' must be one of a, b; got 'w' (did you mean 'v'?)" unless `value` is in `choices`.
  void check_choice(std::string_view key, const std::string& value, const std::vector<std::string>& choices);

  void read(std::string_view key, bool& value, bool required);
  void read(std::string_view key, int& value, bool required);
  void read(std::string_view key, int64_t& value, bool required);
  void read(std::string_view key, double& value, bool required);
  void read(std::string_view key, float& value, bool required);
  void read(std::string_view key, std::string& value, bool required);
  void read(std::string_view key, std::optional<bool>& value, bool required);
  void read(std::string_view key, std::optional<int>& value, bool required);
  void read(std::string_view key, std::optional<int64_t>& value, bool required);
  void read(std::string_view key, std::optional<double>& value, bool required);
  void read(std::string_view key, std::optional<std::string>& value, bool required);
  void read(std::string_view key, std::vector<bool>& value, bool required);
  void read(std::string_view key, std::vector<int>& value, bool required);
  void read(std::string_view key, std::vector<int64_t>& value, bool required);
  void read(std::string_view key, std::vector<double>& value, bool required);
  void read(std::string_view key, std::vector<std::string>& value, bool required);

  std::shared_ptr<detail::Source> source_;
  std::shared_ptr<detail::NodeRef> node_;
  std::vector<std::string> declared_;
  std::vector<std::string> pending_;  // missing required keys, reported by finish() after unknown keys
};

/// Parses YAML text and applies `overrides` ("a.b.c=value", value parsed as YAML); returns the
/// reader of the root mapping. `name` labels error messages (a file name or "<string>").
/// Throws ConfigError on malformed YAML, a root that is not a mapping, or a malformed override.
Reader open_string(std::string_view yaml, std::string_view name,
                   const std::vector<std::string>& overrides = {});

/// Like open_string for the file at `path`. Throws ConfigError when the file cannot be read.
Reader open_file(const std::string& path, const std::vector<std::string>& overrides = {});

/// Loads a config struct T (with a `visit` member template) from YAML text; see the file comment.
template <class T>
T load_string(std::string_view yaml, std::string_view name = "<string>",
              const std::vector<std::string>& overrides = {}) {
  T value{};
  Reader reader = open_string(yaml, name, overrides);
  value.visit(reader);
  reader.finish();
  return value;
}

/// Loads a config struct T from the YAML file at `path`, then applies `overrides`.
template <class T>
T load_file(const std::string& path, const std::vector<std::string>& overrides = {}) {
  T value{};
  Reader reader = open_file(path, overrides);
  value.visit(reader);
  reader.finish();
  return value;
}

/// Levenshtein distance, used for "did you mean" suggestions.
size_t edit_distance(std::string_view a, std::string_view b);

/// The candidate closest to `word` when it is plausibly a typo of it (distance <= max(2, |word|/3)),
/// else "".
std::string closest_match(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace zerodiff::config

namespace zerodiff::config {

/// One documented key of a config struct.
struct KeyDoc {
  std::string path;           ///< dotted key path ("trainer.optimizer.lr"; list items as "prompts[]")
  std::string type;           ///< "integer", "number", "boolean", "string", "list of ...", "mapping", "one of a | b"
  std::string default_value;  ///< YAML text of the default ("" for required keys)
  bool required = false;
  std::string doc;            ///< the description given in `visit`
};

/// Visitor that lists every key of a config struct with its type, default and description — the same
/// `visit` that loads the struct, so the reference cannot drift from the code.
class Documenter {
 public:
  explicit Documenter(std::string prefix = {}) : prefix_(std::move(prefix)) {}

  template <class T>
  void operator()(std::string_view key, T& value, std::string_view doc = {}) {
    add(key, value, doc, false);
  }
  template <class T>
  void required(std::string_view key, T& value, std::string_view doc = {}) {
    add(key, value, doc, true);
  }
  template <NamedEnum E>
  void choice(std::string_view key, E& value, std::span<const E> allowed, std::string_view doc = {},
              bool required = false) {
    std::string text(name_of(value));
    choice(key, text, names_of(allowed), doc, required);
  }
  template <NamedEnum E>
  void choice(std::string_view key, std::optional<E>& value, std::span<const E> allowed, std::string_view doc = {},
              bool required = false) {
    std::string type = "one of ";
    for (const auto& name : names_of(allowed)) type += (type.size() > 7 ? " | " : "") + name;
    keys_.push_back({join(key), type + " or null", value ? std::string(name_of(*value)) : "null", required,
                     std::string(doc)});
  }
  void choice(std::string_view key, std::string& value, const std::vector<std::string>& choices,
              std::string_view doc = {}, bool required = false) {
    std::string type = "one of ";
    for (size_t i = 0; i < choices.size(); ++i) type += (i ? " | " : "") + choices[i];
    keys_.push_back({join(key), type, required ? "" : value, required, std::string(doc)});
  }
  template <class... Args>
  void check(bool, std::string_view, const Args&...) {}

  const std::vector<KeyDoc>& keys() const { return keys_; }

 private:
  std::string join(std::string_view key) const {
    return prefix_.empty() ? std::string(key) : prefix_ + "." + std::string(key);
  }
  template <class T>
  static std::string scalar_type() {
    if constexpr (std::is_same_v<T, bool>) return "boolean";
    else if constexpr (std::is_integral_v<T>) return "integer";
    else if constexpr (std::is_floating_point_v<T>) return "number";
    else return "string";
  }
  template <class T>
  static std::string text(const T& v) {
    if constexpr (std::is_same_v<T, bool>) return v ? "true" : "false";
    else if constexpr (std::is_same_v<T, std::string>) return v.empty() ? "\"\"" : v;
    else return zerodiff::str(v);
  }
  template <class T>
  void add(std::string_view key, T& value, std::string_view doc, bool required) {
    if constexpr (detail::is_visitable<T>::value) {
      keys_.push_back({join(key), "mapping", "", required, std::string(doc)});
      Documenter child(join(key));
      value.visit(child);
      keys_.insert(keys_.end(), child.keys_.begin(), child.keys_.end());
    } else if constexpr (detail::is_list_of_structs<T>::value) {
      keys_.push_back({join(key), "list of mappings", "[]", required, std::string(doc)});
      typename T::value_type item{};
      Documenter child(join(key) + "[]");
      item.visit(child);
      keys_.insert(keys_.end(), child.keys_.begin(), child.keys_.end());
    } else if constexpr (std::is_enum_v<T>) {
      std::string text(name_of(value));
      choice(key, text, enum_choices<T>(), doc, required);
    } else if constexpr (detail::is_optional_enum<T>::value) {
      std::string type = "one of ";
      for (const auto& name : enum_choices<typename T::value_type>()) type += (type.size() > 7 ? " | " : "") + name;
      keys_.push_back({join(key), type + " or null", value ? std::string(name_of(*value)) : "null", required,
                       std::string(doc)});
    } else if constexpr (detail::is_vector<T>::value) {
      std::string def = "[";
      for (size_t i = 0; i < value.size(); ++i) def += (i ? ", " : "") + text(static_cast<typename T::value_type>(value[i]));
      keys_.push_back({join(key), "list of " + scalar_type<typename T::value_type>(), def + "]", required, std::string(doc)});
    } else if constexpr (detail::is_optional<T>::value) {
      keys_.push_back({join(key), scalar_type<typename T::value_type>() + " or null",
                       value ? text(*value) : "null", required, std::string(doc)});
    } else {
      keys_.push_back({join(key), scalar_type<T>(), required ? "" : text(value), required, std::string(doc)});
    }
  }

  std::string prefix_;
  std::vector<KeyDoc> keys_;
};

/// Every key of config struct T, in declaration order.
template <class T>
std::vector<KeyDoc> document() {
  T value{};
  Documenter d;
  value.visit(d);
  return d.keys();
}

/// The keys as a Markdown table (| key | type | default | description |).
std::string markdown_table(const std::vector<KeyDoc>& keys);

}  // namespace zerodiff::config
