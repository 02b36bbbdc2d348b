// `nibble inspect`: what a checkpoint holds — architecture, tensors, dtypes,
// quantization, sizes.
#include <cstdio>
#include <map>

#include <fmt/format.h>

#include "command.h"
#include "formats/gguf/gguf_file.h"
#include "formats/hf/hf_config.h"
#include "model/loader.h"

namespace nibble::cli {
namespace {

struct InspectOptions {
  std::string path;
  bool tensors = false;
  bool json = false;
};

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 4) {
    bytes /= 1024.0;
    ++u;
  }
  return fmt::format("{:.2f} {}", bytes, units[u]);
}

nlohmann::json describe(const ModelSource& s) {
  nlohmann::json j;
  j["path"] = s.path.string();
  j["format"] = s.format;
  j["config"] = hf_config_to_json(s.config);
  uint64_t total_bytes = 0;
  int64_t total_params = 0;
  std::map<std::string, std::pair<int64_t, uint64_t>> by_type;  // count, bytes
  nlohmann::json tensors = nlohmann::json::array();
  for (const auto& t : s.raw_checkpoint->tensors()) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    total_params += n;
    total_bytes += t.nbytes;
    by_type[t.type].first++;
    by_type[t.type].second += t.nbytes;
    tensors.push_back(
        {{"name", t.name}, {"type", t.type}, {"shape", t.shape}, {"bytes", t.nbytes}});
  }
  j["parameters"] = total_params;
  j["bytes"] = total_bytes;
  j["bits_per_weight"] = total_params ? 8.0 * double(total_bytes) / double(total_params) : 0.0;
  for (const auto& [type, cb] : by_type)
    j["tensor_types"][type] = {{"count", cb.first}, {"bytes", cb.second}};
  j["tensors"] = std::move(tensors);
  if (s.gguf) {
    j["gguf_version"] = s.gguf->version();
    if (auto ft = s.gguf->get_int("general.file_type")) j["gguf_file_type"] = *ft;
    if (auto name = s.gguf->get_string("general.name")) j["name"] = *name;
  } else {
    const auto config_json = read_json_file(s.path / "config.json");
    if (config_json.contains("quantization_config"))
      j["quantization_config"] = config_json["quantization_config"];
  }
  if (s.tokenizer) {
    j["tokenizer"] = {{"vocab_size", s.tokenizer->vocab_size()},
                      {"bos_token", s.bos_token},
                      {"eos_token", s.eos_token},
                      {"stop_token_ids", s.stop_ids}};
  }
  j["chat_template"] = !s.chat_template.empty();
  return j;
}

int run_inspect(const InspectOptions& o) {
  const ModelSource source = open_model_source(o.path);
  const nlohmann::json j = describe(source);
  if (o.json) {
    nlohmann::json out = j;
    if (!o.tensors) out.erase("tensors");
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  const auto& c = j["config"];
  std::printf("path:          %s (%s)\n", source.path.string().c_str(), source.format.c_str());
  std::printf(
      "architecture:  %s, %lld layers, hidden %lld, heads %lld (kv "
      "%lld), head_dim %lld, "
      "ffn %lld, vocab %lld, context %lld\n",
      source.config.model_type.c_str(), (long long)source.config.num_hidden_layers,
      (long long)source.config.hidden_size, (long long)source.config.num_attention_heads,
      (long long)source.config.num_key_value_heads, (long long)source.config.head_dim,
      (long long)source.config.intermediate_size, (long long)source.config.vocab_size,
      (long long)source.config.max_position_embeddings);
  std::printf("rope:          theta %g, scaling %s; tied embeddings: %s\n",
              source.config.rope_theta, source.config.rope_scaling.rope_type.c_str(),
              source.config.tie_word_embeddings ? "yes" : "no");
  std::printf("size:          %.1fM parameters, %s, %.2f bits/weight\n",
              j["parameters"].get<double>() / 1e6, human_bytes(j["bytes"].get<double>()).c_str(),
              j["bits_per_weight"].get<double>());
  std::printf("tensor types: ");
  for (const auto& [type, cb] : j["tensor_types"].items())
    std::printf(" %s×%lld (%s)", type.c_str(), (long long)cb["count"].get<int64_t>(),
                human_bytes(cb["bytes"].get<double>()).c_str());
  std::printf("\n");
  if (j.contains("quantization_config"))
    std::printf("quantization:  %s\n", j["quantization_config"].dump().c_str());
  if (j.contains("tokenizer"))
    std::printf("tokenizer:     vocab %lld, bos %s, eos %s, chat template: %s\n",
                (long long)source.tokenizer->vocab_size(), source.bos_token.c_str(),
                source.eos_token.c_str(), source.chat_template.empty() ? "no" : "yes");
  (void)c;
  if (o.tensors) {
    for (const auto& t : j["tensors"])
      std::printf("  %-48s %-8s %-20s %s\n", t["name"].get<std::string>().c_str(),
                  t["type"].get<std::string>().c_str(), t["shape"].dump().c_str(),
                  human_bytes(t["bytes"].get<double>()).c_str());
  }
  return 0;
}

NIBBLE_COMMAND(inspect, [](CLI::App& app) -> std::function<int()> {
  auto o = std::make_shared<InspectOptions>();
  app.description(
      "Describe a checkpoint: architecture, tensors, dtypes, "
      "quantization, sizes");
  app.add_option("path", o->path, "HF model directory or GGUF file")->required();
  app.add_flag("--tensors", o->tensors, "list every tensor");
  app.add_flag("--json", o->json, "print JSON");
  return [o] { return run_inspect(*o); };
});

}  // namespace
}  // namespace nibble::cli
