// model_logits: run the model over token ids and write every position's
// logits, for agreement tests against independent implementations.
//
//   model_logits <checkpoint> <comma-separated ids> <out.f32>
// Writes float32 [n, vocab] row-major and prints {"n":..,"vocab":..} on stdout.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "runtime/llama_model.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: model_logits <checkpoint> <ids> <out.f32>\n");
    return 2;
  }
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(argv[2], ',', absl::SkipEmpty())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      std::fprintf(stderr, "bad id '%s'\n", std::string(part).c_str());
      return 2;
    }
    ids.push_back(id);
  }
  auto ckpt = atomserve::LoadCheckpoint(argv[1]);
  if (!ckpt.ok()) {
    std::fprintf(stderr, "%s\n", ckpt.status().ToString().c_str());
    return 1;
  }
  auto model = atomserve::LlamaModel::Create(std::move(*ckpt));
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    return 1;
  }
  atomserve::DenseKvCache cache = (*model)->NewCache(static_cast<int64_t>(ids.size()));
  std::vector<float> logits;
  if (auto st = (*model)->Forward(ids, cache, &logits, /*all_logits=*/true); !st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 1;
  }
  std::ofstream out(argv[3], std::ios::binary);
  out.write(reinterpret_cast<const char*>(logits.data()), logits.size() * sizeof(float));
  if (!out) {
    std::fprintf(stderr, "cannot write %s\n", argv[3]);
    return 1;
  }
  std::printf("{\"n\": %zu, \"vocab\": %lld}\n", ids.size(),
              static_cast<long long>((*model)->config().vocab_size));
  return 0;
}
