// bpf_interpreter.h — the eBPF interpreter's image and entry points (interpreter.c).
//
// Mirrors: kernel/bpf/core.c (___bpf_prog_run and its jump table, __bpf_prog_run512,
// JMP_TAIL_CALL, the BPF_CALL_ARGS frames of bpf-to-bpf calls), include/linux/filter.h
// (struct bpf_insn, MAX_BPF_STACK).
//
// A bytecode program's cbpf_prog has bpf_func = bpfi_prog_run and insnsi = its
// bpfi_image: the verified, "xlated" instructions (map fds replaced by map records) and
// what the run-time checks need. The kernel's verifier proves every access safe before
// the program runs; the lab's load-time checks are weaker (BPFKernel/Verifier.swift), so
// the interpreter checks every memory access against the regions the program may touch
// and ends a run that strays with a named fault (counted, verdict XDP_ABORTED).
#ifndef BPF_INTERPRETER_H
#define BPF_INTERPRETER_H
#include <stdint.h>
#include "CBPFShims.h"
#include "bpf_htab.h"

/// struct bpf_insn.
typedef struct bpfi_insn {
    uint8_t code;
    uint8_t regs;     /* dst_reg: low 4 bits, src_reg: high 4 bits */
    int16_t off;
    int32_t imm;
} bpfi_insn;
_Static_assert(sizeof(bpfi_insn) == 8, "struct bpf_insn is 8 bytes");

/// MAX_BPF_STACK: each frame's stack.
#define BPFI_STACK_BYTES 512
/// MAX_CALL_FRAMES.
#define BPFI_MAX_FRAMES 8
/// The lab's termination rule: a run may take at most this many backward jumps and
/// local calls; the next one faults (BPFI_FAULT_BUDGET). The kernel's verifier proves
/// loops bounded instead; the lab cannot, so it bounds them at run time.
#define BPFI_BACKEDGE_BUDGET 1000000u
/// The kernel's named counters (Kernel.swift's kernelCounterSlots): bpf_lab_counter_add's range.
#define BPFI_COUNTER_SLOTS 1024
/// Local static keys per program (JA_CFG's 4-bit key id).
#define BPFI_MAX_KEYS 16

/// The kernel's named counters (Kernel.swift) the interpreter counts faults into.
enum {
    BPFI_FAULT_CALL_DEPTH = 0,  /* "fault.call_depth" (shared with the step bodies) */
    BPFI_FAULT_MEM = 1,         /* "fault.mem": an access outside every region it may touch */
    BPFI_FAULT_BUDGET = 2,      /* "fault.budget": more than BPFI_BACKEDGE_BUDGET back-edges */
    BPFI_FAULT_HELPER = 3,      /* "fault.helper": a helper given an argument of the wrong kind */
    BPFI_FAULT_INSN = 4,        /* "fault.insn": an opcode the checks let through but the interpreter has not */
    BPFI_FAULT_COUNT = 5,
};

/// Image flags.
enum {
    BPFI_F_RAW = 1u << 0,       /* run without an XDP context: r1 = memory, r2 = its length (conformance) */
};

/// A program-local static key (JA_CFG's key id): the kfunc that flips it from the program,
/// with its two argument blocks ([key, 0] and [key, 1]).
typedef struct bpfi_key {
    uint32_t (*set)(const void *ctx, void *arg);
    void *arg_off;
    void *arg_on;
} bpfi_key;

/// A bytecode program's image: the data block behind cbpf_prog->insnsi.
typedef struct bpfi_image {
    uint64_t magic;                    /* BPFI_IMAGE_MAGIC */
    uint32_t insn_cnt;
    uint32_t flags;                    /* BPFI_F_* */
    uint32_t nmaps;
    uint32_t nsites;
    const cbpf_map *const *maps;       /* the maps it uses (used_maps): helpers check their map argument against these */
    cbpf_static_site *sites;           /* one per JA_CFG instruction (imm >> 1 indexes them) */
    bpfi_key keys[BPFI_MAX_KEYS];
    uint64_t *counters;                /* the kernel's named counters (faults at BPFI_FAULT_*) */
    const bpfi_insn *insns;            /* the xlated instructions */
} bpfi_image;
#define BPFI_IMAGE_MAGIC 0x4250462d494e534eULL /* "BPF-INSN" */

/// bpf_func of a bytecode program: runs `insnsi` (a bpfi_image) on the XDP context `ctx`.
uint32_t bpfi_prog_run(const void *ctx, const void *insnsi);

/// The outcome of a raw run (no XDP context).
typedef struct bpfi_raw_result {
    uint64_t r0;
    uint32_t fault;     /* 0, or BPFI_FAULT_* + 1 */
    uint32_t fault_pc;  /* the instruction that faulted */
    uint64_t insns;     /* instructions executed */
} bpfi_raw_result;

/// Runs an image with BPFI_F_RAW: r1 = mem, r2 = len; `mem` is the one region besides the
/// stack (and map values). The conformance plugin's entry.
bpfi_raw_result bpfi_run_raw(const bpfi_image *img, uint8_t *mem, uint64_t len);

/// bpf_trace_printk's output: a ring of lines the Swift side drains (Tracer, `bpflab run`).
#define BPFI_TRACE_LINES 256
#define BPFI_TRACE_LINE_BYTES 128
/// Copies out the line with sequence number `seq` if still in the ring; returns its length
/// or -1 if it was overwritten or not yet written.
int bpfi_trace_read(uint64_t seq, char *out, int cap);
/// The sequence number the next line will get.
uint64_t bpfi_trace_next_seq(void);

/// bpfi_prog_run that also counts the instructions it executes (for ns per instruction;
/// the uncounted entry pays nothing for it).
uint32_t bpfi_prog_run_counted(const void *ctx, const void *insnsi, uint64_t *insns);

#endif
