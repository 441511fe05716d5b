// htab.c — BPF_MAP_TYPE_HASH, preallocated (kernel/bpf/hashtab.c). See bpf_htab.h.
#include "bpf_htab.h"
#include <stdlib.h>
#include <string.h>

#define EINVAL 22
#define EEXIST 17
#define ENOENT 2
#define E2BIG 7
#define ENOMEM 12

/* Element i: its header in hdrs (8-byte words: next index + 1, hash, key words) and its
 * value at values + i * value_stride. Index + 1 links, 0 ends a list. */
typedef struct htab {
    uint32_t n_buckets;     /* roundup_pow_of_two(max_entries) */
    uint32_t n_elems;       /* max_entries + 1 (the extra element) */
    uint32_t key_words;     /* key_size rounded up to 8, in words */
    uint32_t hdr_words;     /* 1 (next | hash) + key_words */
    uint32_t value_stride;  /* value_size rounded up to 8 */
    uint32_t count;         /* elements linked (guarded by free_lock) */
    uint32_t free_head;     /* free list: index + 1 */
    uint32_t free_lock;
    uint32_t *buckets;      /* head index + 1 per bucket */
    uint32_t *locks;        /* one per bucket */
    uint64_t *hdrs;
} htab;

static inline void lock(uint32_t *l) {
    while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE)) {
        while (__atomic_load_n(l, __ATOMIC_RELAXED)) cbpf_cpu_relax();
    }
}
static inline void unlock(uint32_t *l) { __atomic_store_n(l, 0, __ATOMIC_RELEASE); }

static inline uint64_t *hdr(const htab *h, uint32_t i) { return h->hdrs + (uint64_t)i * h->hdr_words; }
/* word 0: next (low 32 bits, index + 1) and hash (high 32 bits) */
static inline uint32_t next_of(const htab *h, uint32_t i) { return (uint32_t)__atomic_load_n(hdr(h, i), __ATOMIC_ACQUIRE); }
static inline uint32_t hash_of(const htab *h, uint32_t i) { return (uint32_t)(__atomic_load_n(hdr(h, i), __ATOMIC_RELAXED) >> 32); }
static inline void set_link(const htab *h, uint32_t i, uint32_t next, uint32_t hash) {
    __atomic_store_n(hdr(h, i), (uint64_t)hash << 32 | next, __ATOMIC_RELEASE);
}

/* The key as whole words (zero padded), so headers are read and written word by word. */
static void key_words(const cbpf_map *m, const htab *h, const uint8_t *key, uint64_t *w) {
    memset(w, 0, h->key_words * 8);
    memcpy(w, key, m->key_size);
}

static uint32_t hash_key(const uint64_t *w, uint32_t n) {
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (uint32_t i = 0; i < n; i++) {
        x ^= w[i];
        x *= 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 31;
    }
    return (uint32_t)(x ^ (x >> 32));
}

static int key_equal(const htab *h, uint32_t i, const uint64_t *w) {
    const uint64_t *k = hdr(h, i) + 1;
    for (uint32_t j = 0; j < h->key_words; j++)
        if (__atomic_load_n(&k[j], __ATOMIC_RELAXED) != w[j]) return 0;
    return 1;
}

/* A key's words, hash and bucket. */
typedef struct where { uint64_t w[64]; uint32_t hash, bucket; } where;
static void locate(const cbpf_map *m, const htab *h, const uint8_t *key, where *at) {
    key_words(m, h, key, at->w);
    at->hash = hash_key(at->w, h->key_words);
    at->bucket = at->hash & (h->n_buckets - 1);
}

/* The element holding key `w` in bucket b, or 0; index + 1. */
static uint32_t find(const htab *h, uint32_t b, uint32_t hash, const uint64_t *w) {
    for (uint32_t e = __atomic_load_n(&h->buckets[b], __ATOMIC_ACQUIRE); e; e = next_of(h, e - 1)) {
        if (hash_of(h, e - 1) == hash && key_equal(h, e - 1, w)) return e;
    }
    return 0;
}

int cbpf_htab_create(cbpf_map *m) {
    htab *h = calloc(1, sizeof *h);
    if (!h) return -ENOMEM;
    uint32_t nb = 1;
    while (nb < m->max_entries) nb <<= 1;
    h->n_buckets = nb;
    h->n_elems = m->max_entries + 1;
    h->key_words = (m->key_size + 7) / 8;
    h->hdr_words = 1 + h->key_words;
    h->value_stride = (m->value_size + 7) & ~7u;
    h->buckets = calloc(nb, sizeof(uint32_t));
    h->locks = calloc(nb, sizeof(uint32_t));
    h->hdrs = calloc((size_t)h->n_elems * h->hdr_words, 8);
    uint8_t *values = aligned_alloc(64, (((size_t)h->n_elems * h->value_stride) + 63) & ~(size_t)63);
    if (!h->buckets || !h->locks || !h->hdrs || !values) {
        free(h->buckets); free(h->locks); free(h->hdrs); free(values); free(h);
        return -ENOMEM;
    }
    memset(values, 0, (size_t)h->n_elems * h->value_stride);
    for (uint32_t i = 0; i < h->n_elems; i++) set_link(h, i, i + 1 < h->n_elems ? i + 2 : 0, 0);
    h->free_head = 1;
    m->impl = h;
    m->values = values;
    m->values_bytes = (uint64_t)h->n_elems * h->value_stride;
    m->elem_size = h->value_stride;
    return 0;
}

void cbpf_htab_destroy(cbpf_map *m) {
    htab *h = m->impl;
    if (!h) return;
    free(h->buckets); free(h->locks); free(h->hdrs); free(m->values); free(h);
    m->impl = NULL;
    m->values = NULL;
    m->values_bytes = 0;
}

void *cbpf_htab_lookup(const cbpf_map *m, const uint8_t *key) {
    const htab *h = m->impl;
    where at;
    locate(m, h, key, &at);
    uint32_t e = find(h, at.bucket, at.hash, at.w);
    return e ? m->values + (uint64_t)(e - 1) * h->value_stride : NULL;
}

/* Takes an element off the free list; `reserve` keeps the last one for replacing a key. */
static uint32_t alloc_elem(htab *h, int replacing) {
    lock(&h->free_lock);
    uint32_t e = h->free_head;
    if (e && (replacing || h->count < h->n_elems - 1)) {
        h->free_head = next_of(h, e - 1);
        if (!replacing) h->count++;
    } else {
        e = 0;
    }
    unlock(&h->free_lock);
    return e;
}

static void free_elem(htab *h, uint32_t e, int counted) {
    lock(&h->free_lock);
    set_link(h, e - 1, h->free_head, 0);
    h->free_head = e;
    if (counted) h->count--;
    unlock(&h->free_lock);
}

int64_t cbpf_htab_update(const cbpf_map *m, const uint8_t *key, const uint8_t *value, uint64_t flags) {
    htab *h = m->impl;
    if (flags > 2) return -EINVAL;
    where at;
    locate(m, h, key, &at);
    uint32_t b = at.bucket, hash = at.hash;
    const uint64_t *w = at.w;
    lock(&h->locks[b]);
    uint32_t old = find(h, b, hash, w);
    if (old && flags == 1) { unlock(&h->locks[b]); return -EEXIST; }
    if (!old && flags == 2) { unlock(&h->locks[b]); return -ENOENT; }
    uint32_t e = alloc_elem(h, old != 0);
    if (!e) { unlock(&h->locks[b]); return -E2BIG; }
    uint64_t *k = hdr(h, e - 1) + 1;
    for (uint32_t j = 0; j < h->key_words; j++) __atomic_store_n(&k[j], w[j], __ATOMIC_RELAXED);
    uint8_t *v = m->values + (uint64_t)(e - 1) * h->value_stride;
    memcpy(v, value, m->value_size);
    /* Link the new element at the head, then unlink the old one. */
    set_link(h, e - 1, __atomic_load_n(&h->buckets[b], __ATOMIC_RELAXED), hash);
    __atomic_store_n(&h->buckets[b], e, __ATOMIC_RELEASE);
    if (old) {
        uint32_t prev = e;
        while (next_of(h, prev - 1) != old) prev = next_of(h, prev - 1);
        set_link(h, prev - 1, next_of(h, old - 1), hash_of(h, prev - 1));
    }
    unlock(&h->locks[b]);
    if (old) free_elem(h, old, 0);
    return 0;
}

int64_t cbpf_htab_delete(const cbpf_map *m, const uint8_t *key) {
    htab *h = m->impl;
    where at;
    locate(m, h, key, &at);
    uint32_t b = at.bucket, hash = at.hash;
    const uint64_t *w = at.w;
    lock(&h->locks[b]);
    uint32_t e = find(h, b, hash, w);
    if (!e) { unlock(&h->locks[b]); return -ENOENT; }
    uint32_t head = __atomic_load_n(&h->buckets[b], __ATOMIC_RELAXED);
    if (head == e) {
        __atomic_store_n(&h->buckets[b], next_of(h, e - 1), __ATOMIC_RELEASE);
    } else {
        uint32_t prev = head;
        while (next_of(h, prev - 1) != e) prev = next_of(h, prev - 1);
        set_link(h, prev - 1, next_of(h, e - 1), hash_of(h, prev - 1));
    }
    unlock(&h->locks[b]);
    free_elem(h, e, 1);
    return 0;
}

int cbpf_htab_copy_value(const cbpf_map *m, const uint8_t *key, uint8_t *out) {
    htab *h = m->impl;
    where at;
    locate(m, h, key, &at);
    uint32_t b = at.bucket, hash = at.hash;
    const uint64_t *w = at.w;
    lock(&h->locks[b]);
    uint32_t e = find(h, b, hash, w);
    if (e) memcpy(out, m->values + (uint64_t)(e - 1) * h->value_stride, m->value_size);
    unlock(&h->locks[b]);
    return e ? 0 : -ENOENT;
}

int cbpf_htab_next_key(const cbpf_map *m, const uint8_t *key, uint8_t *next) {
    htab *h = m->impl;
    uint32_t b = 0;
    if (key) {
        where at;
        locate(m, h, key, &at);
        b = at.bucket;
        lock(&h->locks[b]);
        uint32_t e = find(h, b, at.hash, at.w);
        if (e) {
            uint32_t n = next_of(h, e - 1);
            if (n) {
                memcpy(next, hdr(h, n - 1) + 1, m->key_size);
                unlock(&h->locks[b]);
                return 0;
            }
            unlock(&h->locks[b]);
            b++;
        } else {
            unlock(&h->locks[b]);
            b = 0;  /* the key is gone: start again from the first */
        }
    }
    for (; b < h->n_buckets; b++) {
        lock(&h->locks[b]);
        uint32_t e = __atomic_load_n(&h->buckets[b], __ATOMIC_RELAXED);
        if (e) {
            memcpy(next, hdr(h, e - 1) + 1, m->key_size);
            unlock(&h->locks[b]);
            return 0;
        }
        unlock(&h->locks[b]);
    }
    return -ENOENT;
}

uint32_t cbpf_htab_count(const cbpf_map *m) {
    htab *h = m->impl;
    lock(&h->free_lock);
    uint32_t c = h->count;
    unlock(&h->free_lock);
    return c;
}
