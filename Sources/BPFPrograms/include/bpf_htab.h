// bpf_htab.h — BPF_MAP_TYPE_HASH with preallocated elements (htab.c).
//
// Mirrors: kernel/bpf/hashtab.c for a preallocated map (the default; BPF_F_NO_PREALLOC is
// not modelled): every element allocated at create time and kept on a free list; an
// update takes a fresh element, fills it, links it at the head of its bucket and unlinks
// the old one; E2BIG when no element is free; BPF_NOEXIST / BPF_EXIST / BPF_ANY; a
// deleted element goes back to the free list at once — as the kernel's preallocated htab
// does (htab_elem_free → pcpu_freelist_push: no grace period; a reader holding a value
// pointer may see it reused, but the memory stays the map's until the map itself is freed
// after a grace period). Lookups take no lock; updates and deletes take the bucket's lock.
// One extra element (the kernel keeps one per CPU, extra_elems) lets a full map replace
// an existing key.
//
// Layout: element headers (next, hash, key) in one array and values in another, so that a
// program's access through a value pointer — checked against the value array only — can
// never reach a header.
#ifndef BPF_HTAB_H
#define BPF_HTAB_H
#include <stdint.h>
#include "CBPFShims.h"

/// Creates the table behind `m` (m->key_size, value_size, max_entries set); fills
/// m->impl, m->values, m->values_bytes. Returns 0 or -ENOMEM.
int cbpf_htab_create(cbpf_map *m);
/// Frees what cbpf_htab_create allocated (after the map's grace period).
void cbpf_htab_destroy(cbpf_map *m);
/// bpf_map_lookup_elem: the value's address, or NULL.
void *cbpf_htab_lookup(const cbpf_map *m, const uint8_t *key);
/// bpf_map_update_elem: 0, -EINVAL (flags), -EEXIST (NOEXIST and present), -ENOENT (EXIST
/// and absent), -E2BIG (no free element).
int64_t cbpf_htab_update(const cbpf_map *m, const uint8_t *key, const uint8_t *value, uint64_t flags);
/// bpf_map_delete_elem: 0 or -ENOENT.
int64_t cbpf_htab_delete(const cbpf_map *m, const uint8_t *key);
/// map_get_next_key: copies the key after `key` (or the first key when `key` is NULL or
/// absent) to `next`; 0, or -ENOENT after the last.
int cbpf_htab_next_key(const cbpf_map *m, const uint8_t *key, uint8_t *next);
/// Copies the value for `key` into `out` (the syscall's lookup: a copy under the bucket
/// lock); 0 or -ENOENT.
int cbpf_htab_copy_value(const cbpf_map *m, const uint8_t *key, uint8_t *out);
/// Elements in use.
uint32_t cbpf_htab_count(const cbpf_map *m);

#endif
