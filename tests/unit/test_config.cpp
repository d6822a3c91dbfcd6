// Config loader: typed structs, defaults, required keys, exact error texts, overrides.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "zerodiff/core/Config.h"

namespace zc = zerodiff::config;
using zerodiff::ConfigError;

namespace {

struct OptimizerCfg {
  std::string name = "adamw";
  double lr = 1e-4;
  std::vector<double> betas{0.9, 0.999};
  template <class V>
  void visit(V& v) {
    v.choice("name", name, {"adamw", "adam", "sgd"}, "optimizer");
    v("lr", lr, "peak learning rate");
    v("betas", betas, "Adam betas");
    v.check(lr > 0, "lr", "must be > 0, got ", lr);
  }
};

struct ModelCfg {
  std::string pretrained;
  int resolution = 512;
  template <class V>
  void visit(V& v) {
    v.required("pretrained", pretrained, "diffusers folder");
    v("resolution", resolution, "image side in pixels");
  }
};

struct PromptCfg {
  std::string text;
  int64_t seed = 0;
  template <class V>
  void visit(V& v) {
    v.required("text", text);
    v("seed", seed);
  }
};

struct TrainCfg {
  ModelCfg model;
  OptimizerCfg optimizer;
  int64_t max_steps = 1000;
  bool ema = false;
  float noise_offset = 0.0f;
  std::optional<int64_t> seed;
  std::vector<std::string> tags;
  std::vector<PromptCfg> prompts;
  template <class V>
  void visit(V& v) {
    v.required("model", model, "model section");
    v("optimizer", optimizer);
    v("max_steps", max_steps);
    v("ema", ema);
    v("noise_offset", noise_offset);
    v("seed", seed);
    v("tags", tags);
    v("prompts", prompts);
  }
};

std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    zc::load_string<TrainCfg>(yaml, "train.yaml", overrides);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace

TEST(Config, LoadsValuesAndKeepsDefaults) {
  const auto cfg = zc::load_string<TrainCfg>(
      "model:\n  pretrained: /models/sd15\n"
      "optimizer:\n  lr: 3.0e-5\n  betas: [0.8, 0.99]\n"
      "max_steps: 20\nema: yes\nnoise_offset: 0.05\nseed: 7\ntags: [a, b]\n"
      "prompts:\n  - text: a red circle\n    seed: 3\n  - text: a blue square\n",
      "train.yaml");
  EXPECT_EQ(cfg.model.pretrained, "/models/sd15");
  EXPECT_EQ(cfg.model.resolution, 512);  // default kept
  EXPECT_EQ(cfg.optimizer.name, "adamw");
  EXPECT_DOUBLE_EQ(cfg.optimizer.lr, 3.0e-5);
  EXPECT_EQ(cfg.optimizer.betas, (std::vector<double>{0.8, 0.99}));
  EXPECT_EQ(cfg.max_steps, 20);
  EXPECT_TRUE(cfg.ema);
  EXPECT_FLOAT_EQ(cfg.noise_offset, 0.05f);
  ASSERT_TRUE(cfg.seed.has_value());
  EXPECT_EQ(*cfg.seed, 7);
  EXPECT_EQ(cfg.tags, (std::vector<std::string>{"a", "b"}));
  ASSERT_EQ(cfg.prompts.size(), 2u);
  EXPECT_EQ(cfg.prompts[0].text, "a red circle");
  EXPECT_EQ(cfg.prompts[0].seed, 3);
  EXPECT_EQ(cfg.prompts[1].text, "a blue square");
  EXPECT_EQ(cfg.prompts[1].seed, 0);
}

TEST(Config, UnknownKeyWithSuggestion) {
  EXPECT_EQ(error_of("model:\n  pretrained: x\noptimizer:\n  lr: 1.0e-4\n  lerning_rate: 2\n"),
            "train.yaml:5:3: unknown key 'optimizer.lerning_rate'");
  EXPECT_EQ(error_of("model:\n  pretrained: x\nmax_step: 10\n"),
            "train.yaml:3:1: unknown key 'max_step'; did you mean 'max_steps'?");
  EXPECT_EQ(error_of("model:\n  pretrained: x\n  resolutoin: 256\n"),
            "train.yaml:3:3: unknown key 'model.resolutoin'; did you mean 'model.resolution'?");
}

TEST(Config, AllUnknownKeysAreReported) {
  EXPECT_EQ(error_of("model:\n  pretrained: x\nfoo: 1\nemma: true\n"),
            "train.yaml:3:1: unknown key 'foo'\n"
            "train.yaml:4:1: unknown key 'emma'; did you mean 'ema'?");
}

TEST(Config, WrongTypes) {
  EXPECT_EQ(error_of("model:\n  pretrained: x\nmax_steps: ten\n"),
            "train.yaml:3:12: key 'max_steps' expects an integer, got 'ten'");
  EXPECT_EQ(error_of("model:\n  pretrained: x\nmax_steps: 1.5\n"),
            "train.yaml:3:12: key 'max_steps' expects an integer, got '1.5'");
  EXPECT_EQ(error_of("model:\n  pretrained: x\nema: maybe\n"),
            "train.yaml:3:6: key 'ema' expects a boolean (true/false), got 'maybe'");
  EXPECT_EQ(error_of("model:\n  pretrained: x\n  resolution: [1, 2]\n"),
            "train.yaml:3:15: key 'model.resolution' expects an integer, got a list");
  EXPECT_EQ(error_of("model: /models/sd15\n"),
            "train.yaml:1:8: key 'model' expects a mapping, got '/models/sd15'");
  EXPECT_EQ(error_of("model:\n  pretrained: x\noptimizer:\n  betas: [0.9, high]\n"),
            "train.yaml:4:16: key 'optimizer.betas[1]' expects a number, got 'high'");
  EXPECT_EQ(error_of("model:\n  pretrained: x\nprompts:\n  - text: a\n  - seed: 3\n"),
            "train.yaml:5:5: missing required key 'prompts[1].text'");
}

TEST(Config, MissingRequiredKey) {
  EXPECT_EQ(error_of("model:\n  resolution: 256\n"), "train.yaml:2:3: missing required key 'model.pretrained'");
  EXPECT_EQ(error_of("max_steps: 5\n"), "train.yaml:1:1: missing required key 'model'");
  EXPECT_EQ(error_of(""), "train.yaml:1:1: missing required key 'model'");
}

TEST(Config, MalformedYamlHasLineAndColumn) {
  EXPECT_EQ(error_of("model:\n  pretrained: [a, b\nmax_steps: 3\n"),
            "train.yaml:3:10: invalid YAML: end of sequence flow not found");
  EXPECT_EQ(error_of("model:\n  pretrained: x\n  - item\n"), "train.yaml:3:3: invalid YAML: end of map not found");
  EXPECT_EQ(error_of("model: {pretrained: x\nmax_steps: 3\n"), "train.yaml:2:10: invalid YAML: end of map flow not found");
  EXPECT_EQ(error_of("- a\n- b\n"), "train.yaml:1:1: the top level must be a mapping of keys, got a list");
}

TEST(Config, DuplicateKeyIsAnError) {
  EXPECT_EQ(error_of("model:\n  pretrained: x\nmax_steps: 1\nmax_steps: 2\n"),
            "train.yaml:4:1: duplicate key 'max_steps'");
}

TEST(Config, ChoiceAndCheck) {
  EXPECT_EQ(error_of("model:\n  pretrained: x\noptimizer:\n  name: adanw\n"),
            "train.yaml:4:9: key 'optimizer.name' must be one of adamw, adam, sgd; got 'adanw' (did you mean "
            "'adamw'?)");
  EXPECT_EQ(error_of("model:\n  pretrained: x\noptimizer:\n  lr: -1\n"),
            "train.yaml:4:7: key 'optimizer.lr' must be > 0, got -1");
}

TEST(Config, OverridesApplyAndReportTheirSource) {
  const auto cfg = zc::load_string<TrainCfg>("model:\n  pretrained: x\n", "train.yaml",
                                             {"optimizer.lr=0.5", "max_steps=7", "model.resolution=64",
                                              "tags=[x, y]", "seed=null"});
  EXPECT_DOUBLE_EQ(cfg.optimizer.lr, 0.5);
  EXPECT_EQ(cfg.max_steps, 7);
  EXPECT_EQ(cfg.model.resolution, 64);
  EXPECT_EQ(cfg.tags, (std::vector<std::string>{"x", "y"}));
  EXPECT_FALSE(cfg.seed.has_value());
  EXPECT_EQ(error_of("model:\n  pretrained: x\n", {"optimizer.lr=abc"}),
            "override 'optimizer.lr=abc': key 'optimizer.lr' expects a number, got 'abc'");
  EXPECT_EQ(error_of("model:\n  pretrained: x\n", {"optimizer.lerning_rate=1"}),
            "override 'optimizer.lerning_rate=1': unknown key 'optimizer.lerning_rate'");
  EXPECT_EQ(error_of("model:\n  pretrained: x\n", {"max_steps"}), "override 'max_steps': expected key.path=value");
  EXPECT_EQ(error_of("model:\n  pretrained: x\n", {"max_steps.a=1"}),
            "override 'max_steps.a=1': key 'max_steps' expects an integer, got a mapping");
  EXPECT_EQ(error_of("model:\n  pretrained: x\nmax_steps: 3\n", {"max_steps.a=1"}),
            "override 'max_steps.a=1': 'max_steps' is not a mapping (it is '3')");
  EXPECT_EQ(error_of("model:\n  pretrained: x\n", {"a..b=1"}),
            "override 'a..b=1': invalid key path 'a..b' (segments of letters, digits, '_' and '-', joined by '.')");
  // A mapping of the file keeps its file location when an override sets one of its keys; a mapping that only
  // an override created is reported at that override.
  EXPECT_EQ(error_of("model:\n  resolution: 8\n", {"model.resolution=64"}),
            "train.yaml:2:3: missing required key 'model.pretrained'");
  EXPECT_EQ(error_of("max_steps: 1\n", {"model.resolution=64"}),
            "override 'model.resolution=64': missing required key 'model.pretrained'");
}

TEST(Config, LoadFileNamesTheFile) {
  const std::string path = testing::TempDir() + "zd_config_test.yaml";
  {
    std::ofstream out(path);
    out << "model:\n  pretrained: x\nmax_steps: many\n";
  }
  try {
    zc::load_file<TrainCfg>(path);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), path + ":3:12: key 'max_steps' expects an integer, got 'many'");
  }
  std::remove(path.c_str());
  try {
    zc::load_file<TrainCfg>(path);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), path + ": cannot open config file");
  }
}

TEST(Config, Suggestions) {
  EXPECT_EQ(zc::edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(zc::edit_distance("", "abc"), 3u);
  EXPECT_EQ(zc::closest_match("lerning_rate", {"lr", "learning_rate", "betas"}), "learning_rate");
  EXPECT_EQ(zc::closest_match("zzz", {"lr", "learning_rate"}), "");
}

TEST(Config, DocumenterListsEveryKeyWithTypeDefaultAndDoc) {
  const auto keys = zc::document<TrainCfg>();
  std::vector<std::string> paths;
  for (const auto& k : keys) paths.push_back(k.path);
  EXPECT_EQ(paths, (std::vector<std::string>{"model", "model.pretrained", "model.resolution", "optimizer", "optimizer.name",
                                             "optimizer.lr", "optimizer.betas", "max_steps", "ema", "noise_offset", "seed",
                                             "tags", "prompts", "prompts[].text", "prompts[].seed"}));
  EXPECT_TRUE(keys[1].required);
  EXPECT_EQ(keys[1].doc, "diffusers folder");
  EXPECT_EQ(keys[2].type, "integer");
  EXPECT_EQ(keys[2].default_value, "512");
  EXPECT_EQ(keys[4].type, "one of adamw | adam | sgd");
  EXPECT_EQ(keys[6].default_value, "[0.9, 0.999]");
  EXPECT_EQ(keys[10].type, "integer or null");
  EXPECT_EQ(keys[10].default_value, "null");
  const std::string md = zc::markdown_table(keys);
  EXPECT_NE(md.find("| `optimizer.lr` | number | `0.0001` | peak learning rate |"), std::string::npos) << md;
  EXPECT_NE(md.find("| `model.pretrained` | string | required | diffusers folder |"), std::string::npos) << md;
}
