#include "attention/attention.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "kernels/ops.h"
#include "kv/kv_kernels.h"

namespace leanlm {

namespace {

// Slots are scored in chunks of at most this many, with an online softmax across chunks, so the
// score buffer stays small at any context length.
constexpr int kSlotChunk = 2048;
// Sparse attention keeps slots in spans of this many consecutive visible slots.
constexpr int kSparseSpan = 32;
// A split of a decode step's slots is worth a thread only above this many slots.
constexpr int kMinSlotsPerSplit = 256;

// Maximal runs of slots whose positions lie in [lo, hi].
void visible_ranges(const KvStore& kv, int lo, int hi, std::vector<SlotRange>& out) {
  out.clear();
  const int n = kv.n_slots();
  const int32_t* pos = kv.slot_positions();
  int start = -1;
  for (int s = 0; s <= n; ++s) {
    const bool vis = s < n && pos[s] >= 0 && pos[s] >= lo && pos[s] <= hi;
    if (vis && start < 0) start = s;
    if (!vis && start >= 0) {
      out.push_back({start, s});
      start = -1;
    }
  }
}

// The sub-ranges of `all` that make up part `split` of `n_splits` equal shares of their slots.
void share_of(const std::vector<SlotRange>& all, int split, int n_splits, std::vector<SlotRange>& out) {
  int64_t total = 0;
  for (const auto& r : all) total += r.s1 - r.s0;
  const int64_t b = total * split / n_splits, e = total * (split + 1) / n_splits;
  out.clear();
  int64_t seen = 0;
  for (const auto& r : all) {
    const int64_t len = r.s1 - r.s0;
    const int64_t lo = std::max<int64_t>(b, seen), hi = std::min<int64_t>(e, seen + len);
    if (lo < hi) out.push_back({int(r.s0 + (lo - seen)), int(r.s0 + (hi - seen))});
    seen += len;
  }
}

// Calls fn(pieces, n) for consecutive chunks of up to kSlotChunk slots of `ranges`; a chunk's pieces
// are the slot ranges it covers, in order (a chunk may span several ranges). The softmax works per
// chunk, so chunks of visible slots (not of ranges) give a sequence reading a shared prefix, whose
// parts split the ranges, exactly what it gets from one store holding the same tokens.
template <typename Fn>
void for_chunks(const std::vector<SlotRange>& ranges, std::vector<SlotRange>& pieces, Fn&& fn) {
  size_t ri = 0;
  int next = ranges.empty() ? 0 : ranges[0].s0;
  while (ri < ranges.size()) {
    pieces.clear();
    int nc = 0;
    while (ri < ranges.size() && nc < kSlotChunk) {
      const int take = std::min(ranges[ri].s1 - next, kSlotChunk - nc);
      pieces.push_back({next, next + take});
      nc += take, next += take;
      if (next == ranges[ri].s1 && ++ri < ranges.size()) next = ranges[ri].s0;
    }
    fn(static_cast<const std::vector<SlotRange>&>(pieces), nc);
  }
}

}  // namespace

Attention::Attention(int n_threads) : scratch_(std::max(1, n_threads)) {}

void Attention::run_task(const Task& task, const AttnShape& sh, const std::vector<AttnToken>& tokens, const float* q,
                         float* out, Scratch& sc, float* part_out, float* part_max, float* part_sum) {
  const int D = sh.head_dim, H = sh.n_head, G = sh.n_head / sh.n_head_kv, h = task.kv_head;
  const int nq = task.count * G;  // query rows: token-major, then the G heads sharing this KV head
  const KvStore& kv = *tokens[task.first].kv;
  const KvKernels& kk = best_kv_kernels();

  int pmin = INT_MAX, pmax = INT_MIN;
  for (int t = 0; t < task.count; ++t) {
    pmin = std::min(pmin, tokens[task.first + t].pos);
    pmax = std::max(pmax, tokens[task.first + t].pos);
  }
  thread_local std::vector<SlotRange> all, mine;
  visible_ranges(kv, sh.window > 0 ? pmin - sh.window + 1 : INT_MIN, pmax, all);
  if (task.n_splits > 1) share_of(all, task.split, task.n_splits, mine);
  else mine = all;

  // Gather this task's queries: [nq][D].
  if (sc.q.size() < size_t(nq) * D) sc.q.resize(size_t(nq) * D);
  for (int t = 0; t < task.count; ++t)
    std::memcpy(sc.q.data() + size_t(t) * G * D, q + (size_t(task.first + t) * H + size_t(h) * G) * D,
                size_t(G) * D * sizeof(float));

  AttentionObserver* obs = tokens[task.first].observer;
  if (task.split == 0 && obs && obs->wants_queries())
    for (int t = 0; t < task.count; ++t)
      obs->on_queries(h, tokens[task.first + t].pos, sc.q.data() + size_t(t) * G * D, G, D);

  if (sc.out.size() < size_t(nq) * D) sc.out.resize(size_t(nq) * D);
  std::fill(sc.out.begin(), sc.out.begin() + size_t(nq) * D, 0.f);
  const int top_k = tokens[task.first].top_k;
  if (top_k > 0 && task.decode && task.n_splits == 1 && !(obs && obs->wants_weights())) {
    size_t n_vis = 0;
    for (const SlotRange& r : mine) n_vis += size_t(r.s1 - r.s0);
    if (n_vis > size_t(top_k)) return run_sparse_task(task, sh, mine, top_k, kv, out, sc);
  }
  if (sc.scores.size() < size_t(nq) * kSlotChunk) sc.scores.resize(size_t(nq) * kSlotChunk);
  std::vector<float>& row_max = sc.row_max;
  std::vector<float>& row_sum = sc.row_sum;
  row_max.assign(nq, -INFINITY);
  row_sum.assign(nq, 0.f);

  size_t n_visible = 0;
  for (const SlotRange& r : mine) n_visible += size_t(r.s1 - r.s0);
  const bool observe = obs && obs->wants_weights();
  const bool keep = observe && task.n_splits == 1 && n_visible * size_t(nq) <= kept_limit_;
  if (keep) {
    if (sc.kept.size() < n_visible * nq) sc.kept.resize(n_visible * nq);
    sc.kept_max.clear();
  }
  size_t col = 0;  // first visible slot of the chunk among the task's visible slots

  const int32_t* slot_pos = kv.slot_positions();
  thread_local std::vector<SlotRange> piece_buf;
  thread_local std::vector<int32_t> chunk_pos;  // [nc] the chunk's key positions
  for_chunks(mine, piece_buf, [&](const std::vector<SlotRange>& pieces, int nc) {
    float* S = sc.scores.data();  // [nq][nc]
    chunk_pos.resize(nc);
    for (int j = 0; const SlotRange& pc : pieces) {
      kv.scores(h, sc.q.data(), nq, D, pc.s0, pc.s1, S + j, nc);
      std::copy(slot_pos + pc.s0, slot_pos + pc.s1, chunk_pos.begin() + j);
      j += pc.s1 - pc.s0;
    }
    // The chunk needs a mask only when some of its keys are hidden from some query of the task (a
    // prompt block's causal triangle, a window's edge); a decode step's never does.
    bool masked = false;
    if (task.count > 1)
      for (int j = 0; j < nc && !masked; ++j) {
        const int kp = chunk_pos[j];
        masked = kp > pmin || (sh.window > 0 && pmax - kp >= sh.window);
      }
    for (int i = 0; i < nq; ++i) {
      const int p = tokens[task.first + i / G].pos;
      float* row = S + size_t(i) * nc;
      float m;
      if (masked) {
        m = -INFINITY;
        for (int j = 0; j < nc; ++j) {
          const int kp = chunk_pos[j];
          if (kp > p || (sh.window > 0 && p - kp >= sh.window)) row[j] = -INFINITY;
          else m = std::max(m, row[j]);
        }
      } else {
        m = kk.max_of(row, nc);
      }
      if (m == -INFINITY) {  // nothing visible to this query in the chunk
        std::fill(row, row + nc, 0.f);
        continue;
      }
      if (m > row_max[i]) {  // rescale what was accumulated under the old maximum
        const float f = row_max[i] == -INFINITY ? 0.f : std::exp(row_max[i] - m);
        scale(sc.out.data() + size_t(i) * D, f, D);
        row_sum[i] *= f;
        row_max[i] = m;
      }
      row_sum[i] += kk.exp_shift_sum(row, nc, row_max[i]);
    }
    if (keep) {
      for (int i = 0; i < nq; ++i) {
        std::memcpy(sc.kept.data() + size_t(i) * n_visible + col, S + size_t(i) * nc, size_t(nc) * sizeof(float));
        sc.kept_max.push_back(row_max[i]);
      }
    }
    col += size_t(nc);
    for (int j = 0; const SlotRange& pc : pieces) {
      kv.accumulate(h, S + j, nq, nc, pc.s0, pc.s1, sc.out.data(), D);
      j += pc.s1 - pc.s0;
    }
  });

  if (task.n_splits > 1) {  // partial results, merged by run()
    std::memcpy(part_out, sc.out.data(), size_t(nq) * D * sizeof(float));
    std::copy(row_max.begin(), row_max.end(), part_max);
    std::copy(row_sum.begin(), row_sum.end(), part_sum);
    return;
  }
  for (int i = 0; i < nq; ++i) {
    const int t = task.first + i / G, g = i % G;
    float* dst = out + (size_t(t) * H + size_t(h) * G + g) * D;
    const float inv = row_sum[i] > 0.f ? 1.f / row_sum[i] : 0.f;
    for (int e = 0; e < D; ++e) dst[e] = sc.out[size_t(i) * D + e] * inv;
  }
  if (observe) report_weights(task, sh, tokens, mine, sc, keep);
}

void Attention::run_sparse_task(const Task& task, const AttnShape& sh, const std::vector<SlotRange>& ranges, int top_k,
                                const KvStore& kv, float* out, Scratch& sc) {
  const int D = sh.head_dim, H = sh.n_head, G = sh.n_head / sh.n_head_kv, h = task.kv_head, nq = G;
  const KvKernels& kk = best_kv_kernels();
  int n = 0;
  for (const SlotRange& r : ranges) n += r.s1 - r.s0;
  // Scores of every visible slot: [nq][n], and each column's best over the rows.
  if (sc.scores.size() < size_t(nq) * n) sc.scores.resize(size_t(nq) * n);
  float* S = sc.scores.data();
  for (int j = 0; const SlotRange& r : ranges) {
    kv.scores(h, sc.q.data(), nq, D, r.s0, r.s1, S + j, n);
    j += r.s1 - r.s0;
  }
  if (sc.kept.size() < size_t(n)) sc.kept.resize(n);
  float* best = sc.kept.data();
  std::copy(S, S + n, best);
  for (int i = 1; i < nq; ++i)
    for (int j = 0; j < n; ++j) best[j] = std::max(best[j], S[size_t(i) * n + j]);
  // Columns are kept in spans of kSparseSpan consecutive visible slots (the stores' blocks), so that
  // values are read in a few contiguous runs. The first span (the attention sinks: StreamingLLM's
  // first tokens get weight whatever their keys say) and the spans holding the newest kSparseSpan
  // slots (the recent window) are always kept; the budget's other spans go to the highest best
  // scores (ties to the earlier span: the same choice on every run). The reserved spans count
  // against K, and are kept even where they alone exceed it.
  const int n_spans = (n + kSparseSpan - 1) / kSparseSpan;
  const int first_recent = std::max(0, n - kSparseSpan) / kSparseSpan;
  const int n_reserved = std::min(n_spans, 1 + (n_spans - std::max(1, first_recent)));
  const int keep = std::min(n_spans, std::max(n_reserved, (top_k + kSparseSpan - 1) / kSparseSpan));
  thread_local std::vector<float> span_best;
  thread_local std::vector<int> spans;
  span_best.assign(n_spans, -INFINITY);
  for (int j = 0; j < n; ++j)  // NaN (an overflowing fp16 key) ranks last: the order must stay strict
    if (!std::isnan(best[j])) span_best[j / kSparseSpan] = std::max(span_best[j / kSparseSpan], best[j]);
  spans.resize(n_spans);
  std::iota(spans.begin(), spans.end(), 0);
  const auto reserved = [&](int sp) { return sp == 0 || sp >= first_recent; };
  std::nth_element(spans.begin(), spans.begin() + (keep - 1), spans.end(), [&](int a, int b) {
    if (reserved(a) != reserved(b)) return reserved(a);
    return span_best[a] != span_best[b] ? span_best[a] > span_best[b] : a < b;
  });
  spans.resize(keep);
  std::sort(spans.begin(), spans.end());
  std::vector<int>& cols = sc.cols;
  cols.clear();
  for (int sp : spans)
    for (int j = sp * kSparseSpan; j < std::min(n, (sp + 1) * kSparseSpan); ++j) cols.push_back(j);
  top_k = int(cols.size());
  // Softmax over the kept columns: weights [nq][k] in place of the first k columns of S's rows.
  std::vector<float>& row_max = sc.row_max;
  std::vector<float>& row_sum = sc.row_sum;
  row_max.assign(nq, -INFINITY);
  row_sum.assign(nq, 0.f);
  if (sc.out.size() < size_t(nq) * D) sc.out.resize(size_t(nq) * D);
  std::fill(sc.out.begin(), sc.out.begin() + size_t(nq) * D, 0.f);
  thread_local AlignedVec<float> w;
  if (w.size() < size_t(nq) * top_k) w.resize(size_t(nq) * top_k);
  for (int i = 0; i < nq; ++i) {
    float* wi = w.data() + size_t(i) * top_k;
    for (int c = 0; c < top_k; ++c) wi[c] = S[size_t(i) * n + cols[c]];
    row_max[i] = kk.max_of(wi, top_k);
    row_sum[i] = kk.exp_shift_sum(wi, top_k, row_max[i]);
  }
  // Columns -> slots, then the values of each run of consecutive kept slots in one call.
  for (int c = 0, j = 0, ri = 0; c < top_k; ++c) {
    while (cols[c] >= j + (ranges[ri].s1 - ranges[ri].s0)) j += ranges[ri].s1 - ranges[ri].s0, ++ri;
    cols[c] = ranges[ri].s0 + (cols[c] - j);
  }
  for (int a = 0; a < top_k;) {
    int b = a + 1;
    while (b < top_k && cols[b] == cols[b - 1] + 1) ++b;
    kv.accumulate(h, w.data() + a, nq, top_k, cols[a], cols[b - 1] + 1, sc.out.data(), D);
    a = b;
  }
  for (int g = 0; g < G; ++g) {
    float* dst = out + (size_t(task.first) * H + size_t(h) * G + g) * D;
    const float inv = row_sum[g] > 0.f ? 1.f / row_sum[g] : 0.f;
    for (int e = 0; e < D; ++e) dst[e] = sc.out[size_t(g) * D + e] * inv;
  }
}

// For observers that want them (eviction policies): the final softmax weights of every visible
// slot, averaged over the query heads that share the KV head, in one report per token and KV head
// that covers all the slots it sees (policies compare a weight with 1/visible). They come from the
// exponentials kept during the pass, rescaled to the final maximum and sum (from_kept); when a
// task's slots were too many to keep, each token's scores are computed a second time.
void Attention::report_weights(const Task& task, const AttnShape& sh, const std::vector<AttnToken>& tokens,
                               const std::vector<SlotRange>& ranges, Scratch& sc, bool from_kept) {
  const int D = sh.head_dim, G = sh.n_head / sh.n_head_kv, h = task.kv_head, nq = task.count * G;
  const KvStore& kv = *tokens[task.first].kv;
  const int32_t* slot_pos = kv.slot_positions();
  thread_local std::vector<float> w;        // [visible slots] of one token
  thread_local std::vector<int32_t> kpos;   // [visible slots] the key positions (-1: not visible to it)
  thread_local std::vector<float> rescored;  // [G][chunk] a token's scores, computed again
  thread_local std::vector<SlotRange> piece_buf;
  size_t n_visible = 0;
  for (const SlotRange& r : ranges) n_visible += size_t(r.s1 - r.s0);
  w.resize(n_visible);
  kpos.resize(n_visible);
  for (int t = 0; t < task.count; ++t) {
    const int p = tokens[task.first + t].pos;
    std::fill(w.begin(), w.end(), 0.f);
    size_t col = 0, chunk = 0;
    for_chunks(ranges, piece_buf, [&](const std::vector<SlotRange>& pieces, int nc) {
      int32_t* kp = kpos.data() + col;
      for (int j = 0; const SlotRange& pc : pieces)
        for (int slot = pc.s0; slot < pc.s1; ++slot, ++j) {
          const int k = slot_pos[slot];
          kp[j] = k >= 0 && k <= p && !(sh.window > 0 && p - k >= sh.window) ? k : -1;
        }
      if (!from_kept) {
        rescored.resize(size_t(G) * nc);
        for (int j = 0; const SlotRange& pc : pieces) {
          kv.scores(h, sc.q.data() + size_t(t) * G * D, G, D, pc.s0, pc.s1, rescored.data() + j, nc);
          j += pc.s1 - pc.s0;
        }
      }
      float* wc = w.data() + col;
      for (int g = 0; g < G; ++g) {
        const int i = t * G + g;
        if (sc.row_sum[i] <= 0.f) continue;
        const float inv = 1.f / (sc.row_sum[i] * float(G));
        if (from_kept) {  // exp(s - m_chunk) * exp(m_chunk - m_final) / sum
          const float* e = sc.kept.data() + size_t(i) * n_visible + col;
          const float m = sc.kept_max[chunk * nq + i];
          const float f = m == -INFINITY ? 0.f : std::exp(m - sc.row_max[i]) * inv;
          for (int j = 0; j < nc; ++j)
            if (kp[j] >= 0) wc[j] += e[j] * f;
        } else {
          const float* row = rescored.data() + size_t(g) * nc;
          for (int j = 0; j < nc; ++j)
            if (kp[j] >= 0) wc[j] += std::exp(row[j] - sc.row_max[i]) * inv;
        }
      }
      col += size_t(nc);
      ++chunk;
    });
    tokens[task.first].observer->on_weights(h, p, kpos.data(), w.data(), int(n_visible));
  }
}

void Attention::run(ThreadPool& pool, const AttnShape& sh, const std::vector<AttnToken>& tokens, const float* q,
                    float* out) {
  const int T = int(tokens.size());
  const int G = sh.n_head / sh.n_head_kv, D = sh.head_dim;
  std::vector<Task>& tasks = tasks_;
  tasks.clear();
  for (int first = 0; first < T;) {
    int end = first;
    while (end < T && tokens[end].kv == tokens[first].kv) ++end;
    for (int b = first; b < end; b += kQueryBlock)
      for (int h = 0; h < sh.n_head_kv; ++h) tasks.push_back({b, std::min(kQueryBlock, end - b), h, 0, 1, end - first == 1});
    first = end;
  }

  // Decode (single-token tasks) with few tasks per thread: split each task's slots between threads,
  // so that every thread gets the same share (a step of 3 KV heads on 2 threads). Not for observers
  // that want the final attention weights (eviction policies): those need one softmax per task.
  // The split depends only on the tokens' positions, never on how the slots are laid out, so a
  // sequence reading a shared prefix (more slots, some hidden) computes what a single store does;
  // prompt blocks are never split, so a prompt's tokens are computed alike however it is chunked.
  const int nth = pool.size();
  int n_splits = 1;
  bool any_weights = false;
  for (const Task& t : tasks) {  // one softmax per task: observers of the weights, sparse steps
    const AttentionObserver* obs = tokens[t.first].observer;
    any_weights |= (obs && obs->wants_weights()) || tokens[t.first].top_k > 0;
  }
  bool single_tokens = true;
  for (const Task& t : tasks) single_tokens &= t.count == 1;
  if (single_tokens && int(tasks.size()) < 4 * nth && !any_weights) {
    int max_slots = 0;
    for (const Task& t : tasks) {
      const AttnToken& tk = tokens[t.first];
      const int seen = sh.window > 0 ? std::min(tk.pos + 1, sh.window) : tk.pos + 1;  // positions it can see
      max_slots = std::max(max_slots, std::min(seen, tk.kv->n_slots()));
    }
    const int want = nth / std::gcd(int(tasks.size()), nth);
    n_splits = std::max(1, std::min(want, max_slots / kMinSlotsPerSplit));
  }
  if (n_splits > 1) {
    split_tasks_.clear();
    for (const Task& t : tasks)
      for (int s = 0; s < n_splits; ++s) split_tasks_.push_back({t.first, t.count, t.kv_head, s, n_splits});
    tasks.swap(split_tasks_);
    size_t rows = 0;
    for (const Task& t : tasks) rows += size_t(t.count) * G;
    part_out_.resize(rows * D);
    part_max_.resize(rows);
    part_sum_.resize(rows);
  }
  if (int(scratch_.size()) < nth) scratch_.resize(nth);

  std::vector<size_t>& row_offset = row_offset_;  // each task's first row in the partials
  row_offset.assign(tasks.size() + 1, 0);
  for (size_t i = 0; i < tasks.size(); ++i) row_offset[i + 1] = row_offset[i] + size_t(tasks[i].count) * G;
  std::atomic<size_t> next{0};
  pool.run([&](int ith, int) {
    for (size_t i; (i = next.fetch_add(1)) < tasks.size();) {
      const bool part = n_splits > 1;
      run_task(tasks[i], sh, tokens, q, out, scratch_[ith], part ? part_out_.data() + row_offset[i] * D : nullptr,
               part ? part_max_.data() + row_offset[i] : nullptr, part ? part_sum_.data() + row_offset[i] : nullptr);
    }
  });
  if (n_splits > 1) merge_splits(sh, tasks, n_splits, out);

  // A query head holding a NaN (a model that has diverged) gets NaN outputs on every kernel set, dense
  // or sparse: the kernels' max over scores treats NaN differently per ISA (the scalar fmax skips it).
  const size_t n_rows = tokens.size() * size_t(sh.n_head);
  for (size_t r = 0; r < n_rows; ++r) {
    const float* qr = q + r * D;
    if (std::any_of(qr, qr + D, [](float x) { return std::isnan(x); }))
      std::fill(out + r * D, out + (r + 1) * D, std::numeric_limits<float>::quiet_NaN());
  }
}

void Attention::merge_splits(const AttnShape& sh, const std::vector<Task>& tasks, int n_splits, float* out) {
  const int D = sh.head_dim, G = sh.n_head / sh.n_head_kv;
  const std::vector<size_t>& row_offset = row_offset_;
  // Merge the splits of each original task: out = sum_s e^(m_s - M) o_s / sum_s e^(m_s - M) l_s.
  for (size_t i0 = 0; i0 < tasks.size(); i0 += n_splits) {
    const Task& t0 = tasks[i0];
    const int nq = t0.count * G;
    for (int r = 0; r < nq; ++r) {
      float M = -INFINITY;
      for (int s = 0; s < n_splits; ++s) M = std::max(M, part_max_[row_offset[i0 + s] + r]);
      const int tok = t0.first + r / G, g = r % G;
      float* dst = out + (size_t(tok) * sh.n_head + size_t(t0.kv_head) * G + g) * D;
      std::fill(dst, dst + D, 0.f);
      if (M == -INFINITY) continue;
      float l = 0.f;
      for (int s = 0; s < n_splits; ++s) {
        const size_t row = row_offset[i0 + s] + r;
        if (part_max_[row] == -INFINITY) continue;
        const float f = std::exp(part_max_[row] - M);
        l += f * part_sum_[row];
        axpy(f, part_out_.data() + row * D, dst, D);
      }
      scale(dst, 1.f / l, D);
    }
  }
}

}  // namespace leanlm
