// interpreter.c — the eBPF interpreter, as kernel/bpf/core.c's ___bpf_prog_run runs
// programs when there is no JIT.
//
// Mirrors: ___bpf_prog_run (a jump table indexed by opcode, `goto *jumptable[insn->code]`;
// the ALU/JMP/LDX/STX/ATOMIC handlers with the ISA's semantics — shifts masked to the
// operand width, division by zero giving 0 and modulo by zero leaving dst, 32-bit results
// zero-extended), JMP_TAIL_CALL (bounds, then the counter — incremented before the NULL
// check — then the target's instructions replace the caller's in the same frame, no
// return), bpf-to-bpf calls (a new 512-byte frame, r6–r9 and the frame pointer kept for the
// caller), and the helpers' semantics (net/core/filter.c, kernel/bpf/helpers.c,
// kernel/bpf/arraymap.c, kernel/bpf/hashtab.c via BPFPrograms/htab.c).
//
// What differs, on purpose (see bpf_interpreter.h): every memory access is checked at run
// time against the regions it may touch — the run's stack, the packet between data_meta and
// data_end, the values of the maps the program uses, the xdp_md fields — and loops are
// bounded at run time (BPFI_BACKEDGE_BUDGET). A program that strays ends with a named
// fault, counted in the kernel's counters, verdict XDP_ABORTED; it never touches memory
// outside those regions and never crashes the process.
//
// Per instruction: no allocation, no lock, no call except for helpers; registers, frames and
// stack live in this function's frame.
#include "BPFPrograms.h"
#include "bpf_interpreter.h"
#include <string.h>

/* xdp_md as a program sees it (include/uapi/linux/bpf.h): six u32 fields. */
enum { XDP_MD_DATA = 0, XDP_MD_DATA_END = 4, XDP_MD_DATA_META = 8, XDP_MD_INGRESS_IFINDEX = 12,
       XDP_MD_RX_QUEUE_INDEX = 16, XDP_MD_EGRESS_IFINDEX = 20, XDP_MD_SIZE = 24 };
/* sizeof(struct xdp_frame): the head room bpf_xdp_adjust_head/_meta keep free. */
#define XDP_FRAME_BYTES 40
#define ETH_HLEN 14
/* include/uapi/asm-generic/errno-base.h */
#define E2BIG 7
#define EINVAL 22
#define EEXIST 17
#define ENOENT 2
#define EACCES 13
#define ENOMEM 12

typedef struct frame {
    uint64_t r6, r7, r8, r9, fp;
    const bpfi_insn *ret;
} frame;

typedef struct run_state {
    const bpfi_image *img;
    cbpf_xdp_md *md;          /* NULL in a raw run */
    uint64_t stack_lo, stack_hi;
    uint64_t pkt_lo, pkt_hi;  /* [data_meta, data_end), or the raw run's memory */
    uint32_t fault;           /* BPFI_FAULT_* + 1 once faulted */
    uint32_t fault_pc;
} run_state;

/* ---- faults ---------------------------------------------------------------------------- */

__attribute__((noinline, cold))
static void raise_fault(run_state *s, uint32_t kind, const bpfi_insn *insn) {
    if (s->fault) return;
    s->fault = kind + 1;
    s->fault_pc = (uint32_t)(insn - s->img->insns);
    if (s->img->counters) cbpf_atomic64_add_relaxed(&s->img->counters[kind], 1);
}

/* ---- memory checks --------------------------------------------------------------------- */

CBPF_INLINE int in_range(uint64_t a, uint32_t n, uint64_t lo, uint64_t hi) {
    return a >= lo && a <= hi && hi - a >= n;
}

/* The values of the program's maps (rare in hot loops compared with stack and packet). */
__attribute__((noinline))
static int in_map_values(const run_state *s, uint64_t a, uint32_t n) {
    const bpfi_image *img = s->img;
    for (uint32_t i = 0; i < img->nmaps; i++) {
        const cbpf_map *m = img->maps[i];
        uint64_t lo = (uint64_t)(uintptr_t)m->values;
        if (lo && in_range(a, n, lo, lo + m->values_bytes)) return 1;
    }
    return 0;
}

/* May the run touch [a, a+n)? */
CBPF_INLINE int mem_ok(const run_state *s, uint64_t a, uint32_t n) {
    if (in_range(a, n, s->stack_lo, s->stack_hi)) return 1;
    if (in_range(a, n, s->pkt_lo, s->pkt_hi)) return 1;
    return in_map_values(s, a, n);
}

CBPF_INLINE void refresh_packet(run_state *s) {
    if (s->md) {
        s->pkt_lo = (uint64_t)(uintptr_t)s->md->data_meta;
        s->pkt_hi = (uint64_t)(uintptr_t)s->md->data_end;
    }
}

/* A 4-byte load from the xdp_md view (what the verifier's convert_ctx_access rewrites into
 * loads from struct xdp_buff: data, data_end and data_meta become full pointers). */
CBPF_INLINE int ctx_load(const run_state *s, uint64_t off, uint64_t *out) {
    const cbpf_xdp_md *md = s->md;
    switch (off) {
    case XDP_MD_DATA: *out = (uint64_t)(uintptr_t)md->data; return 1;
    case XDP_MD_DATA_END: *out = (uint64_t)(uintptr_t)md->data_end; return 1;
    case XDP_MD_DATA_META: *out = (uint64_t)(uintptr_t)md->data_meta; return 1;
    case XDP_MD_INGRESS_IFINDEX: *out = md->ingress_ifindex; return 1;
    case XDP_MD_RX_QUEUE_INDEX: *out = md->rx_queue_index; return 1;
    case XDP_MD_EGRESS_IFINDEX: *out = 0; return 1;
    default: return 0;
    }
}

/* ---- maps ------------------------------------------------------------------------------ */

/* The map record a helper's map argument names, if it is one of the program's maps. */
CBPF_INLINE const cbpf_map *arg_map(const run_state *s, uint64_t r) {
    const bpfi_image *img = s->img;
    for (uint32_t i = 0; i < img->nmaps; i++)
        if ((uint64_t)(uintptr_t)img->maps[i] == r) return img->maps[i];
    return NULL;
}

enum { MAP_HASH = 1, MAP_ARRAY = 2, MAP_PROG_ARRAY = 3, MAP_PERCPU_ARRAY = 6 };

static uint64_t map_lookup(const cbpf_map *m, const uint8_t *key) {
    switch (m->type) {
    case MAP_ARRAY: {
        uint32_t i;
        memcpy(&i, key, 4);
        if (i >= m->max_entries) return 0;
        i = (uint32_t)cbpf_array_index_nospec(i, m->max_entries);
        return (uint64_t)(uintptr_t)(m->values + (uint64_t)i * m->elem_size);
    }
    case MAP_PERCPU_ARRAY: {
        uint32_t i;
        memcpy(&i, key, 4);
        if (i >= m->max_entries) return 0;
        uint64_t cpu = (uint64_t)cbpf_this_cpu();
        return (uint64_t)(uintptr_t)(m->values + (cpu * m->max_entries + i) * m->elem_size);
    }
    case MAP_HASH:
        return (uint64_t)(uintptr_t)cbpf_htab_lookup(m, key);
    default:
        return 0;
    }
}

static int64_t map_update(const cbpf_map *m, const uint8_t *key, const uint8_t *value, uint64_t flags) {
    if (flags > 2) return -EINVAL;
    switch (m->type) {
    case MAP_ARRAY:
    case MAP_PERCPU_ARRAY: {
        uint32_t i;
        memcpy(&i, key, 4);
        if (i >= m->max_entries) return -E2BIG;
        if (flags == 1) return -EEXIST;  /* BPF_NOEXIST: array elements always exist */
        uint64_t base = m->type == MAP_PERCPU_ARRAY ? (uint64_t)cbpf_this_cpu() * m->max_entries : 0;
        memcpy(m->values + (base + i) * m->elem_size, value, m->value_size);
        return 0;
    }
    case MAP_HASH:
        return cbpf_htab_update(m, key, value, flags);
    default:
        return -EINVAL;
    }
}

static int64_t map_delete(const cbpf_map *m, const uint8_t *key) {
    switch (m->type) {
    case MAP_HASH: return cbpf_htab_delete(m, key);
    default: return -EINVAL;  /* array elements cannot be deleted */
    }
}

/* ---- bpf_trace_printk's ring ------------------------------------------------------------- */

static char trace_ring[BPFI_TRACE_LINES][BPFI_TRACE_LINE_BYTES] __attribute__((aligned(8)));
static uint64_t trace_seq_of[BPFI_TRACE_LINES];   /* seq + 1 once written; 0 while writing */
static uint64_t trace_next;

uint64_t bpfi_trace_next_seq(void) { return cbpf_load_acquire_u64(&trace_next); }

int bpfi_trace_read(uint64_t seq, char *out, int cap) {
    uint64_t slot = seq % BPFI_TRACE_LINES;
    uint64_t before = cbpf_load_acquire_u64(&trace_seq_of[slot]);
    if (before != seq + 1) return -1;
    uint64_t words[BPFI_TRACE_LINE_BYTES / 8];
    const uint64_t *src = (const uint64_t *)(const void *)trace_ring[slot];
    for (int i = 0; i < BPFI_TRACE_LINE_BYTES / 8; i++) words[i] = cbpf_read_once_u64(&src[i]);
    if (cbpf_load_acquire_u64(&trace_seq_of[slot]) != before) return -1;
    const char *line = (const char *)words;
    int n = 0;
    while (n < BPFI_TRACE_LINE_BYTES && line[n]) n++;
    if (n > cap) n = cap;
    memcpy(out, line, (size_t)n);
    return n;
}

static int put_u64(char *buf, int pos, int cap, uint64_t v, int base, int neg) {
    char tmp[24];
    int n = 0;
    do { tmp[n++] = "0123456789abcdef"[v % (uint64_t)base]; v /= (uint64_t)base; } while (v);
    if (neg && pos < cap) buf[pos++] = '-';
    while (n && pos < cap) buf[pos++] = tmp[--n];
    return pos;
}

/* bpf_trace_printk(fmt, fmt_size, a, b, c): %d %i %u %x with l / ll, %p, %%; at most three
 * conversions; fmt must be NUL-terminated within fmt_size. Returns the bytes written. */
static int64_t trace_printk(const char *fmt, uint32_t size, const uint64_t args[3]) {
    if (size == 0 || fmt[size - 1] != 0) return -EINVAL;
    char line[BPFI_TRACE_LINE_BYTES];
    int pos = 0, cap = BPFI_TRACE_LINE_BYTES - 1, argi = 0;
    for (uint32_t i = 0; fmt[i] && pos < cap; i++) {
        if (fmt[i] != '%') { line[pos++] = fmt[i]; continue; }
        i++;
        if (fmt[i] == '%') { line[pos++] = '%'; continue; }
        int longs = 0;
        while (fmt[i] == 'l' && longs < 2) { longs++; i++; }
        if (argi >= 3) return -EINVAL;
        uint64_t v = args[argi++];
        if (longs == 0 && fmt[i] != 'p') v = (uint32_t)v;
        switch (fmt[i]) {
        case 'd': case 'i': {
            int64_t sv = longs == 0 ? (int64_t)(int32_t)v : (int64_t)v;
            pos = put_u64(line, pos, cap, sv < 0 ? (uint64_t)0 - (uint64_t)sv : (uint64_t)sv, 10, sv < 0);
            break;
        }
        case 'u': pos = put_u64(line, pos, cap, v, 10, 0); break;
        case 'x': pos = put_u64(line, pos, cap, v, 16, 0); break;
        case 'p':
            if (pos + 2 <= cap) { line[pos++] = '0'; line[pos++] = 'x'; }
            pos = put_u64(line, pos, cap, v, 16, 0);
            break;
        default: return -EINVAL;
        }
    }
    line[pos] = 0;
    uint64_t seq = cbpf_atomic64_fetch_add_relaxed(&trace_next, 1);
    uint64_t slot = seq % BPFI_TRACE_LINES;
    cbpf_store_release_u64(&trace_seq_of[slot], 0);
    uint64_t words[BPFI_TRACE_LINE_BYTES / 8] = {0};
    memcpy(words, line, (size_t)pos + 1);
    uint64_t *dst = (uint64_t *)(void *)trace_ring[slot];
    for (int i = 0; i < BPFI_TRACE_LINE_BYTES / 8; i++) cbpf_write_once_u64(&dst[i], words[i]);
    cbpf_store_release_u64(&trace_seq_of[slot], seq + 1);
    return pos;
}

/* ---- bpf_get_prandom_u32 ----------------------------------------------------------------- */

static __thread uint64_t prandom_state;
static uint32_t prandom_u32(void) {
    uint64_t x = prandom_state;
    if (!x) x = cbpf_rdtsc() | 1;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;  /* xorshift64* */
    prandom_state = x;
    return (uint32_t)((x * 0x2545F4914F6CDD1DULL) >> 32);
}

/* ---- XDP helpers (net/core/filter.c) ------------------------------------------------------ */

static int64_t xdp_adjust_head(cbpf_xdp_md *md, int32_t offset) {
    uint8_t *frame_end = md->data_hard_start + XDP_FRAME_BYTES;
    uint64_t metalen = (uint64_t)(md->data - md->data_meta);
    uint8_t *data_start = frame_end + metalen;
    uint8_t *data = md->data + offset;
    if (data < data_start || data > md->data_end - ETH_HLEN) return -EINVAL;
    if (metalen) memmove(md->data_meta + offset, md->data_meta, metalen);
    md->data_meta += offset;
    md->data = data;
    return 0;
}

static int64_t xdp_adjust_meta(cbpf_xdp_md *md, int32_t offset) {
    uint8_t *frame_end = md->data_hard_start + XDP_FRAME_BYTES;
    uint8_t *meta = md->data_meta + offset;
    if (meta < frame_end || meta > md->data) return -EINVAL;
    uint64_t metalen = (uint64_t)(md->data - meta);
    if (metalen > 32 || (metalen & 3)) return -EACCES;  /* xdp_metalen_invalid */
    md->data_meta = meta;
    return 0;
}

static int64_t xdp_adjust_tail(cbpf_xdp_md *md, int32_t offset) {
    uint8_t *hard_end = md->data_hard_end ? md->data_hard_end : md->data_end;
    uint8_t *data_end = md->data_end + offset;
    if (data_end > hard_end) return -EINVAL;
    if (data_end < md->data + ETH_HLEN) return -EINVAL;
    if (offset > 0) memset(md->data_end, 0, (size_t)offset);
    md->data_end = data_end;
    return 0;
}

/* ---- the interpreter ----------------------------------------------------------------------- */

#define DST regs[insn->regs & 0x0f]
#define SRC regs[insn->regs >> 4]
#define IMM ((int64_t)insn->imm)
#define OFF insn->off

/* Tail call's landing check: the target's own body (not a trampoline in front of it). */
CBPF_INLINE cbpf_func_t tail_entry(const cbpf_prog *t) { return cbpf_text_hdr_of(t->insnsi)->orig; }

__attribute__((always_inline))
static inline uint64_t run(run_state *s, uint64_t r1, uint64_t r2, const int counting, uint64_t *executed) {
    uint64_t stack[BPFI_MAX_FRAMES * BPFI_STACK_BYTES / 8];
    uint64_t regs[11];
    frame frames[BPFI_MAX_FRAMES];
    uint32_t depth = 0;
    uint32_t budget = BPFI_BACKEDGE_BUDGET;
    uint64_t n = 0;
    const bpfi_insn *insn = s->img->insns;

    s->stack_lo = (uint64_t)(uintptr_t)stack;
    s->stack_hi = s->stack_lo + sizeof stack;
    regs[0] = 0;
    regs[1] = r1;
    regs[2] = r2;
    regs[10] = s->stack_hi;  /* frame 0 is the top 512 bytes; each call goes 512 lower */

    /* Every opcode defaults to BAD; the entries below override it (on purpose). */
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Winitializer-overrides"
    static const void *const jumptable[256] = {
        [0 ... 255] = &&BAD,
#define ALU_ENTRIES(OP, NAME) \
        [0x07 | OP | 0x00] = &&ALU64_##NAME##_K, [0x07 | OP | 0x08] = &&ALU64_##NAME##_X, \
        [0x04 | OP | 0x00] = &&ALU_##NAME##_K, [0x04 | OP | 0x08] = &&ALU_##NAME##_X,
        ALU_ENTRIES(0x00, ADD) ALU_ENTRIES(0x10, SUB) ALU_ENTRIES(0x20, MUL) ALU_ENTRIES(0x30, DIV)
        ALU_ENTRIES(0x40, OR) ALU_ENTRIES(0x50, AND) ALU_ENTRIES(0x60, LSH) ALU_ENTRIES(0x70, RSH)
        ALU_ENTRIES(0x90, MOD) ALU_ENTRIES(0xa0, XOR) ALU_ENTRIES(0xb0, MOV) ALU_ENTRIES(0xc0, ARSH)
        [0x87] = &&ALU64_NEG, [0x84] = &&ALU_NEG,
        [0xd4] = &&ALU_END_TO_LE, [0xdc] = &&ALU_END_TO_BE, [0xd7] = &&ALU64_END_BSWAP,
#define JMP_ENTRIES(OP, NAME) \
        [0x05 | OP | 0x00] = &&JMP_##NAME##_K, [0x05 | OP | 0x08] = &&JMP_##NAME##_X, \
        [0x06 | OP | 0x00] = &&JMP32_##NAME##_K, [0x06 | OP | 0x08] = &&JMP32_##NAME##_X,
        JMP_ENTRIES(0x10, JEQ) JMP_ENTRIES(0x20, JGT) JMP_ENTRIES(0x30, JGE) JMP_ENTRIES(0x40, JSET)
        JMP_ENTRIES(0x50, JNE) JMP_ENTRIES(0x60, JSGT) JMP_ENTRIES(0x70, JSGE) JMP_ENTRIES(0xa0, JLT)
        JMP_ENTRIES(0xb0, JLE) JMP_ENTRIES(0xc0, JSLT) JMP_ENTRIES(0xd0, JSLE)
        [0x05] = &&JMP_JA, [0x06] = &&JMP32_JA, [0x85] = &&JMP_CALL, [0x95] = &&JMP_EXIT,
        [0x18] = &&LD_IMM_DW,
        [0x71] = &&LDX_MEM_B, [0x69] = &&LDX_MEM_H, [0x61] = &&LDX_MEM_W, [0x79] = &&LDX_MEM_DW,
        [0x91] = &&LDX_MEMSX_B, [0x89] = &&LDX_MEMSX_H, [0x81] = &&LDX_MEMSX_W,
        [0x72] = &&ST_MEM_B, [0x6a] = &&ST_MEM_H, [0x62] = &&ST_MEM_W, [0x7a] = &&ST_MEM_DW,
        [0x73] = &&STX_MEM_B, [0x6b] = &&STX_MEM_H, [0x63] = &&STX_MEM_W, [0x7b] = &&STX_MEM_DW,
        [0xc3] = &&STX_ATOMIC_W, [0xdb] = &&STX_ATOMIC_DW,
    };
#pragma clang diagnostic pop

#define CONT do { insn++; goto select_insn; } while (0)
#define JUMP(rel) do { int64_t _r = (rel); insn += _r + 1; if (_r < 0) { if (__builtin_expect(--budget == 0, 0)) goto fault_budget; } goto select_insn; } while (0)
#define FAULT(kind) do { raise_fault(s, kind, insn); goto out; } while (0)

select_insn:
    if (counting) n++;
    goto *jumptable[insn->code];

    /* ---- ALU ---- */
#define ALU(NAME, EXPR64, EXPR32) \
    ALU64_##NAME##_X: { uint64_t b = SRC; (void)b; DST = (EXPR64); CONT; } \
    ALU64_##NAME##_K: { uint64_t b = (uint64_t)IMM; (void)b; DST = (EXPR64); CONT; } \
    ALU_##NAME##_X: { uint32_t b = (uint32_t)SRC; (void)b; uint32_t a = (uint32_t)DST; (void)a; DST = (uint32_t)(EXPR32); CONT; } \
    ALU_##NAME##_K: { uint32_t b = (uint32_t)insn->imm; (void)b; uint32_t a = (uint32_t)DST; (void)a; DST = (uint32_t)(EXPR32); CONT; }
    ALU(ADD, DST + b, a + b)
    ALU(SUB, DST - b, a - b)
    ALU(MUL, DST * b, a * b)
    ALU(OR, DST | b, a | b)
    ALU(AND, DST & b, a & b)
    ALU(XOR, DST ^ b, a ^ b)
    ALU(LSH, DST << (b & 63), a << (b & 31))
    ALU(RSH, DST >> (b & 63), a >> (b & 31))
    ALU(ARSH, (uint64_t)((int64_t)DST >> (b & 63)), (uint32_t)((int32_t)a >> (b & 31)))
#undef ALU

    /* div/mod: off = 0 unsigned, off = 1 signed (sdiv/smod). By zero: quotient 0, the
     * remainder is the dividend. INT_MIN / -1 wraps (quotient INT_MIN, remainder 0). */
#define DIVMOD(SUFFIX, B64, B32) \
    ALU64_DIV_##SUFFIX: { uint64_t b = (B64), a = DST; \
        if (OFF == 1) { int64_t sa = (int64_t)a, sb = (int64_t)b; \
            DST = sb == 0 ? 0 : sb == -1 ? (uint64_t)0 - a : (uint64_t)(sa / sb); } \
        else DST = b ? a / b : 0; CONT; } \
    ALU64_MOD_##SUFFIX: { uint64_t b = (B64), a = DST; \
        if (OFF == 1) { int64_t sa = (int64_t)a, sb = (int64_t)b; \
            DST = sb == 0 ? a : sb == -1 ? 0 : (uint64_t)(sa % sb); } \
        else DST = b ? a % b : a; CONT; } \
    ALU_DIV_##SUFFIX: { uint32_t b = (B32), a = (uint32_t)DST; \
        if (OFF == 1) { int32_t sa = (int32_t)a, sb = (int32_t)b; \
            DST = (uint32_t)(sb == 0 ? 0u : sb == -1 ? 0u - a : (uint32_t)(sa / sb)); } \
        else DST = b ? a / b : 0; CONT; } \
    ALU_MOD_##SUFFIX: { uint32_t b = (B32), a = (uint32_t)DST; \
        if (OFF == 1) { int32_t sa = (int32_t)a, sb = (int32_t)b; \
            DST = (uint32_t)(sb == 0 ? a : sb == -1 ? 0u : (uint32_t)(sa % sb)); } \
        else DST = b ? a % b : a; CONT; }
    DIVMOD(X, SRC, (uint32_t)SRC)
    DIVMOD(K, (uint64_t)IMM, (uint32_t)insn->imm)
#undef DIVMOD

    /* mov, and movsx (off = 8, 16, 32: sign-extend the source's low bits). */
    ALU64_MOV_X:
        switch (OFF) {
        case 0: DST = SRC; break;
        case 8: DST = (uint64_t)(int64_t)(int8_t)SRC; break;
        case 16: DST = (uint64_t)(int64_t)(int16_t)SRC; break;
        default: DST = (uint64_t)(int64_t)(int32_t)SRC; break;
        }
        CONT;
    ALU64_MOV_K: DST = (uint64_t)IMM; CONT;
    ALU_MOV_X:
        switch (OFF) {
        case 0: DST = (uint32_t)SRC; break;
        case 8: DST = (uint32_t)(int32_t)(int8_t)SRC; break;
        default: DST = (uint32_t)(int32_t)(int16_t)SRC; break;
        }
        CONT;
    ALU_MOV_K: DST = (uint32_t)insn->imm; CONT;
    ALU64_NEG: DST = (uint64_t)0 - DST; CONT;
    ALU_NEG: DST = (uint32_t)(0u - (uint32_t)DST); CONT;
    ALU_END_TO_LE:
        switch (insn->imm) {
        case 16: DST = (uint16_t)DST; break;
        case 32: DST = (uint32_t)DST; break;
        default: break;
        }
        CONT;
    ALU_END_TO_BE:
    ALU64_END_BSWAP:
        switch (insn->imm) {
        case 16: DST = __builtin_bswap16((uint16_t)DST); break;
        case 32: DST = __builtin_bswap32((uint32_t)DST); break;
        default: DST = __builtin_bswap64(DST); break;
        }
        CONT;

    /* ---- jumps ---- */
#define COND(NAME, OP, T64, T32) \
    JMP_##NAME##_X: if ((T64)DST OP (T64)SRC) JUMP(OFF); CONT; \
    JMP_##NAME##_K: if ((T64)DST OP (T64)IMM) JUMP(OFF); CONT; \
    JMP32_##NAME##_X: if ((T32)DST OP (T32)SRC) JUMP(OFF); CONT; \
    JMP32_##NAME##_K: if ((T32)DST OP (T32)insn->imm) JUMP(OFF); CONT;
    COND(JEQ, ==, uint64_t, uint32_t)
    COND(JNE, !=, uint64_t, uint32_t)
    COND(JGT, >, uint64_t, uint32_t)
    COND(JGE, >=, uint64_t, uint32_t)
    COND(JLT, <, uint64_t, uint32_t)
    COND(JLE, <=, uint64_t, uint32_t)
    COND(JSGT, >, int64_t, int32_t)
    COND(JSGE, >=, int64_t, int32_t)
    COND(JSLT, <, int64_t, int32_t)
    COND(JSLE, <=, int64_t, int32_t)
#undef COND
    JMP_JSET_X: if (DST & SRC) JUMP(OFF); CONT;
    JMP_JSET_K: if (DST & (uint64_t)IMM) JUMP(OFF); CONT;
    JMP32_JSET_X: if ((uint32_t)DST & (uint32_t)SRC) JUMP(OFF); CONT;
    JMP32_JSET_K: if ((uint32_t)DST & (uint32_t)insn->imm) JUMP(OFF); CONT;

    JMP_JA:
        if (__builtin_expect(insn->regs & 0xf0, 0)) {
            /* JA_CFG: taken while its site is on (inverse: while it is off). */
            uint32_t on = cbpf_read_once_u32(&s->img->sites[(uint32_t)insn->imm >> 1].enabled) != 0;
            if (on ^ ((uint32_t)insn->imm & 1)) JUMP(OFF);
            CONT;
        }
        JUMP(OFF);
    JMP32_JA: JUMP(insn->imm);

    JMP_CALL:
        switch (insn->regs >> 4) {
        case 1: /* bpf-to-bpf call: a new frame */
            if (depth + 1 >= BPFI_MAX_FRAMES) FAULT(BPFI_FAULT_CALL_DEPTH);
            if (__builtin_expect(--budget == 0, 0)) goto fault_budget;
            frames[depth] = (frame){ regs[6], regs[7], regs[8], regs[9], regs[10], insn + 1 };
            depth++;
            regs[10] -= BPFI_STACK_BYTES;
            insn += insn->imm + 1;
            goto select_insn;
        case 2: { /* the lab's kfuncs */
            if (insn->imm == 2) {
                /* bpf_lab_counter_add(slot): the kernel's named counter `slot` += 1 (what a
                 * step program's count step does, compiled to instructions) */
                if (regs[1] >= BPFI_COUNTER_SLOTS || !s->img->counters) FAULT(BPFI_FAULT_HELPER);
                cbpf_atomic64_add_relaxed(&s->img->counters[regs[1]], 1);
                regs[0] = 0;
                CONT;
            }
            if (insn->imm != 1) FAULT(BPFI_FAULT_INSN);
            uint64_t id = regs[1];
            if (id >= BPFI_MAX_KEYS || !s->img->keys[id].set) FAULT(BPFI_FAULT_HELPER);
            const bpfi_key *k = &s->img->keys[id];
            regs[0] = k->set(s->md, regs[2] ? k->arg_on : k->arg_off);
            CONT;
        }
        default:
            break;
        }
        switch (insn->imm) {
        case 1: { /* bpf_map_lookup_elem(map, key) */
            const cbpf_map *m = arg_map(s, regs[1]);
            if (!m || m->type == MAP_PROG_ARRAY || m->type >= 0x1000) FAULT(BPFI_FAULT_HELPER);
            if (!mem_ok(s, regs[2], m->key_size)) FAULT(BPFI_FAULT_MEM);
            regs[0] = map_lookup(m, (const uint8_t *)(uintptr_t)regs[2]);
            break;
        }
        case 2: { /* bpf_map_update_elem(map, key, value, flags) */
            const cbpf_map *m = arg_map(s, regs[1]);
            if (!m || m->type == MAP_PROG_ARRAY || m->type >= 0x1000) FAULT(BPFI_FAULT_HELPER);
            if (!mem_ok(s, regs[2], m->key_size) || !mem_ok(s, regs[3], m->value_size)) FAULT(BPFI_FAULT_MEM);
            regs[0] = (uint64_t)map_update(m, (const uint8_t *)(uintptr_t)regs[2], (const uint8_t *)(uintptr_t)regs[3], regs[4]);
            break;
        }
        case 3: { /* bpf_map_delete_elem(map, key) */
            const cbpf_map *m = arg_map(s, regs[1]);
            if (!m || m->type == MAP_PROG_ARRAY || m->type >= 0x1000) FAULT(BPFI_FAULT_HELPER);
            if (!mem_ok(s, regs[2], m->key_size)) FAULT(BPFI_FAULT_MEM);
            regs[0] = (uint64_t)map_delete(m, (const uint8_t *)(uintptr_t)regs[2]);
            break;
        }
        case 5: regs[0] = cbpf_ktime_get_ns(); break;
        case 125: regs[0] = cbpf_ktime_get_boottime_ns(); break;
        case 6: { /* bpf_trace_printk(fmt, size, a, b, c) */
            uint32_t size = (uint32_t)regs[2];
            if (size == 0 || size > 1024 || !mem_ok(s, regs[1], size)) FAULT(BPFI_FAULT_MEM);
            uint64_t args[3] = { regs[3], regs[4], regs[5] };
            regs[0] = (uint64_t)trace_printk((const char *)(uintptr_t)regs[1], size, args);
            break;
        }
        case 7: regs[0] = prandom_u32(); break;
        case 8: regs[0] = (uint32_t)cbpf_this_cpu(); break;
        case 12: { /* bpf_tail_call(ctx, prog_array, index): JMP_TAIL_CALL */
            const cbpf_map *m = arg_map(s, regs[2]);
            if (!m || m->type != MAP_PROG_ARRAY || !s->md || regs[1] != (uint64_t)(uintptr_t)s->md) FAULT(BPFI_FAULT_HELPER);
            const cbpf_array *array = m->progs;
            uint32_t index = (uint32_t)regs[3];
            if (index >= array->max_entries) break;
            if (s->md->tail_call_cnt >= CBPF_MAX_TAIL_CALL_CNT) break;
            s->md->tail_call_cnt++;               /* counted before the NULL check */
            index = (uint32_t)cbpf_array_index_nospec(index, array->max_entries);
            const cbpf_prog *t = cbpf_array_slot(array, index);
            if (!t) break;
            if (tail_entry(t) == bpfi_prog_run) {
                /* insn = prog->insnsi; goto select_insn — same frame, same registers */
                s->img = (const bpfi_image *)t->insnsi;
                insn = s->img->insns;
                goto select_insn;
            }
            regs[0] = tail_entry(t)(s->md, t->insnsi);  /* a native target's value is ours */
            goto out;
        }
        case 23: /* bpf_redirect(ifindex, flags) */
            if (!s->md) FAULT(BPFI_FAULT_HELPER);
            if (regs[2]) { regs[0] = CBPF_XDP_ABORTED; break; }
            s->md->redirect_ifindex = (uint32_t)regs[1];
            regs[0] = CBPF_XDP_REDIRECT;
            break;
        case 44: case 54: case 65: { /* bpf_xdp_adjust_head / _meta / _tail(ctx, delta) */
            if (!s->md || regs[1] != (uint64_t)(uintptr_t)s->md) FAULT(BPFI_FAULT_HELPER);
            int32_t d = (int32_t)regs[2];
            int64_t r = insn->imm == 44 ? xdp_adjust_head(s->md, d)
                      : insn->imm == 54 ? xdp_adjust_meta(s->md, d) : xdp_adjust_tail(s->md, d);
            refresh_packet(s);
            regs[0] = (uint64_t)r;
            break;
        }
        case 184: /* bpf_get_func_ret(ctx, &value): an fexit program's view of the traced function's value */
            if (!s->md || regs[1] != (uint64_t)(uintptr_t)s->md) FAULT(BPFI_FAULT_HELPER);
            if (!mem_ok(s, regs[2], 8)) FAULT(BPFI_FAULT_MEM);
            memcpy((void *)(uintptr_t)regs[2], &s->md->func_ret, 8);
            regs[0] = 0;
            break;
        case 174: /* bpf_get_attach_cookie(ctx) */
            if (!s->md) FAULT(BPFI_FAULT_HELPER);
            regs[0] = s->md->bpf_cookie;
            break;
        default:
            FAULT(BPFI_FAULT_INSN);
        }
        CONT;

    JMP_EXIT:
        if (depth == 0) goto out;
        depth--;
        regs[6] = frames[depth].r6; regs[7] = frames[depth].r7;
        regs[8] = frames[depth].r8; regs[9] = frames[depth].r9;
        regs[10] = frames[depth].fp;
        insn = frames[depth].ret;
        goto select_insn;

    /* ---- loads and stores ---- */
    LD_IMM_DW:
        DST = (uint64_t)(uint32_t)insn[0].imm | ((uint64_t)(uint32_t)insn[1].imm << 32);
        insn += 2;
        goto select_insn;

#define LDX(NAME, T, CAST) \
    LDX_##NAME: { uint64_t a = SRC + (uint64_t)(int64_t)OFF; \
        if (!mem_ok(s, a, sizeof(T))) FAULT(BPFI_FAULT_MEM); \
        T v; memcpy(&v, (const void *)(uintptr_t)a, sizeof v); DST = (uint64_t)(CAST)v; CONT; }
    LDX(MEM_B, uint8_t, uint64_t)
    LDX(MEM_H, uint16_t, uint64_t)
    LDX(MEM_DW, uint64_t, uint64_t)
    LDX(MEMSX_B, int8_t, int64_t)
    LDX(MEMSX_H, int16_t, int64_t)
    LDX(MEMSX_W, int32_t, int64_t)
    LDX_MEM_W: {
        uint64_t a = SRC + (uint64_t)(int64_t)OFF;
        if (!mem_ok(s, a, 4)) {
            /* the context: its six u32 fields */
            uint64_t v;
            if (s->md && a - (uint64_t)(uintptr_t)s->md < XDP_MD_SIZE && ctx_load(s, a - (uint64_t)(uintptr_t)s->md, &v)) {
                DST = v;
                CONT;
            }
            FAULT(BPFI_FAULT_MEM);
        }
        uint32_t v;
        memcpy(&v, (const void *)(uintptr_t)a, 4);
        DST = v;
        CONT;
    }
#undef LDX

#define STORE(NAME, T, VALUE) \
    NAME: { uint64_t a = DST + (uint64_t)(int64_t)OFF; \
        if (!mem_ok(s, a, sizeof(T))) FAULT(BPFI_FAULT_MEM); \
        T v = (T)(VALUE); memcpy((void *)(uintptr_t)a, &v, sizeof v); CONT; }
    STORE(ST_MEM_B, uint8_t, insn->imm)
    STORE(ST_MEM_H, uint16_t, insn->imm)
    STORE(ST_MEM_W, uint32_t, insn->imm)
    STORE(ST_MEM_DW, uint64_t, IMM)
    STORE(STX_MEM_B, uint8_t, SRC)
    STORE(STX_MEM_H, uint16_t, SRC)
    STORE(STX_MEM_W, uint32_t, SRC)
    STORE(STX_MEM_DW, uint64_t, SRC)
#undef STORE

    /* Atomics (BPF_ATOMIC): the operation in imm; aligned, like the verifier demands. The
     * plain operations are relaxed, the fetching ones fully ordered (as the kernel's
     * atomic_fetch_* are); a 32-bit result is zero-extended. */
#define ATOMIC(NAME, T)                                                                       \
    NAME: {                                                                                   \
        uint64_t a = DST + (uint64_t)(int64_t)OFF;                                            \
        if ((a & (sizeof(T) - 1)) || !mem_ok(s, a, sizeof(T))) FAULT(BPFI_FAULT_MEM);        \
        T *p = (T *)(uintptr_t)a, v = (T)SRC, old;                                            \
        switch (insn->imm) {                                                                  \
        case 0x00: __atomic_fetch_add(p, v, __ATOMIC_RELAXED); break;                         \
        case 0x40: __atomic_fetch_or(p, v, __ATOMIC_RELAXED); break;                          \
        case 0x50: __atomic_fetch_and(p, v, __ATOMIC_RELAXED); break;                         \
        case 0xa0: __atomic_fetch_xor(p, v, __ATOMIC_RELAXED); break;                         \
        case 0x01: SRC = __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); break;                   \
        case 0x41: SRC = __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); break;                    \
        case 0x51: SRC = __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); break;                   \
        case 0xa1: SRC = __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); break;                   \
        case 0xe1: SRC = __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); break;                  \
        case 0xf1:                                                                            \
            old = (T)regs[0];                                                                 \
            __atomic_compare_exchange_n(p, &old, v, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);  \
            regs[0] = old;                                                                    \
            break;                                                                            \
        default: FAULT(BPFI_FAULT_INSN);                                                      \
        }                                                                                     \
        CONT;                                                                                 \
    }
    ATOMIC(STX_ATOMIC_W, uint32_t)
    ATOMIC(STX_ATOMIC_DW, uint64_t)
#undef ATOMIC

BAD:
    FAULT(BPFI_FAULT_INSN);
fault_budget:
    FAULT(BPFI_FAULT_BUDGET);
out:
    if (counting) *executed = n;
    return regs[0];
#undef CONT
#undef JUMP
#undef FAULT
}

static inline uint32_t xdp_run(const void *ctx, const void *insnsi, const int counting, uint64_t *executed) {
    cbpf_xdp_md *md = (cbpf_xdp_md *)ctx;
    run_state s = { .img = (const bpfi_image *)insnsi, .md = md };
    refresh_packet(&s);
    uint64_t r0 = run(&s, (uint64_t)(uintptr_t)md, 0, counting, executed);
    return s.fault ? CBPF_XDP_ABORTED : (uint32_t)r0;
}

uint32_t bpfi_prog_run(const void *ctx, const void *insnsi) {
    return xdp_run(ctx, insnsi, 0, NULL);
}

uint32_t bpfi_prog_run_counted(const void *ctx, const void *insnsi, uint64_t *insns) {
    return xdp_run(ctx, insnsi, 1, insns);
}

bpfi_raw_result bpfi_run_raw(const bpfi_image *img, uint8_t *mem, uint64_t len) {
    run_state s = { .img = img, .md = NULL };
    s.pkt_lo = (uint64_t)(uintptr_t)mem;
    s.pkt_hi = mem ? s.pkt_lo + len : 0;
    bpfi_raw_result r = {0};
    r.r0 = run(&s, (uint64_t)(uintptr_t)mem, len, 1, &r.insns);
    r.fault = s.fault;
    r.fault_pc = s.fault_pc;
    return r;
}
