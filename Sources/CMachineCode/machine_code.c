// machine_code.c — executable memory, core sync and text_poke_bp (see CMachineCode.h).
// Mirrors: arch/x86/kernel/alternative.c (text_poke_bp_batch, poke_int3_handler,
// text_poke_sync), arch/x86/include/asm/text-patching.h (int3_emulate_jmp / _call).
#include "CMachineCode.h"
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>
#include <linux/membarrier.h>

#define CMC_INT3 0xcc

int cmc_region_map(size_t size, const void *near, cmc_region *out) {
    long page = sysconf(_SC_PAGESIZE);
    if (size == 0 || size % (size_t)page) return EINVAL;
    int fd = (int)syscall(SYS_memfd_create, "bpflab-text", 0x0001u /* MFD_CLOEXEC */);
    if (fd < 0) return errno;
    if (ftruncate(fd, (off_t)size) != 0) { int e = errno; close(fd); return e; }
    // Candidate addresses below and above `near`, 64 MiB apart, out to ±1.5 GiB.
    uintptr_t base = (uintptr_t)near & ~((uintptr_t)(1u << 21) - 1);
    uint8_t *rx = NULL;
    for (uintptr_t step = 1; step <= 24 && !rx; step++) {
        for (int sign = -1; sign <= 1 && !rx; sign += 2) {
            uintptr_t delta = step * ((uintptr_t)64 << 20);
            if (sign < 0 && base < delta) continue;
            uintptr_t want = sign < 0 ? base - delta : base + delta;
            void *p = mmap((void *)want, size, PROT_READ | PROT_EXEC, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
            if (p == MAP_FAILED) continue;
            if ((uintptr_t)p != want) { munmap(p, size); continue; }  // an old kernel ignoring the flag
            rx = p;
        }
    }
    if (!rx) { close(fd); return ENOMEM; }
    void *rw = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (rw == MAP_FAILED) { int e = errno; munmap(rx, size); return e; }
    memset(rw, CMC_INT3, size);  // unused code memory traps, as the kernel fills images
    out->rx = rx;
    out->rw = rw;
    out->size = size;
    return 0;
}

void cmc_region_unmap(cmc_region *r) {
    if (r->rx) munmap(r->rx, r->size);
    if (r->rw) munmap(r->rw, r->size);
    r->rx = r->rw = NULL;
}

static atomic_int sync_registered;  // 0 no, 1 yes, -errno failed
int cmc_sync_core(void) {
    int st = atomic_load(&sync_registered);
    if (st == 0) {
        long r = syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0);
        st = r == 0 ? 1 : -errno;
        atomic_store(&sync_registered, st);
    }
    if (st < 0) return -st;
    return syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0) == 0 ? 0 : errno;
}

// The poke in progress, read by the int3 handler.
static struct {
    _Atomic(uint8_t *) addr;   // the site (rx), NULL when no poke is in progress
    uint8_t insn[16];
    int len;
} poke;
static atomic_int handlers_in_flight;
// Odd while a poke is in progress: lets the handler tell a finished or starting poke from
// an int3 that is not ours, without a lock (it runs in a signal handler).
static _Atomic uint64_t poke_seq;
static _Atomic uint64_t n_emulated, n_restarted, n_pokes;
static pthread_mutex_t text_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t handler_once = PTHREAD_ONCE_INIT;
static struct sigaction previous_trap;

// What the handler can emulate: a NOP (0x90, or 0x0f 0x1f ...), jmp rel32 / rel8, call rel32.
static int emulable(const uint8_t *insn, int len) {
    if (len < 1 || len > 15) return 0;
    if (insn[0] == 0x90) return 1;
    if (len >= 3 && insn[0] == 0x0f && insn[1] == 0x1f) return 1;
    if (len >= 4 && insn[0] == 0x66 && insn[1] == 0x0f && insn[2] == 0x1f) return 1;
    if (len == 5 && (insn[0] == 0xe9 || insn[0] == 0xe8)) return 1;
    if (len == 2 && insn[0] == 0xeb) return 1;
    return 0;
}

static void emulate(ucontext_t *uc, uint8_t *site) {
    // int3_emulate_jmp / int3_emulate_call / a NOP: run the instruction being written.
    const uint8_t *in = poke.insn;
    uint8_t *next = site + poke.len;
    if (in[0] == 0xe9) {
        int32_t rel; memcpy(&rel, in + 1, 4);
        uc->uc_mcontext.gregs[REG_RIP] = (greg_t)(next + rel);
    } else if (in[0] == 0xeb) {
        uc->uc_mcontext.gregs[REG_RIP] = (greg_t)(next + (int8_t)in[1]);
    } else if (in[0] == 0xe8) {
        int32_t rel; memcpy(&rel, in + 1, 4);
        uint64_t *sp = (uint64_t *)uc->uc_mcontext.gregs[REG_RSP] - 1;
        *sp = (uint64_t)next;
        uc->uc_mcontext.gregs[REG_RSP] = (greg_t)sp;
        uc->uc_mcontext.gregs[REG_RIP] = (greg_t)(next + rel);
    } else {
        uc->uc_mcontext.gregs[REG_RIP] = (greg_t)next;  // a NOP
    }
}

static void on_sigtrap(int sig, siginfo_t *si, void *ucv) {
    ucontext_t *uc = (ucontext_t *)ucv;
    uint8_t *site = (uint8_t *)uc->uc_mcontext.gregs[REG_RIP] - 1;
    atomic_fetch_add(&handlers_in_flight, 1);  // before reading the descriptor: the poker waits for it
    for (;;) {
        uint64_t s1 = atomic_load(&poke_seq);
        uint8_t *addr = atomic_load(&poke.addr);
        uint8_t now = *(volatile uint8_t *)site;
        if (addr == site) {              // our site, under patch: emulate the new instruction
            emulate(uc, site);
            atomic_fetch_add(&n_emulated, 1);
            break;
        }
        if (now != CMC_INT3) {           // the poke finished before we got here: re-run the site
            uc->uc_mcontext.gregs[REG_RIP] = (greg_t)site;
            atomic_fetch_add(&n_restarted, 1);
            break;
        }
        if (atomic_load(&poke_seq) != s1) continue;  // a poke began or ended meanwhile: look again
        // An int3 that no poke put there: a real breakpoint. Hand it to whoever had SIGTRAP.
        atomic_fetch_sub(&handlers_in_flight, 1);
        if ((previous_trap.sa_flags & SA_SIGINFO) && previous_trap.sa_sigaction) {
            previous_trap.sa_sigaction(sig, si, ucv);
        } else if (previous_trap.sa_handler != SIG_IGN && previous_trap.sa_handler != SIG_DFL && previous_trap.sa_handler) {
            previous_trap.sa_handler(sig);
        } else {
            signal(SIGTRAP, SIG_DFL);
            uc->uc_mcontext.gregs[REG_RIP] = (greg_t)site;  // re-executes the int3: dies of SIGTRAP
        }
        return;
    }
    atomic_fetch_sub(&handlers_in_flight, 1);
}

static void install_handler(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigtrap;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTRAP, &sa, &previous_trap);
}

int cmc_text_poke_early(uint8_t *rw, const uint8_t *insn, int len) {
    memcpy(rw, insn, (size_t)len);
    return cmc_sync_core();
}

int cmc_text_poke_bp(uint8_t *rx, uint8_t *rw, const uint8_t *insn, int len) {
    if (!emulable(insn, len)) return EINVAL;
    pthread_once(&handler_once, install_handler);
    int err = cmc_sync_core();
    if (err) return err;
    pthread_mutex_lock(&text_mutex);
    memcpy(poke.insn, insn, (size_t)len);
    poke.len = len;
    atomic_fetch_add(&poke_seq, 1);            // odd: a poke is in progress
    atomic_store(&poke.addr, rx);              // before the int3 can be seen
    volatile uint8_t *w = rw;
    w[0] = CMC_INT3;                           // 1. int3 on the first byte
    cmc_sync_core();
    for (int i = 1; i < len; i++) w[i] = insn[i];  // 2. the tail
    if (len > 1) cmc_sync_core();
    w[0] = insn[0];                            // 3. the first byte
    cmc_sync_core();
    atomic_store(&poke.addr, NULL);
    atomic_fetch_add(&poke_seq, 1);            // even: none
    // A handler already running may still read the descriptor: wait for it.
    while (atomic_load(&handlers_in_flight) != 0) sched_yield();
    atomic_fetch_add(&n_pokes, 1);
    pthread_mutex_unlock(&text_mutex);
    return 0;
}

cmc_poke_stats cmc_poke_stats_get(void) {
    cmc_poke_stats s = { atomic_load(&n_emulated), atomic_load(&n_restarted), atomic_load(&n_pokes) };
    return s;
}

uint32_t cmc_call2(const void *fn, const void *a, const void *b) {
    return ((uint32_t (*)(const void *, const void *))fn)(a, b);
}
