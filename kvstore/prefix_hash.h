// Hashes for prefix caching: XXH64 (implemented here, bit-compatible with the
// reference xxHash 0.8 XXH64) and the page hash chain built on it.
//
// A full page's identity is the hash of everything before it plus its own
// tokens:
//   root      = XXH64(identity bytes, seed 0)        identity = model, weights,
//                                                     quant recipe, page format
//   hash[0]   = XXH64(tokens[0 .. T) as int32 LE, seed = root)
//   hash[i]   = XXH64(tokens[iT .. iT+T),           seed = hash[i-1])
// so equal hashes mean equal prefixes up to a 64-bit collision; the prefix
// cache additionally compares the page's own tokens and its parent hash on
// every hit, so a false hit needs a collision of two different parent chains
// *and* identical page tokens.
//
// Pure functions; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace atomserve::kvstore {

// XXH64 of `size` bytes at `data` (any alignment).
uint64_t XxHash64(const void* data, size_t size, uint64_t seed);

// The chain's first seed: identity bytes hashed with seed 0.
uint64_t PrefixRootHash(std::string_view identity);

// hash[i] from hash[i-1] (or the root) and page i's tokens.
uint64_t PageHash(uint64_t parent_hash, std::span<const int32_t> page_tokens);

}  // namespace atomserve::kvstore
