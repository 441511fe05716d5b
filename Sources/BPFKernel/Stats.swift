// Stats.swift — run-time statistics and their switch.
//
// Mirrors: kernel/bpf/syscall.c (bpf_enable_stats, bpf_enable_runtime_stats,
// bpf_stats_release, bpf_prog_get_stats), include/linux/filter.h (the stats branch of
// BPF_PROG_RUN), kernel/bpf/core.c (bpf_stats_enabled_key).
//
// The mechanism, its rules and why: BPFKernel.docc/run-time-stats.md (the DocC article "Run-time stats").
import CBPFShims

/// enum bpf_stats_type.
public enum StatsType: UInt32, Sendable {
    case runTime = 0
}

/// The object behind a BPF_ENABLE_STATS fd: one enable of the stats key.
public final class StatsEnable: @unchecked Sendable {
    private var released = false
    private let lock = KLock()

    init() {
        StaticKey.bpfStats.inc()  // static_key_slow_inc
    }

    /// bpf_stats_release: the fd closed.
    func release() {
        lock.withLock {
            guard !released else { return }
            released = true
            try? StaticKey.bpfStats.dec()  // static_key_slow_dec
        }
    }

    /// How many enables are outstanding in this process (0 = stats off).
    public static var enableCount: UInt32 { UInt32(StaticKey.bpfStats.enableCount) }
}
