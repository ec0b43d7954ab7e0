// dump_tensor <checkpoint> <tensor-name> <out.f32>
//
// Loads a checkpoint (GGUF file or safetensors directory), writes the named
// tensor's float32 data (row-major, little-endian) to <out.f32> and prints
// {"name": ..., "shape": [...]} on stdout. Used by the Python tests to compare
// our dequantization with reference implementations.
#include <cstdio>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "runtime/checkpoint.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s <checkpoint> <tensor-name> <out.f32>\n", argv[0]);
    return 2;
  }
  auto ckpt = atomserve::LoadCheckpoint(argv[1]);
  if (!ckpt.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(ckpt.status().message()).c_str());
    return 1;
  }
  auto tensor = ckpt->Get(argv[2]);
  if (!tensor.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(tensor.status().message()).c_str());
    return 1;
  }
  const atomserve::HostTensor& t = **tensor;
  std::ofstream out(argv[3], std::ios::binary);
  out.write(reinterpret_cast<const char*>(t.data.data()),
            static_cast<std::streamsize>(t.data.size() * sizeof(float)));
  if (!out) {
    std::fprintf(stderr, "error: cannot write %s\n", argv[3]);
    return 1;
  }
  nlohmann::json info = {{"name", argv[2]}, {"shape", t.shape}};
  std::printf("%s\n", info.dump().c_str());
  return 0;
}
