// zerodiff/core/Enum.h — one name table per mode.
//
// A mode (strategy, precision, placement policy, attention backend ...) is an enum class. Its names live in one
// table, found by argument-dependent lookup, next to the enum:
//
//   namespace zerodiff::parallel {
//   enum class StrategyKind { single, ddp, zero1, zero2, zero3, gemini };
//   inline constexpr EnumName<StrategyKind> kStrategyNames[] = {{StrategyKind::single, "single"}, ...};
//   constexpr std::span<const EnumName<StrategyKind>> enum_names(StrategyKind) { return kStrategyNames; }
//   }
//
// The same table serves the config reader (config::Reader reads an enum field by it and rejects other words with
// "must be one of single, ddp, ...", config::Documenter lists it in docs/configuration.md), error messages
// (enum_list), logs (name_of; zerodiff::str prints a named enum by its name) and the command-line flags of the binaries (parse_enum). Lower layers take the enum
// and never compare mode strings. A table may list extra spellings after a value's first name (aliases: accepted
// when parsing, never printed).
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace zerodiff {

/// One entry of a mode's name table: the value and its name as users write it (YAML, flags, logs).
template <class E>
struct EnumName {
  E value;
  std::string_view name;
};

/// An enum with a name table: `enum_names(E{})` found by argument-dependent lookup.
template <class E>
concept NamedEnum = std::is_enum_v<E> && requires(E e) {
  { enum_names(e) } -> std::convertible_to<std::span<const EnumName<E>>>;
};

/// The name of `value` (its first entry); "<invalid>" for a value outside the table (a bad cast).
template <NamedEnum E>
std::string_view name_of(E value) {
  for (const auto& entry : enum_names(E{})) {
    if (entry.value == value) return entry.name;
  }
  return "<invalid>";
}

/// The value named `text` (exact, case-sensitive; aliases included); nullopt for any other word.
template <NamedEnum E>
std::optional<E> lookup_enum(std::string_view text) {
  for (const auto& entry : enum_names(E{})) {
    if (entry.name == text) return entry.value;
  }
  return std::nullopt;
}

/// Every value's name, once per value, in table order (aliases left out): what a user may write.
template <NamedEnum E>
std::vector<std::string> enum_choices() {
  std::vector<std::string> out;
  const auto table = enum_names(E{});
  for (size_t i = 0; i < table.size(); ++i) {
    bool first = true;
    for (size_t j = 0; j < i; ++j) first = first && table[j].value != table[i].value;
    if (first) out.emplace_back(table[i].name);
  }
  return out;
}

/// The names of `values`, in their order.
template <NamedEnum E>
std::vector<std::string> names_of(std::span<const E> values) {
  std::vector<std::string> out;
  for (E value : values) out.emplace_back(name_of(value));
  return out;
}

/// enum_choices joined by `separator`: "single, ddp, zero1, zero2, zero3, gemini".
template <NamedEnum E>
std::string enum_list(std::string_view separator = ", ") {
  std::string out;
  for (const auto& name : enum_choices<E>()) out += (out.empty() ? "" : std::string(separator)) + name;
  return out;
}

/// Throws ConfigError "<what> must be one of <choices>; got '<text>'" (parse_enum's error; src/core/Config.cpp).
[[noreturn]] void throw_unknown_enum_name(std::string_view what, std::string_view text, const std::string& choices);

/// The value named `text`; throws ConfigError "<what> must be one of a, b, c; got 'text'" for any other word.
/// `what` names the option at fault as the caller knows it ("--attention", "strategy").
template <NamedEnum E>
E parse_enum(std::string_view text, std::string_view what) {
  if (auto value = lookup_enum<E>(text)) return *value;
  throw_unknown_enum_name(what, text, enum_list<E>());
}

}  // namespace zerodiff
