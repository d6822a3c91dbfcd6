// CLIP parity: the tokenizer against transformers' CLIPTokenizer on >= 200 strings (tests/data/clip/
// tokenizer_cases.json, SD 1.x and SD 2.x pads), and the text encoder against transformers' CLIPTextModel on a
// tiny ViT-L-like (quick_gelu) and ViT-H-like (gelu) model over the real vocabulary; plus the full-size SD 1.5 /
// SD 2.1 text-encoder key lists. Fixtures: tools/fixtures/make_clip_tokenizer_folder.py and
// tools/fixtures/make_clip_fixtures.py.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "ParityUtil.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/io/Diffusers.h"
#include "zerodiff/io/Safetensors.h"
#include "zerodiff/models/clip/CLIPTextModel.h"
#include "zerodiff/models/clip/CLIPTokenizer.h"

namespace fs = std::filesystem;
namespace zm = zerodiff::models;
namespace zio = zerodiff::io;
using zerodiff::testing::parity_close;

using zerodiff::testing::config_dir;
using zerodiff::testing::read_json;
using zerodiff::testing::TempDir;

namespace {

std::string clip_dir() {
  std::string dir = ZERODIFF_TEST_DATA_DIR;  // (append, not operator+: GCC 12 warns falsely on the latter)
  dir.append("/clip");
  return dir;
}
std::string tokenizer_dir() { return clip_dir() + "/tokenizer"; }


const zm::CLIPTokenizer& sd1_tokenizer() {
  static const zm::CLIPTokenizer tok = zm::CLIPTokenizer::from_pretrained(tokenizer_dir());
  return tok;
}

std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

// ============================================================================================== tokenizer

TEST(ClipTokenizer, LoadsTheRealVocabularyFolder) {
  const zm::CLIPTokenizer& tok = sd1_tokenizer();
  EXPECT_EQ(tok.vocab_size(), 49408);
  EXPECT_EQ(tok.bos_token_id(), 49406);
  EXPECT_EQ(tok.eos_token_id(), 49407);
  EXPECT_EQ(tok.pad_token_id(), 49407);
  EXPECT_EQ(tok.unk_token_id(), 49407);
  EXPECT_EQ(tok.options().model_max_length(), 77);
  EXPECT_EQ(tok.id_to_token(320), "a</w>");
  EXPECT_EQ(tok.token_to_id("<|startoftext|>"), 49406);
  EXPECT_FALSE(tok.token_to_id("not-a-token").has_value());
}

void check_all_cases(const zm::CLIPTokenizer& tok, const char* ids_key, const char* mask_key) {
  const nlohmann::json doc = read_json(clip_dir() + "/tokenizer_cases.json");
  const auto& cases = doc.at("cases");
  ASSERT_GE(cases.size(), 200u);
  std::vector<std::string> texts;
  for (const auto& c : cases) texts.push_back(c.at("text").get<std::string>());
  zerodiff::models::CLIPTokens out;
  {
    zerodiff::log::Capture quiet;  // truncation warnings are checked separately
    out = tok(texts);
  }
  ASSERT_EQ(out.input_ids.sizes(), (std::vector<int64_t>{static_cast<int64_t>(texts.size()), 77}));
  size_t failures = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto want = cases[i].at(ids_key).get<std::vector<int64_t>>();
    const at::Tensor row = out.input_ids[static_cast<int64_t>(i)].contiguous();
    const std::vector<int64_t> got(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel());
    const int64_t mask_len = out.attention_mask[static_cast<int64_t>(i)].sum().item<int64_t>();
    if (got != want || mask_len != cases[i].at(mask_key).get<int64_t>()) {
      if (++failures <= 15) {
        ADD_FAILURE() << ids_key << " case " << i << " '" << printable(texts[i]) << "'\n  got  " << zerodiff::str(got)
                      << "\n  want " << zerodiff::str(want) << "\n  mask " << mask_len << " vs "
                      << cases[i].at(mask_key).get<int64_t>();
      }
    }
  }
  std::printf("[parity] tokenizer %s: %zu / %zu strings equal transformers' ids\n", ids_key, cases.size() - failures,
              cases.size());
  EXPECT_EQ(failures, 0u);
}

TEST(ClipTokenizer, MatchesTransformersSD1Pad) { check_all_cases(sd1_tokenizer(), "ids_sd1", "mask_sd1"); }

TEST(ClipTokenizer, MatchesTransformersSD2Pad) {
  const zm::CLIPTokenizer tok = zm::CLIPTokenizer::from_pretrained(tokenizer_dir(), std::string("!"));
  EXPECT_EQ(tok.pad_token_id(), 0);
  check_all_cases(tok, "ids_sd2", "mask_sd2");
}

TEST(ClipTokenizer, TruncationWarnsWithTheCutText) {
  const nlohmann::json doc = read_json(clip_dir() + "/tokenizer_cases.json");
  int checked = 0;
  for (const auto& c : doc.at("cases")) {
    if (!c.contains("truncated_sd1")) continue;
    const std::string cut = c.at("truncated_sd1").get<std::string>();
    zerodiff::log::Capture capture;
    sd1_tokenizer()({c.at("text").get<std::string>()});
    const std::string text = capture.text();
    EXPECT_NE(text.find("The following part of your input was truncated because CLIP can only handle sequences up "
                        "to 77 tokens: ['" + cut + "']"),
              std::string::npos)
        << text;
    ++checked;
  }
  EXPECT_GE(checked, 5);
  zerodiff::log::Capture capture;
  sd1_tokenizer()({"a short prompt"});
  EXPECT_EQ(capture.text().find("truncated"), std::string::npos);
}

TEST(ClipTokenizer, OriginalBpeGzMatchesTheFolder) {
  const std::string gz = zm::CLIPTokenizer::find_bpe_gz(std::string(ZERODIFF_SOURCE_DIR) + "/.venv");
  if (gz.empty()) GTEST_SKIP() << "open_clip's bpe_simple_vocab_16e6.txt.gz is not installed in .venv (tools/setup.sh)";
  const zm::CLIPTokenizer from_gz = zm::CLIPTokenizer::from_bpe_gz(gz);
  const zm::CLIPTokenizer& folder = sd1_tokenizer();
  ASSERT_EQ(from_gz.vocab_size(), folder.vocab_size());
  for (int64_t id = 0; id < folder.vocab_size(); ++id) {
    ASSERT_EQ(from_gz.id_to_token(id), folder.id_to_token(id)) << id;
  }
  for (const char* text : {"a photograph of an astronaut riding a horse", "Ünïcödé 日本 😀 it's!!!"}) {
    EXPECT_EQ(from_gz.encode(text), folder.encode(text)) << text;
  }
}

TEST(ClipTokenizer, PadTokenFromSpecialTokensMap) {
  TempDir dir("clip_pad");
  for (const char* f : {"vocab.json", "merges.txt", "tokenizer_config.json"}) {
    fs::copy_file(fs::path(tokenizer_dir()) / f, dir.path / f);
  }
  // SD 2.x: special_tokens_map.json says "!" (and wins over tokenizer_config.json's <|endoftext|>).
  std::ofstream(dir.path / "special_tokens_map.json") << R"({"bos_token": "<|startoftext|>",
      "eos_token": "<|endoftext|>", "pad_token": "!", "unk_token": "<|endoftext|>"})";
  const zm::CLIPTokenizer tok = zm::CLIPTokenizer::from_pretrained(dir.path.string());
  EXPECT_EQ(tok.pad_token_id(), 0);
  const zm::CLIPTokens t = tok({"a cat"});
  EXPECT_EQ(t.input_ids[0][4].item<int64_t>(), 0);
  EXPECT_EQ(t.attention_mask[0].sum().item<int64_t>(), 4);
}

TEST(ClipTokenizer, SavePretrainedRoundTrip) {
  TempDir dir("clip_save");
  const zm::CLIPTokenizer tok = zm::CLIPTokenizer::from_pretrained(tokenizer_dir(), std::string("!"));
  tok.save_pretrained(dir.path.string());
  const zm::CLIPTokenizer back = zm::CLIPTokenizer::from_pretrained(dir.path.string());
  EXPECT_EQ(back.pad_token_id(), 0);
  EXPECT_EQ(back.vocab_size(), 49408);
  const std::vector<std::string> texts = {"a photo of a cat!!", "Crème Brûlée, 4k"};
  EXPECT_TRUE(torch::equal(back(texts).input_ids, tok(texts).input_ids));
}

TEST(ClipTokenizer, DecodeAndErrors) {
  const zm::CLIPTokenizer& tok = sd1_tokenizer();
  EXPECT_EQ(tok.decode(tok.encode("Hello,   World! café")), "hello , world ! café");
  const zm::CLIPTokens t = tok({"a cat"});
  const at::Tensor row = t.input_ids[0].contiguous();
  EXPECT_EQ(tok.decode(std::vector<int64_t>(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + 4)), "a cat");
  EXPECT_THROW(zm::CLIPTokenizer::from_pretrained(clip_dir() + "/no_such_folder"), zerodiff::IoError);
  EXPECT_THROW(tok.id_to_token(49408), zerodiff::Error);
  EXPECT_EQ(zm::clip_text::nfc("e\xcc\x81"), "\xc3\xa9");  // e + U+0301 -> é
  EXPECT_EQ(zm::clip_text::normalize(" A\xc2\xa0\tB "), " a b ");
  // Invalid UTF-8 -> U+FFFD per maximal subpart (Python's errors="replace"): a truncated sequence is one.
  EXPECT_EQ(zm::clip_text::to_valid_utf8("a\xe3\x81z"), "a\xef\xbf\xbdz");
  EXPECT_EQ(zm::clip_text::to_valid_utf8("\x81\x82"), "\xef\xbf\xbd\xef\xbf\xbd");
  EXPECT_EQ(zm::clip_text::to_valid_utf8("\xed\xa0\x80"), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
}

// ============================================================================================== text model

struct TextCase {
  const char* name;
  int64_t layers;
};

void check_text_model(const TextCase& tc) {
  const std::string folder = clip_dir() + "/" + tc.name;
  zm::CLIPTextModel model = zm::clip_text_model_from_pretrained(folder);
  model->eval();
  EXPECT_EQ(model->options.num_hidden_layers(), tc.layers);
  const zio::TensorMap io = zio::load_safetensors(clip_dir() + "/" + tc.name + "_io.safetensors");
  torch::NoGradGuard no_grad;
  const at::Tensor ids = io.at("input_ids");
  const std::string n = tc.name;
  const zm::CLIPTextOutput out = model->forward(ids, {}, /*output_hidden_states=*/true);
  EXPECT_TRUE(parity_close(n + " last_hidden_state", out.last_hidden_state, io.at("last_hidden_state")));
  EXPECT_TRUE(parity_close(n + " pooler_output", out.pooler_output, io.at("pooler_output")));
  ASSERT_EQ(static_cast<int64_t>(out.hidden_states.size()), tc.layers + 1);
  for (int64_t i = 0; i <= tc.layers; ++i) {
    const std::string key = "hidden_states." + std::to_string(i);
    EXPECT_TRUE(parity_close(n + " " + key, out.hidden_states[static_cast<size_t>(i)], io.at(key)));
  }
  EXPECT_TRUE(parity_close(n + " encode(clip_skip=1)", model->encode(ids, 1), io.at("clip_skip_1")));
  EXPECT_TRUE(parity_close(n + " encode()", model->encode(ids), io.at("last_hidden_state")));
  const zm::CLIPTextOutput masked = model->forward(ids, io.at("attention_mask"));
  EXPECT_TRUE(parity_close(n + " masked.last_hidden_state", masked.last_hidden_state, io.at("masked.last_hidden_state")));
  EXPECT_TRUE(parity_close(n + " masked.pooler_output", masked.pooler_output, io.at("masked.pooler_output")));
  const zm::CLIPTextOutput shorter = model->forward(io.at("short.input_ids"));
  EXPECT_TRUE(parity_close(n + " short.last_hidden_state", shorter.last_hidden_state, io.at("short.last_hidden_state")));
  EXPECT_TRUE(parity_close(n + " short.pooler_output", shorter.pooler_output, io.at("short.pooler_output")));
}

void check_text_model_gradients(const TextCase& tc) {
  zm::CLIPTextModel model = zm::clip_text_model_from_pretrained(clip_dir() + "/" + tc.name);
  model->eval();
  const zio::TensorMap io = zio::load_safetensors(clip_dir() + "/" + tc.name + "_io.safetensors");
  const at::Tensor loss = (model->forward(io.at("input_ids")).last_hidden_state * io.at("grad_weight")).sum();
  loss.backward();
  const std::string n = tc.name;
  EXPECT_TRUE(parity_close(n + " loss", loss, io.at("loss")));
  const auto params = model->named_parameters();
  int checked = 0;
  for (const auto& [key, ref] : io) {
    if (key.rfind("grad.param.", 0) != 0) continue;
    const std::string name = key.substr(11);
    ASSERT_TRUE(params.contains(name)) << name;
    EXPECT_TRUE(parity_close(n + " " + key, params[name].grad(), ref));
    ++checked;
  }
  EXPECT_EQ(checked, 6);
}

TEST(ClipTextModel, TinyViTLMatchesTransformers) { check_text_model({"text_vitl_tiny", 2}); }
TEST(ClipTextModel, TinyViTLGradientsMatchTransformers) { check_text_model_gradients({"text_vitl_tiny", 2}); }
TEST(ClipTextModel, TinyViTHGradientsMatchTransformers) { check_text_model_gradients({"text_vith_tiny", 3}); }
TEST(ClipTextModel, TinyViTHMatchesTransformers) { check_text_model({"text_vith_tiny", 3}); }

TEST(ClipTextModel, TokenizerIdsOfTheFixturesAreTheRealTokenizers) {
  const zio::TensorMap io = zio::load_safetensors(clip_dir() + "/text_vitl_tiny_io.safetensors");
  const std::vector<std::string> prompts = {
      "a photograph of an astronaut riding a horse",
      "A high-resolution PHOTO of a Corgi wearing sunglasses, 4k, trending on ArtStation!!!", ""};
  const zm::CLIPTokens t = sd1_tokenizer()(prompts);
  EXPECT_TRUE(torch::equal(t.input_ids, io.at("input_ids").slice(0, 0, 3)));
  EXPECT_TRUE(torch::equal(t.attention_mask, io.at("attention_mask").slice(0, 0, 3)));
}

TEST(ClipTextModel, LoadsTransformers4PrefixedCheckpoint) {
  // Published SD folders (transformers 4.x) prefix keys with "text_model." and may hold position_ids.
  const std::string src = clip_dir() + "/text_vitl_tiny";
  TempDir dir("clip_prefixed");
  fs::copy_file(fs::path(src) / "config.json", dir.path / "config.json");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [name, t] : zio::load_safetensors(src + "/model.safetensors")) {
    tensors.emplace_back("text_model." + name, t);
  }
  tensors.emplace_back("text_model.embeddings.position_ids", torch::arange(77, torch::kLong).unsqueeze(0));
  zio::save_safetensors((dir.path / "model.safetensors").string(), tensors);
  zm::CLIPTextModel a = zm::clip_text_model_from_pretrained(src);
  zm::CLIPTextModel b = zm::clip_text_model_from_pretrained(dir.path.string());
  torch::NoGradGuard no_grad;
  const at::Tensor ids = zio::load_safetensors(clip_dir() + "/text_vitl_tiny_io.safetensors").at("input_ids");
  EXPECT_TRUE(torch::equal(a->forward(ids).last_hidden_state, b->forward(ids).last_hidden_state));
  // A missing tensor is reported by name.
  tensors.erase(std::remove_if(tensors.begin(), tensors.end(),
                               [](const auto& kv) { return kv.first == "text_model.final_layer_norm.bias"; }),
                tensors.end());
  zio::save_safetensors((dir.path / "model.safetensors").string(), tensors);
  try {
    zm::clip_text_model_from_pretrained(dir.path.string());
    ADD_FAILURE() << "expected an IoError";
  } catch (const zerodiff::IoError& e) {
    EXPECT_NE(std::string(e.what()).find("final_layer_norm.bias"), std::string::npos) << e.what();
  }
}

TEST(ClipTextModel, SavePretrainedRoundTrip) {
  TempDir dir("clip_model_save");
  zm::CLIPTextModel a = zm::clip_text_model_from_pretrained(clip_dir() + "/text_vith_tiny");
  zm::save_pretrained(a, dir.path.string());
  const nlohmann::json config = zio::read_config_json(dir.path.string());
  EXPECT_EQ(config.at("model_type"), "clip_text_model");
  EXPECT_EQ(config.at("dtype"), "float32");
  zm::CLIPTextModel b = zm::clip_text_model_from_pretrained(dir.path.string());
  torch::NoGradGuard no_grad;
  const at::Tensor ids = zio::load_safetensors(clip_dir() + "/text_vith_tiny_io.safetensors").at("input_ids");
  EXPECT_TRUE(torch::equal(a->forward(ids).last_hidden_state, b->forward(ids).last_hidden_state));
}

TEST(ClipTextModel, ConfigErrorsNameTheKey) {
  nlohmann::json config = zio::read_config_json(config_dir("sd15/text_encoder"));
  config["hidden_act"] = "relu";
  try {
    zm::CLIPTextOptions::from_json(config);
    ADD_FAILURE() << "expected NotImplementedError";
  } catch (const zerodiff::NotImplementedError& e) {
    EXPECT_NE(std::string(e.what()).find("hidden_act"), std::string::npos) << e.what();
  }
  config = zio::read_config_json(config_dir("sd15/text_encoder"));
  config["mystery_key"] = 3;
  EXPECT_THROW(zm::CLIPTextOptions::from_json(config), zerodiff::NotImplementedError);
  config = zio::read_config_json(config_dir("sd15/text_encoder"));
  config["hidden_size"] = "big";
  EXPECT_THROW(zm::CLIPTextOptions::from_json(config), zerodiff::ConfigError);
  config = zio::read_config_json(config_dir("sd15/text_encoder"));
  config["num_attention_heads"] = 7;
  EXPECT_THROW(zm::CLIPTextOptions::from_json(config), zerodiff::ConfigError);
}

void compare_key_list(const std::string& cfg, const std::string& key_file, int64_t layers, int64_t hidden) {
  const nlohmann::json config = zio::read_config_json(config_dir(cfg));
  EXPECT_EQ(zm::CLIPTextOptions::from_json(config).to_json(), config) << cfg;
  const zm::CLIPTextOptions options = zm::CLIPTextOptions::from_json(config);
  EXPECT_EQ(options.num_hidden_layers(), layers);
  EXPECT_EQ(options.hidden_size(), hidden);
  torch::NoGradGuard no_grad;
  zm::CLIPTextModel model(options);
  const nlohmann::json ref = read_json(clip_dir() + "/key_lists/" + key_file);
  std::vector<std::pair<std::string, std::vector<int64_t>>> params, want;
  int64_t count = 0;
  for (const auto& p : model->named_parameters()) {
    params.emplace_back(p.key(), p.value().sizes().vec());
    count += p.value().numel();
  }
  std::sort(params.begin(), params.end());
  for (const auto& e : ref.at("params")) {
    want.emplace_back(e.at(0).get<std::string>(), e.at(1).get<std::vector<int64_t>>());
  }
  EXPECT_EQ(count, ref.at("num_params").get<int64_t>()) << key_file;
  EXPECT_EQ(params, want) << key_file;
  // transformers' only buffer (embeddings.position_ids) is non-persistent; zerodiff's state dict is exactly
  // transformers' state_dict().
  std::vector<std::string> state;
  for (const auto& [name, _] : zio::state_dict(*model)) state.push_back(name);
  EXPECT_EQ(state, ref.at("state_dict_keys").get<std::vector<std::string>>()) << key_file;
  EXPECT_EQ(model->units().size(), static_cast<size_t>(layers + 2));
}

TEST(ClipTextModel, StableDiffusion15TextEncoderKeys) {
  compare_key_list("sd15/text_encoder", "text_encoder_sd15.json", 12, 768);
}

TEST(ClipTextModel, StableDiffusion21TextEncoderKeys) {
  compare_key_list("sd21/text_encoder", "text_encoder_sd21.json", 23, 1024);
}

TEST(ClipTextModel, TinyConfigsInConfigsMatchTheFixtures) {
  for (const auto& [cfg, fixture] : std::vector<std::pair<std::string, std::string>>{
           {"tiny/text_vitl", "text_vitl_tiny"}, {"tiny/text_vith", "text_vith_tiny"}}) {
    EXPECT_EQ(zio::read_config_json(config_dir(cfg)), zio::read_config_json(clip_dir() + "/" + fixture)) << cfg;
    EXPECT_NO_THROW(zm::CLIPTextOptions::from_json(zio::read_config_json(config_dir(cfg)))) << cfg;
  }
}

}  // namespace
