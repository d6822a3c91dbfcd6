// yaml-cpp backend of zerodiff/core/Config.h. yaml-cpp stays out of the public headers.
#include "zerodiff/core/Config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

namespace zerodiff {

void throw_unknown_enum_name(std::string_view what, std::string_view text, const std::string& choices) {
  throw ConfigError(str(what, " must be one of ", choices, "; got '", text, "'"));
}

}  // namespace zerodiff

namespace zerodiff::config {
namespace detail {

struct Source {
  std::string name;  // file name for messages
  YAML::Node root;
  // Key paths set on the command line -> the override text ("a.b=1"), for error locations.
  std::map<std::string, std::string> overrides;
};

struct NodeRef {
  YAML::Node node;   // may be undefined/null when the mapping is absent
  std::string path;  // dotted path of this node ("" for the root)
  YAML::Mark mark;   // where to report problems with this node (inherited when absent)
};

}  // namespace detail

namespace {

using detail::NodeRef;
using detail::Source;

std::string join_path(const std::string& base, std::string_view key) {
  return base.empty() ? std::string(key) : base + "." + std::string(key);
}

// True when `inner` is `outer` or lies inside it ("a.b" in "a", "a[2]" in "a").
bool path_within(const std::string& inner, const std::string& outer) {
  return inner == outer || (inner.size() > outer.size() && inner.compare(0, outer.size(), outer) == 0 &&
                            (inner[outer.size()] == '.' || inner[outer.size()] == '['));
}

// The override that set `path` or one of its ancestors, if any; else, for a mapping that is not in the file
// (`from_file` false: an override created it), the override of one of its descendants.
const std::string* override_for(const Source& src, const std::string& path, bool from_file) {
  for (const auto& [key, text] : src.overrides) {
    if (path_within(path, key)) return &text;
  }
  if (path.empty() || from_file) return nullptr;
  for (const auto& [key, text] : src.overrides) {
    if (path_within(key, path)) return &text;
  }
  return nullptr;
}

std::string location(const Source& src, const std::string& path, const YAML::Mark& mark) {
  if (const std::string* text = override_for(src, path, !mark.is_null())) return str("override '", *text, "'");
  if (mark.is_null()) return src.name;
  return str(src.name, ":", mark.line + 1, ":", mark.column + 1);
}

std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null: return "null";
    case YAML::NodeType::Scalar: return str("'", node.Scalar(), "'");
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
  }
  return "?";
}

template <class T>
const char* type_name();
template <> const char* type_name<bool>() { return "a boolean (true/false)"; }
template <> const char* type_name<int>() { return "an integer"; }
template <> const char* type_name<int64_t>() { return "an integer"; }
template <> const char* type_name<double>() { return "a number"; }
template <> const char* type_name<float>() { return "a number"; }
template <> const char* type_name<std::string>() { return "a string"; }

// Converts a scalar node to T; false when the text is not a T.
template <class T>
bool convert(const YAML::Node& node, T& out) {
  if (!node.IsScalar()) return false;
  if constexpr (std::is_same_v<T, std::string>) {
    out = node.Scalar();
    return true;
  } else if constexpr (std::is_same_v<T, bool>) {
    return YAML::convert<bool>::decode(node, out);
  } else if constexpr (std::is_same_v<T, int>) {
    int64_t wide = 0;
    if (!YAML::convert<int64_t>::decode(node, wide)) return false;
    if (wide < std::numeric_limits<int>::min() || wide > std::numeric_limits<int>::max()) return false;
    out = static_cast<int>(wide);
    return true;
  } else if constexpr (std::is_same_v<T, float>) {
    double wide = 0;
    if (!YAML::convert<double>::decode(node, wide)) return false;
    out = static_cast<float>(wide);
    return true;
  } else {
    return YAML::convert<T>::decode(node, out);
  }
}

[[noreturn]] void type_error(const Source& src, const std::string& path, const YAML::Node& node,
                             const char* expected) {
  throw ConfigError(str(location(src, path, node.Mark()), ": key '", path, "' expects ", expected,
                        ", got ", describe(node)));
}

}  // namespace

// ------------------------------------------------------------------ Reader

Reader::Reader(std::shared_ptr<detail::Source> source, std::shared_ptr<detail::NodeRef> node)
    : source_(std::move(source)), node_(std::move(node)) {}
Reader::~Reader() = default;
Reader::Reader(Reader&&) noexcept = default;
Reader& Reader::operator=(Reader&&) noexcept = default;

const std::string& Reader::path() const { return node_->path; }

void Reader::declare(std::string_view key) { declared_.emplace_back(key); }

bool Reader::is_missing(std::string_view key) const {
  const std::string needle = str("missing required key '", join_path(node_->path, key), "'");
  for (const auto& p : pending_) {
    if (p.size() >= needle.size() && p.compare(p.size() - needle.size(), needle.size(), needle) == 0) return true;
  }
  return false;
}

namespace {

// Looks up `key` in the mapping of `ref`; undefined node when absent (or when ref is absent).
// `key` may be a dotted path into nested mappings ("text_to_image.cache_latents"): cross-section checks of a
// parent struct then point at the nested key's line.
YAML::Node lookup(const NodeRef& ref, std::string_view key) {
  YAML::Node node = ref.node;
  while (true) {
    if (!node.IsDefined() || !node.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    const size_t dot = key.find('.');
    const std::string_view head = key.substr(0, dot);
    YAML::Node found(YAML::NodeType::Undefined);
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (it->first.IsScalar() && it->first.Scalar() == head) {
        found = it->second;
        break;
      }
    }
    if (dot == std::string_view::npos) return found;
    node = found;
    key = key.substr(dot + 1);
  }
}

}  // namespace

// A missing required key is recorded and reported by finish(), after unknown keys: a misspelled key then
// shows up first, with its suggestion, instead of only "missing required key".
void Reader::note_missing(std::string_view key) {
  pending_.push_back(str(location(*source_, node_->path, node_->mark), ": missing required key '",
                         join_path(node_->path, key), "'"));
}

std::optional<Reader> Reader::child_map(std::string_view key, bool required) {
  YAML::Node child = lookup(*node_, key);
  const std::string path = join_path(node_->path, key);
  auto ref = std::make_shared<NodeRef>();
  ref->path = path;
  if (!child.IsDefined() || child.IsNull()) {
    if (required) {
      note_missing(key);
      return std::nullopt;
    }
    // Absent optional section: still visited (over nothing) so that required keys inside it are
    // reported; defaults stay. Problems are reported at the enclosing mapping.
    ref->mark = node_->mark;
    return Reader(source_, ref);
  }
  if (!child.IsMap()) type_error(*source_, path, child, "a mapping");
  ref->node = child;
  ref->mark = child.Mark();
  return Reader(source_, ref);
}

std::optional<std::vector<Reader>> Reader::child_list(std::string_view key, bool required) {
  YAML::Node child = lookup(*node_, key);
  const std::string path = join_path(node_->path, key);
  if (!child.IsDefined() || child.IsNull()) {
    if (required) note_missing(key);
    return std::nullopt;
  }
  if (!child.IsSequence()) type_error(*source_, path, child, "a list of mappings");
  std::vector<Reader> items;
  for (size_t i = 0; i < child.size(); ++i) {
    YAML::Node item = child[i];
    const std::string item_path = str(path, "[", i, "]");
    if (!item.IsMap()) type_error(*source_, item_path, item, "a mapping");
    auto ref = std::make_shared<NodeRef>();
    ref->node = item;
    ref->path = item_path;
    ref->mark = item.Mark();
    items.emplace_back(source_, ref);
  }
  return items;
}

void Reader::fail_value(std::string_view key, const std::string& message) {
  YAML::Node child = lookup(*node_, key);
  const std::string path = join_path(node_->path, key);
  const YAML::Mark mark = child.IsDefined() ? child.Mark() : node_->mark;
  throw ConfigError(str(location(*source_, path, mark), ": key '", path, "' ", message));
}

namespace {

template <class T>
bool read_scalar(const Source& src, const NodeRef& ref, std::string_view key, T& value) {
  YAML::Node child = lookup(ref, key);
  const std::string path = join_path(ref.path, key);
  if (!child.IsDefined()) {
    return false;
  }
  if (!convert(child, value)) type_error(src, path, child, type_name<T>());
  return true;
}

template <class T>
bool read_optional(const Source& src, const NodeRef& ref, std::string_view key, std::optional<T>& value) {
  YAML::Node child = lookup(ref, key);
  const std::string path = join_path(ref.path, key);
  if (!child.IsDefined()) {
    return false;
  }
  if (child.IsNull()) {
    value.reset();
    return true;
  }
  T parsed{};
  if (!convert(child, parsed)) type_error(src, path, child, type_name<T>());
  value = std::move(parsed);
  return true;
}

template <class T>
bool read_list(const Source& src, const NodeRef& ref, std::string_view key, std::vector<T>& value) {
  YAML::Node child = lookup(ref, key);
  const std::string path = join_path(ref.path, key);
  if (!child.IsDefined()) {
    return false;
  }
  if (!child.IsSequence()) type_error(src, path, child, str("a list of ", type_name<T>()).c_str());
  std::vector<T> parsed;
  for (size_t i = 0; i < child.size(); ++i) {
    T element{};
    if (!convert(child[i], element)) type_error(src, str(path, "[", i, "]"), child[i], type_name<T>());
    parsed.push_back(element);
  }
  value = std::move(parsed);
  return true;
}

}  // namespace

// Each read records a missing required key instead of throwing (see note_missing).
void Reader::read(std::string_view k, bool& v, bool r) { if (!read_scalar(*source_, *node_, k, v) && r) note_missing(k); }
void Reader::read(std::string_view k, int& v, bool r) { if (!read_scalar(*source_, *node_, k, v) && r) note_missing(k); }
void Reader::read(std::string_view k, int64_t& v, bool r) { if (!read_scalar(*source_, *node_, k, v) && r) note_missing(k); }
void Reader::read(std::string_view k, double& v, bool r) { if (!read_scalar(*source_, *node_, k, v) && r) note_missing(k); }
void Reader::read(std::string_view k, float& v, bool r) { if (!read_scalar(*source_, *node_, k, v) && r) note_missing(k); }
void Reader::read(std::string_view k, std::string& v, bool r) { if (!read_scalar(*source_, *node_, k, v) && r) note_missing(k); }
void Reader::read(std::string_view k, std::optional<bool>& v, bool r) { if (!read_optional(*source_, *node_, k, v) && r) note_missing(k); }
void Reader::read(std::string_view k, std::optional<int>& v, bool r) { if (!read_optional(*source_, *node_, k, v) && r) note_missing(k); }
void Reader::read(std::string_view k, std::optional<int64_t>& v, bool r) { if (!read_optional(*source_, *node_, k, v) && r) note_missing(k); }
void Reader::read(std::string_view k, std::optional<double>& v, bool r) { if (!read_optional(*source_, *node_, k, v) && r) note_missing(k); }
void Reader::read(std::string_view k, std::optional<std::string>& v, bool r) { if (!read_optional(*source_, *node_, k, v) && r) note_missing(k); }
void Reader::read(std::string_view k, std::vector<bool>& v, bool r) { if (!read_list(*source_, *node_, k, v) && r) note_missing(k); }
void Reader::read(std::string_view k, std::vector<int>& v, bool r) { if (!read_list(*source_, *node_, k, v) && r) note_missing(k); }
void Reader::read(std::string_view k, std::vector<int64_t>& v, bool r) { if (!read_list(*source_, *node_, k, v) && r) note_missing(k); }
void Reader::read(std::string_view k, std::vector<double>& v, bool r) { if (!read_list(*source_, *node_, k, v) && r) note_missing(k); }
void Reader::read(std::string_view k, std::vector<std::string>& v, bool r) { if (!read_list(*source_, *node_, k, v) && r) note_missing(k); }

void Reader::choice(std::string_view key, std::string& value, const std::vector<std::string>& choices,
                    std::string_view doc, bool required) {
  declare(key);
  std::string parsed = value;
  if (!read_scalar(*source_, *node_, key, parsed)) {
    if (required) note_missing(key);
    return;
  }
  check_choice(key, parsed, choices);
  value = std::move(parsed);
}

void Reader::check_choice(std::string_view key, const std::string& value, const std::vector<std::string>& choices) {
  if (std::find(choices.begin(), choices.end(), value) != choices.end()) return;
  std::string list;
  for (size_t i = 0; i < choices.size(); ++i) list += (i ? ", " : "") + choices[i];
  std::string message = str("must be one of ", list, "; got '", value, "'");
  const std::string guess = closest_match(value, choices);
  if (!guess.empty()) message += str(" (did you mean '", guess, "'?)");
  fail_value(key, message);
}

void Reader::finish() {
  const YAML::Node& map = node_->node;
  std::set<std::string> seen;
  std::vector<std::string> problems;
  if (map.IsDefined() && map.IsMap()) {
    for (auto it = map.begin(); it != map.end(); ++it) {
      const YAML::Node k = it->first;  // a copy: it-> returns a temporary proxy (ASan: stack-use-after-scope)
      const std::string name = k.IsScalar() ? k.Scalar() : describe(k);
      const std::string path = join_path(node_->path, name);
      const std::string where = location(*source_, path, k.Mark());
      if (!seen.insert(name).second) {
        problems.push_back(str(where, ": duplicate key '", path, "'"));
        continue;
      }
      if (std::find(declared_.begin(), declared_.end(), name) != declared_.end()) continue;
      std::string message = str(where, ": unknown key '", path, "'");
      const std::string guess = closest_match(name, declared_);
      if (!guess.empty()) message += str("; did you mean '", join_path(node_->path, guess), "'?");
      problems.push_back(std::move(message));
    }
  }
  problems.insert(problems.end(), pending_.begin(), pending_.end());
  if (!problems.empty()) {
    std::string all;
    for (size_t i = 0; i < problems.size(); ++i) all += (i ? "\n" : "") + problems[i];
    throw ConfigError(all);
  }
}

// ------------------------------------------------------------------ opening

namespace {

bool valid_segment(std::string_view s) {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

void apply_override(Source& src, const std::string& text) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos) {
    throw ConfigError(str("override '", text, "': expected key.path=value"));
  }
  const std::string path = text.substr(0, eq);
  std::vector<std::string> segments;
  for (size_t start = 0;;) {
    const size_t dot = path.find('.', start);
    segments.push_back(path.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  for (const auto& s : segments) {
    if (!valid_segment(s)) {
      throw ConfigError(str("override '", text, "': invalid key path '", path,
                            "' (segments of letters, digits, '_' and '-', joined by '.')"));
    }
  }
  YAML::Node value;
  try {
    value = YAML::Load(text.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    throw ConfigError(str("override '", text, "': invalid YAML value: ", e.msg));
  }
  if (!src.root.IsDefined() || src.root.IsNull()) src.root = YAML::Node(YAML::NodeType::Map);
  YAML::Node cur = src.root;
  std::string walked;
  for (size_t i = 0; i + 1 < segments.size(); ++i) {
    walked = join_path(walked, segments[i]);
    YAML::Node next = cur[segments[i]];
    if (!next.IsDefined() || next.IsNull()) {
      cur[segments[i]] = YAML::Node(YAML::NodeType::Map);
      next = cur[segments[i]];
    } else if (!next.IsMap()) {
      throw ConfigError(str("override '", text, "': '", walked, "' is not a mapping (it is ",
                            describe(next), ")"));
    }
    cur.reset(next);
  }
  cur[segments.back()] = value;
  src.overrides[path] = text;
}

}  // namespace

Reader open_string(std::string_view yaml, std::string_view name, const std::vector<std::string>& overrides) {
  auto src = std::make_shared<Source>();
  src->name = std::string(name);
  try {
    src->root = YAML::Load(std::string(yaml));
  } catch (const YAML::ParserException& e) {
    throw ConfigError(str(src->name, ":", e.mark.line + 1, ":", e.mark.column + 1, ": invalid YAML: ", e.msg));
  } catch (const YAML::Exception& e) {
    throw ConfigError(str(src->name, ": invalid YAML: ", e.msg));
  }
  if (src->root.IsDefined() && !src->root.IsNull() && !src->root.IsMap()) {
    throw ConfigError(str(location(*src, "", src->root.Mark()),
                          ": the top level must be a mapping of keys, got ", describe(src->root)));
  }
  for (const auto& text : overrides) apply_override(*src, text);
  auto ref = std::make_shared<NodeRef>();
  ref->node = src->root;
  ref->mark = YAML::Mark();  // line 0, column 0 -> "file:1:1"
  return Reader(src, ref);
}

Reader open_file(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(str(path, ": cannot open config file"));
  std::ostringstream text;
  text << in.rdbuf();
  return open_string(text.str(), path, overrides);
}

// ------------------------------------------------------------------ suggestions

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string closest_match(std::string_view word, const std::vector<std::string>& candidates) {
  const size_t limit = std::max<size_t>(2, word.size() / 3);
  std::string best;
  size_t best_distance = limit + 1;
  for (const auto& c : candidates) {
    const size_t d = edit_distance(word, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  return best;
}

}  // namespace zerodiff::config

namespace zerodiff::config {

std::string markdown_table(const std::vector<KeyDoc>& keys) {
  auto escape = [](const std::string& s) {
    std::string r;
    for (char c : s) {
      if (c == '|') r.push_back('\\');
      r.push_back(c);
    }
    return r;
  };
  std::ostringstream out;
  out << "| key | type | default | description |\n| --- | --- | --- | --- |\n";
  for (const auto& k : keys) {
    out << "| `" << k.path << "` | " << escape(k.type) << " | ";
    if (k.required) {
      out << "required";
    } else {
      out << '`' << escape(k.default_value) << '`';
    }
    out << " | " << escape(k.doc) << " |\n";
  }
  return out.str();
}

}  // namespace zerodiff::config
