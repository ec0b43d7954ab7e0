// The sequence-level KV store the engine drives: a page pool, one block table
// per sequence, reference-counted sharing (forks, cached prefixes) with
// copy-on-write, prefix caching, and the capacity queries a scheduler needs.
//
// A sequence has
//   tokens        every token id known so far (prompt + generated)
//   num_computed  positions [0, num_computed) hold valid K/V
//   block table   pages covering at least [0, num_computed); Reserve() extends
//                 it to cover the positions a step is about to compute
//
// One engine step, for each scheduled sequence (chunked prefill and decode
// look the same; n is the chunk length, 1 for decode):
//
//   ATOMSERVE_RETURN_IF_ERROR(kv.Reserve(seq, n));   // pages for [c, c+n), COW
//   for each layer: kv.WriteKv(seq, layer, c, n, k, v)   // or GetSlots() +
//                   attention over kv.paged_kv()         //  a batched kernel
//   ATOMSERVE_RETURN_IF_ERROR(kv.Commit(seq, n));    // c += n; full pages
//                                                    //  become cacheable
//   after sampling: kv.AppendTokens(seq, {next_token});
//
// Lifecycle:
//   AddSequence(prompt)  reuses the longest cached prefix of full pages (up to
//                        all but opts.min_uncached_tokens tokens: the engine
//                        needs at least one computed position for logits);
//                        num_computed starts at the reused length
//   Fork(seq)            n > 1 sampling: the child shares every page holding
//                        computed K/V (ref counts up) and copies the tokens
//   Truncate(seq, len)   rollback (rejected draft tokens, stop strings):
//                        drops tokens and K/V from len on, releases pages
//   Free(seq)            finish, cancellation or preemption: pages are
//                        released at once (indexed ones stay cached)
//
// Copy-on-write: a page is writable by a sequence only when it holds the only
// reference and the page is not indexed by the prefix cache (indexed pages
// are immutable). Reserve() replaces every non-writable page in the range to
// be computed by a fresh page (copying it when it already holds computed
// positions), so a fork or a cached prefix is never modified in place.
//
// Scheduling without deadlock: Reserve() is all-or-nothing (on
// kResourceExhausted nothing was allocated); available_pages() counts free +
// evictable pages exactly; PagesNeeded(), PagesToAdmit() and
// PagesReleasedByFree() let the engine decide admission and preemption before
// it commits to a batch, and Free() makes pages available immediately.
//
// Errors: kNotFound for an unknown SeqId; kInvalidArgument for positions,
// lengths or layers out of range; kFailedPrecondition for writes to a page
// that was not reserved (or became shared since), or data access on a pool
// that is not host-addressable; kResourceExhausted when the pool cannot hold
// a reservation. Programmer bugs in the bookkeeping (a negative ref count)
// abort via ATOMSERVE_CHECK.
//
// Thread safety: none. The engine's scheduler thread owns the manager
// (externally synchronized); kernels may read and write page bytes through
// paged_kv() while no structural call (Reserve, Fork, Free, Truncate,
// AddSequence, Commit, EvictAllCached) is running. Spans returned by
// sequence() are invalidated by the next non-const call.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cpu/paged_attention.h"
#include "kvstore/block_table.h"
#include "kvstore/host_tier.h"
#include "kvstore/page_pool.h"
#include "kvstore/prefix_cache.h"

namespace atomserve::kvstore {

using SeqId = int64_t;

struct KvManagerOptions {
  KvGeometry geometry;
  int64_t num_pages = 0;
  // Seeds the prefix hash chain: model, weights and quantization recipe (and
  // anything else that changes K/V for the same tokens). The page geometry
  // is mixed in automatically.
  std::string model_identity = {};
  bool enable_prefix_caching = true;
  HostTier* host_tier = nullptr;  // optional second tier; not owned
};

struct AddSequenceOptions {
  bool use_prefix_cache = true;
  // Tokens at the end of the prompt never taken from the cache, so the engine
  // computes at least this many positions (and gets their logits).
  int64_t min_uncached_tokens = 1;
};

// Read-only view of one sequence.
struct SequenceView {
  std::span<const int32_t> tokens;
  std::span<const PageId> block_table;
  int64_t num_computed = 0;
  int64_t cached_prefix_tokens = 0;  // reused from the prefix cache at AddSequence
};

struct KvManagerStats {
  PagePoolStats pool;
  PrefixCacheStats prefix;
  int64_t sequences = 0;
  int64_t cow_copies = 0;  // pages copied because a shared page was written
};

class KvManager {
 public:
  // Host page storage. kInvalidArgument for a bad geometry or page count.
  static absl::StatusOr<std::unique_ptr<KvManager>> Create(const KvManagerOptions& options);
  // Caller-provided storage (e.g. device memory); its page size must match.
  static absl::StatusOr<std::unique_ptr<KvManager>> Create(const KvManagerOptions& options,
                                                           std::unique_ptr<PageStorage> storage);
  ~KvManager();
  KvManager(const KvManager&) = delete;
  KvManager& operator=(const KvManager&) = delete;

  const PageLayout& layout() const { return pool_->layout(); }
  int64_t tokens_per_page() const { return layout().tokens_per_page; }

  // --- Sequences ---------------------------------------------------------
  absl::StatusOr<SeqId> AddSequence(std::span<const int32_t> tokens, const AddSequenceOptions& opts = {});
  absl::Status AppendTokens(SeqId seq, std::span<const int32_t> ids);
  absl::StatusOr<SeqId> Fork(SeqId parent);
  absl::Status Truncate(SeqId seq, int64_t num_tokens);
  absl::Status Free(SeqId seq);
  absl::StatusOr<SequenceView> sequence(SeqId seq) const;
  int64_t num_sequences() const { return static_cast<int64_t>(seqs_.size()); }

  // --- Scheduling queries --------------------------------------------------
  // Pages an allocation can still get: free + evictable cached.
  int64_t available_pages() const { return pool_->num_available(); }
  // Pages Reserve(seq, n) allocates: new pages plus copy-on-write copies.
  // available_pages() drops by at most this much (a copied page that was
  // the sequence's own cached page goes back to the LRU list).
  absl::StatusOr<int64_t> PagesNeeded(SeqId seq, int64_t n) const;
  // Pages Free(seq) would return to available_pages() (those it alone holds).
  absl::StatusOr<int64_t> PagesReleasedByFree(SeqId seq) const;
  // Pages AddSequence(tokens) followed by Reserve(compute_tokens) would take
  // from available_pages(), counting cached prefix pages it would pin and
  // host-tier pages it would swap in. compute_tokens is capped at what is
  // left after the cached prefix.
  int64_t PagesToAdmit(std::span<const int32_t> tokens, int64_t compute_tokens,
                       const AddSequenceOptions& opts = {}) const;
  // Tokens of `tokens` the prefix cache would serve now (pool + host tier).
  int64_t CachedPrefixTokens(std::span<const int32_t> tokens, const AddSequenceOptions& opts = {}) const;

  // --- A step --------------------------------------------------------------
  // Makes positions [num_computed, num_computed + n) writable: allocates
  // missing pages and copies-on-write shared or indexed ones. Requires
  // num_computed + n <= tokens.size(). All-or-nothing; kResourceExhausted
  // when more than available_pages() are needed.
  absl::Status Reserve(SeqId seq, int64_t n);
  // slots[i] = slot of position start + i (page * T + offset) for kernels;
  // [start, start + n) must lie inside the block table.
  absl::Status GetSlots(SeqId seq, int64_t start, int64_t n, int32_t* slots) const;
  // k, v: [n, num_kv_heads, head_dim] floats for positions [start, start+n) of
  // `layer`, encoded (4-bit quantized) into the sequence's pages. The range
  // must lie in [num_computed, tokens.size()) on reserved, writable pages.
  absl::Status WriteKv(SeqId seq, int64_t layer, int64_t start, int64_t n, const float* k, const float* v);
  // Decodes positions [start, start+n) (inside the block table; positions at
  // or past num_computed hold what this step wrote, or stale bytes).
  absl::Status ReadKv(SeqId seq, int64_t layer, int64_t start, int64_t n, float* k, float* v) const;
  // Declares positions [num_computed, num_computed + n) written for every
  // layer; full pages among them are indexed for prefix reuse. The range must
  // be on reserved, writable pages (as for WriteKv).
  absl::Status Commit(SeqId seq, int64_t n);
  // The pool as the attention kernels see it (base is null when the storage
  // is not host-addressable).
  cpu::PagedKvCache paged_kv();
  // Appends the block tables of `seqs`, in order, as CSR arrays for
  // cpu::PagedAttentionBatch: page_indptr gets num_seqs + 1 entries (starting
  // with 0), page_ids the concatenated tables. kNotFound for an unknown id.
  absl::Status BlockTablesCsr(std::span<const SeqId> seqs, std::vector<int32_t>* page_indptr,
                              std::vector<int32_t>* page_ids) const;

  // --- Cache management and introspection --------------------------------
  // Evicts every cached, unreferenced page (host tier gets them); returns the count.
  int64_t EvictAllCached() { return pool_->EvictAllCached(); }
  KvManagerStats stats() const;
  const PagePool& pool() const { return *pool_; }
  const PrefixCache* prefix_cache() const { return prefix_.get(); }
  // Debug check of every invariant (pool states and lists, ref counts equal
  // to block-table references, prefix index, per-sequence hash chains).
  // kInternal describing the first breach. O(pages + tokens).
  absl::Status Validate() const;

 private:
  struct Sequence {
    std::vector<int32_t> tokens;
    BlockTable table;
    std::vector<uint64_t> page_hashes;  // chain hashes of full computed pages
    int64_t num_computed = 0;
    int64_t cached_prefix_tokens = 0;
  };

  KvManager(std::unique_ptr<PagePool> pool, const KvManagerOptions& options);

  absl::StatusOr<Sequence*> Find(SeqId seq);
  absl::StatusOr<const Sequence*> Find(SeqId seq) const;
  bool Writable(PageId page) const;
  int64_t PagesNeeded(const Sequence& s, int64_t n) const;
  absl::Status CheckWritable(const Sequence& s, int64_t start, int64_t n) const;
  absl::Status ReservePage(Sequence& s, int64_t index);
  void IndexFullPages(Sequence& s);
  void ReleasePages(Sequence& s, int64_t keep);
  int64_t MaxCachedPages(std::span<const int32_t> tokens, const AddSequenceOptions& opts) const;
  absl::Status ValidateSequence(SeqId id, const Sequence& s, std::vector<int64_t>& refs) const;

  std::unique_ptr<PagePool> pool_;
  std::unique_ptr<PrefixCache> prefix_;  // null when prefix caching is off
  absl::flat_hash_map<SeqId, Sequence> seqs_;
  SeqId next_id_ = 1;
  int64_t cow_copies_ = 0;
};

// The identity string the prefix chain is seeded with: model_identity plus
// the page geometry (so pools of different formats never share hashes).
std::string PrefixIdentity(const std::string& model_identity, const PageLayout& layout);

}  // namespace atomserve::kvstore
