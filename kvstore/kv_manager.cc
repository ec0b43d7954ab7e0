#include "kvstore/kv_manager.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kvstore/prefix_hash.h"

namespace atomserve::kvstore {

std::string PrefixIdentity(const std::string& model_identity, const PageLayout& layout) {
  return absl::StrCat(model_identity, "|kv:L", layout.num_layers, ",H", layout.num_kv_heads, ",D",
                      layout.head_dim, ",T", layout.tokens_per_page, ",dtype", static_cast<int>(layout.dtype));
}

absl::StatusOr<std::unique_ptr<KvManager>> KvManager::Create(const KvManagerOptions& options) {
  ATOMSERVE_ASSIGN_OR_RETURN(std::unique_ptr<PagePool> pool, PagePool::Create(options.geometry, options.num_pages));
  return std::unique_ptr<KvManager>(new KvManager(std::move(pool), options));
}

absl::StatusOr<std::unique_ptr<KvManager>> KvManager::Create(const KvManagerOptions& options,
                                                             std::unique_ptr<PageStorage> storage) {
  ATOMSERVE_ASSIGN_OR_RETURN(PageLayout layout, MakePageLayout(options.geometry));
  if (storage == nullptr || storage->page_bytes() != layout.page_bytes || storage->num_pages() < 1 ||
      storage->num_pages() * layout.tokens_per_page > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("KV manager: storage does not fit pages of ", layout.page_bytes,
                                                   " bytes"));
  }
  auto pool = std::make_unique<PagePool>(layout, std::move(storage));
  return std::unique_ptr<KvManager>(new KvManager(std::move(pool), options));
}

KvManager::KvManager(std::unique_ptr<PagePool> pool, const KvManagerOptions& options) : pool_(std::move(pool)) {
  if (options.enable_prefix_caching) {
    const uint64_t root = PrefixRootHash(PrefixIdentity(options.model_identity, pool_->layout()));
    prefix_ = std::make_unique<PrefixCache>(pool_.get(), root, options.host_tier);
  }
}

KvManager::~KvManager() = default;

absl::StatusOr<KvManager::Sequence*> KvManager::Find(SeqId seq) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return absl::NotFoundError(absl::StrCat("KV manager: no sequence ", seq));
  return &it->second;
}

absl::StatusOr<const KvManager::Sequence*> KvManager::Find(SeqId seq) const {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return absl::NotFoundError(absl::StrCat("KV manager: no sequence ", seq));
  return &it->second;
}

// --- Sequences ---------------------------------------------------------------

int64_t KvManager::MaxCachedPages(std::span<const int32_t> tokens, const AddSequenceOptions& opts) const {
  if (prefix_ == nullptr || !opts.use_prefix_cache) return 0;
  const int64_t cacheable = static_cast<int64_t>(tokens.size()) - std::max<int64_t>(opts.min_uncached_tokens, 0);
  return std::max<int64_t>(cacheable, 0) / tokens_per_page();
}

absl::StatusOr<SeqId> KvManager::AddSequence(std::span<const int32_t> tokens, const AddSequenceOptions& opts) {
  Sequence s{.tokens = {tokens.begin(), tokens.end()},
             .table = BlockTable(tokens_per_page()),
             .page_hashes = {},
             .num_computed = 0,
             .cached_prefix_tokens = 0};
  if (prefix_ != nullptr && opts.use_prefix_cache) {
    PrefixMatch match = prefix_->Acquire(tokens, MaxCachedPages(tokens, opts));
    for (PageId p : match.pages) s.table.Append(p);
    s.page_hashes = std::move(match.hashes);
    s.num_computed = s.cached_prefix_tokens = s.table.capacity();
  }
  const SeqId id = next_id_++;
  seqs_.emplace(id, std::move(s));
  return id;
}

absl::Status KvManager::AppendTokens(SeqId seq, std::span<const int32_t> ids) {
  ATOMSERVE_ASSIGN_OR_RETURN(Sequence * s, Find(seq));
  s->tokens.insert(s->tokens.end(), ids.begin(), ids.end());
  return absl::OkStatus();
}

absl::StatusOr<SeqId> KvManager::Fork(SeqId parent) {
  ATOMSERVE_ASSIGN_OR_RETURN(const Sequence* p, Find(parent));
  Sequence child{.tokens = p->tokens,
                 .table = BlockTable(tokens_per_page()),
                 .page_hashes = p->page_hashes,
                 .num_computed = p->num_computed,
                 .cached_prefix_tokens = p->cached_prefix_tokens};
  const int64_t shared = PagesForTokens(p->num_computed, tokens_per_page());
  for (int64_t i = 0; i < shared; ++i) {
    pool_->Ref(p->table.page(i));
    child.table.Append(p->table.page(i));
  }
  const SeqId id = next_id_++;
  seqs_.emplace(id, std::move(child));
  return id;
}

void KvManager::ReleasePages(Sequence& s, int64_t keep) {
  // Last page first: released pages enter the LRU list oldest-first, so a
  // sequence's tail is evicted before the prefix other requests may share.
  while (s.table.num_pages() > keep) pool_->Unref(s.table.PopBack());
}

absl::Status KvManager::Truncate(SeqId seq, int64_t num_tokens) {
  ATOMSERVE_ASSIGN_OR_RETURN(Sequence * s, Find(seq));
  if (num_tokens < 0 || num_tokens > static_cast<int64_t>(s->tokens.size()))
    return absl::InvalidArgumentError(
        absl::StrCat("Truncate: length ", num_tokens, " outside [0, ", s->tokens.size(), "]"));
  s->tokens.resize(num_tokens);
  s->num_computed = std::min(s->num_computed, num_tokens);
  s->cached_prefix_tokens = std::min(s->cached_prefix_tokens, num_tokens);
  s->page_hashes.resize(std::min<int64_t>(s->page_hashes.size(), s->num_computed / tokens_per_page()));
  ReleasePages(*s, std::min(s->table.num_pages(), PagesForTokens(num_tokens, tokens_per_page())));
  return absl::OkStatus();
}

absl::Status KvManager::Free(SeqId seq) {
  ATOMSERVE_ASSIGN_OR_RETURN(Sequence * s, Find(seq));
  ReleasePages(*s, 0);
  seqs_.erase(seq);
  return absl::OkStatus();
}

absl::StatusOr<SequenceView> KvManager::sequence(SeqId seq) const {
  ATOMSERVE_ASSIGN_OR_RETURN(const Sequence* s, Find(seq));
  return SequenceView{s->tokens, s->table.pages(), s->num_computed, s->cached_prefix_tokens};
}

// --- Scheduling queries --------------------------------------------------------

bool KvManager::Writable(PageId page) const { return pool_->ref_count(page) == 1 && !pool_->cacheable(page); }

int64_t KvManager::PagesNeeded(const Sequence& s, int64_t n) const {
  if (n <= 0) return 0;
  const int64_t T = tokens_per_page();
  const int64_t first = s.num_computed / T, last = (s.num_computed + n - 1) / T;
  int64_t needed = 0;
  for (int64_t i = first; i <= last; ++i) needed += i >= s.table.num_pages() || !Writable(s.table.page(i));
  return needed;
}

absl::StatusOr<int64_t> KvManager::PagesNeeded(SeqId seq, int64_t n) const {
  ATOMSERVE_ASSIGN_OR_RETURN(const Sequence* s, Find(seq));
  if (n < 0) return absl::InvalidArgumentError("PagesNeeded: negative token count");
  return PagesNeeded(*s, n);
}

absl::StatusOr<int64_t> KvManager::PagesReleasedByFree(SeqId seq) const {
  ATOMSERVE_ASSIGN_OR_RETURN(const Sequence* s, Find(seq));
  // Pages this sequence references more than once cannot occur (a table
  // never repeats a page), so "alone" means ref count 1.
  return std::ranges::count_if(s->table.pages(), [&](PageId p) { return pool_->ref_count(p) == 1; });
}

int64_t KvManager::CachedPrefixTokens(std::span<const int32_t> tokens, const AddSequenceOptions& opts) const {
  if (prefix_ == nullptr || !opts.use_prefix_cache) return 0;
  return prefix_->Peek(tokens, MaxCachedPages(tokens, opts)).pages() * tokens_per_page();
}

int64_t KvManager::PagesToAdmit(std::span<const int32_t> tokens, int64_t compute_tokens,
                                const AddSequenceOptions& opts) const {
  PrefixPeek peek;
  if (prefix_ != nullptr && opts.use_prefix_cache) peek = prefix_->Peek(tokens, MaxCachedPages(tokens, opts));
  const int64_t cached = peek.pages() * tokens_per_page();
  const int64_t n = std::clamp<int64_t>(compute_tokens, 0, static_cast<int64_t>(tokens.size()) - cached);
  const int64_t new_pages = PagesForTokens(cached + n, tokens_per_page()) - peek.pages();
  return peek.evictable_pages + peek.host_pages + new_pages;
}

// --- A step --------------------------------------------------------------------

absl::Status KvManager::ReservePage(Sequence& s, int64_t index) {
  if (index < s.table.num_pages() && Writable(s.table.page(index))) return absl::OkStatus();
  ATOMSERVE_ASSIGN_OR_RETURN(PageId fresh, pool_->Allocate());
  if (index == s.table.num_pages()) {
    s.table.Append(fresh);
    return absl::OkStatus();
  }
  const PageId old = s.table.page(index);
  if (index * tokens_per_page() < s.num_computed) {  // holds computed positions: copy them
    if (absl::Status st = pool_->storage().CopyPage(old, fresh); !st.ok()) {
      pool_->Unref(fresh);
      return st;
    }
    ++cow_copies_;
  }
  s.table.Set(index, fresh);
  pool_->Unref(old);
  return absl::OkStatus();
}

absl::Status KvManager::Reserve(SeqId seq, int64_t n) {
  ATOMSERVE_ASSIGN_OR_RETURN(Sequence * s, Find(seq));
  if (n < 0 || s->num_computed + n > static_cast<int64_t>(s->tokens.size()))
    return absl::InvalidArgumentError(absl::StrCat("Reserve: ", n, " tokens after ", s->num_computed,
                                                   " computed exceeds the ", s->tokens.size(), " known tokens"));
  const int64_t needed = PagesNeeded(*s, n);
  if (needed > available_pages())
    return absl::ResourceExhaustedError(absl::StrCat("KV cache: sequence ", seq, " needs ", needed,
                                                     " pages, ", available_pages(), " available"));
  if (n == 0) return absl::OkStatus();
  const int64_t T = tokens_per_page();
  for (int64_t i = s->num_computed / T; i <= (s->num_computed + n - 1) / T; ++i) {
    ATOMSERVE_RETURN_IF_ERROR(ReservePage(*s, i));  // cannot run out: counted above
  }
  return absl::OkStatus();
}

absl::Status KvManager::GetSlots(SeqId seq, int64_t start, int64_t n, int32_t* slots) const {
  ATOMSERVE_ASSIGN_OR_RETURN(const Sequence* s, Find(seq));
  if (start < 0 || n < 0 || start + n > s->table.capacity())
    return absl::InvalidArgumentError(absl::StrCat("GetSlots: positions [", start, ", ", start + n,
                                                   ") outside the ", s->table.capacity(), " reserved"));
  for (int64_t i = 0; i < n; ++i) slots[i] = s->table.SlotOf(start + i);
  return absl::OkStatus();
}

absl::Status KvManager::CheckWritable(const Sequence& s, int64_t start, int64_t n) const {
  const int64_t end = start + n;
  if (start < s.num_computed || n < 0 || end > static_cast<int64_t>(s.tokens.size()) || end > s.table.capacity())
    return absl::InvalidArgumentError(absl::StrCat("KV write: positions [", start, ", ", end, ") outside [",
                                                   s.num_computed, ", min(", s.tokens.size(), ", ",
                                                   s.table.capacity(), "))"));
  for (int64_t i = start / tokens_per_page(); n > 0 && i <= (end - 1) / tokens_per_page(); ++i) {
    if (!Writable(s.table.page(i)))
      return absl::FailedPreconditionError(
          absl::StrCat("KV write: page ", s.table.page(i), " is shared or cached; Reserve() first"));
  }
  return absl::OkStatus();
}

absl::Status KvManager::WriteKv(SeqId seq, int64_t layer, int64_t start, int64_t n, const float* k,
                                const float* v) {
  ATOMSERVE_ASSIGN_OR_RETURN(const Sequence* s, Find(seq));
  ATOMSERVE_RETURN_IF_ERROR(CheckWritable(*s, start, n));
  if (pool_->storage().host_data() == nullptr)
    return absl::FailedPreconditionError("WriteKv: the page storage is not host-addressable");
  std::vector<int32_t> slots(n);
  for (int64_t i = 0; i < n; ++i) slots[i] = s->table.SlotOf(start + i);
  return cpu::WritePagedKv(paged_kv(), layer, slots.data(), n, k, v, nullptr);
}

absl::Status KvManager::ReadKv(SeqId seq, int64_t layer, int64_t start, int64_t n, float* k, float* v) const {
  if (pool_->storage().host_data() == nullptr)
    return absl::FailedPreconditionError("ReadKv: the page storage is not host-addressable");
  std::vector<int32_t> slots(std::max<int64_t>(n, 0));
  ATOMSERVE_RETURN_IF_ERROR(GetSlots(seq, start, n, slots.data()));
  const cpu::PagedKvCache view{const_cast<uint8_t*>(pool_->storage().host_data()), pool_->num_pages(), layout()};
  return cpu::ReadPagedKv(view, layer, slots.data(), n, k, v, nullptr);
}

void KvManager::IndexFullPages(Sequence& s) {
  const int64_t T = tokens_per_page();
  for (int64_t i = static_cast<int64_t>(s.page_hashes.size()); i < s.num_computed / T; ++i) {
    const uint64_t parent = i == 0 ? prefix_->root_hash() : s.page_hashes[i - 1];
    const auto page_tokens = std::span<const int32_t>(s.tokens).subspan(i * T, T);
    const uint64_t hash = PageHash(parent, page_tokens);
    s.page_hashes.push_back(hash);
    prefix_->Insert(s.table.page(i), hash, parent, page_tokens);  // declined for duplicates: stays private
  }
}

absl::Status KvManager::Commit(SeqId seq, int64_t n) {
  ATOMSERVE_ASSIGN_OR_RETURN(Sequence * s, Find(seq));
  ATOMSERVE_RETURN_IF_ERROR(CheckWritable(*s, s->num_computed, n));
  s->num_computed += n;
  if (prefix_ != nullptr) IndexFullPages(*s);
  return absl::OkStatus();
}

cpu::PagedKvCache KvManager::paged_kv() {
  return cpu::PagedKvCache{pool_->storage().host_data(), pool_->num_pages(), layout()};
}

absl::Status KvManager::BlockTablesCsr(std::span<const SeqId> seqs, std::vector<int32_t>* page_indptr,
                                      std::vector<int32_t>* page_ids) const {
  page_indptr->assign(1, 0);
  page_ids->clear();
  for (SeqId seq : seqs) {
    ATOMSERVE_ASSIGN_OR_RETURN(const Sequence* s, Find(seq));
    page_ids->insert(page_ids->end(), s->table.pages().begin(), s->table.pages().end());
    page_indptr->push_back(static_cast<int32_t>(page_ids->size()));
  }
  return absl::OkStatus();
}

// --- Introspection ------------------------------------------------------------

KvManagerStats KvManager::stats() const {
  KvManagerStats s;
  s.pool = pool_->stats();
  if (prefix_ != nullptr) s.prefix = prefix_->stats();
  s.sequences = num_sequences();
  s.cow_copies = cow_copies_;
  return s;
}

absl::Status KvManager::ValidateSequence(SeqId id, const Sequence& s, std::vector<int64_t>& refs) const {
  auto fail = [id](auto&&... parts) { return absl::InternalError(absl::StrCat("sequence ", id, ": ", parts...)); };
  const int64_t T = tokens_per_page();
  const int64_t len = static_cast<int64_t>(s.tokens.size());
  if (s.num_computed < 0 || s.num_computed > len) return fail("num_computed ", s.num_computed, " of ", len);
  if (s.table.num_pages() < PagesForTokens(s.num_computed, T) || s.table.num_pages() > PagesForTokens(len, T))
    return fail(s.table.num_pages(), " pages for ", s.num_computed, " computed of ", len, " tokens");
  const int64_t full = prefix_ != nullptr ? s.num_computed / T : 0;
  if (static_cast<int64_t>(s.page_hashes.size()) != full)
    return fail(s.page_hashes.size(), " page hashes for ", full, " full computed pages");
  for (int64_t i = 0; i < s.table.num_pages(); ++i) {
    const PageId p = s.table.page(i);
    if (p < 0 || p >= pool_->num_pages()) return fail("page id ", p);
    if (++refs[p] > pool_->ref_count(p)) return fail("page ", p, " referenced beyond its ref count");
    if (i >= full) continue;
    const uint64_t parent = i == 0 ? prefix_->root_hash() : s.page_hashes[i - 1];
    const auto page_tokens = std::span<const int32_t>(s.tokens).subspan(i * T, T);
    if (PageHash(parent, page_tokens) != s.page_hashes[i]) return fail("hash chain broken at page ", i);
    if (prefix_->indexed(p) && prefix_->page_hash(p) != s.page_hashes[i])
      return fail("page ", p, " is indexed under another prefix");
  }
  for (int64_t i = full; prefix_ != nullptr && i < s.table.num_pages(); ++i) {
    // An indexed page past the computed prefix must be the partially
    // truncated one, still to be copied by Reserve().
    if (prefix_->indexed(s.table.page(i)) && i != s.num_computed / T)
      return fail("indexed page ", s.table.page(i), " at index ", i, " past the computed prefix");
  }
  return absl::OkStatus();
}

absl::Status KvManager::Validate() const {
  ATOMSERVE_RETURN_IF_ERROR(pool_->Validate());
  if (prefix_ != nullptr) ATOMSERVE_RETURN_IF_ERROR(prefix_->Validate());
  std::vector<int64_t> refs(pool_->num_pages(), 0);
  for (const auto& [id, s] : seqs_) ATOMSERVE_RETURN_IF_ERROR(ValidateSequence(id, s, refs));
  for (PageId p = 0; p < pool_->num_pages(); ++p) {
    if (refs[p] != pool_->ref_count(p))
      return absl::InternalError(absl::StrCat("page ", p, " has ref count ", pool_->ref_count(p), " but ",
                                              refs[p], " block-table references"));
  }
  return absl::OkStatus();
}

}  // namespace atomserve::kvstore
