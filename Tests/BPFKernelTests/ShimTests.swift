// The C shims' primitives, exhaustively on small cases.
import XCTest
import CBPFShims

final class ShimTests: XCTestCase {
    func testArrayIndexNospecClampsOutOfRangeIndicesToZero() {
        for size: UInt in 1...40 {
            for index: UInt in 0...80 {
                XCTAssertEqual(cbpf_array_index_nospec(index, size), index < size ? index : 0, "index \(index), size \(size)")
            }
        }
        XCTAssertEqual(cbpf_array_index_nospec(UInt.max, 8), 0)
        XCTAssertEqual(cbpf_array_index_nospec(7, UInt.max), 7)
    }

    func testAtomic64Primitives() {
        var v: UInt64 = 0
        XCTAssertFalse(cbpf_atomic64_inc_not_zero(&v), "inc_not_zero never increments from zero")
        XCTAssertEqual(v, 0)
        v = 1
        XCTAssertTrue(cbpf_atomic64_inc_not_zero(&v))
        XCTAssertEqual(v, 2)
        XCTAssertEqual(cbpf_atomic64_fetch_add_unless(&v, 5, 2), 2, "unless hit: returns the value, adds nothing")
        XCTAssertEqual(v, 2)
        XCTAssertEqual(cbpf_atomic64_add_return(&v, 3), 5)
        XCTAssertEqual(cbpf_atomic64_sub_return(&v, 4), 1)
        XCTAssertTrue(cbpf_atomic64_dec_and_test(&v))
        v = UInt64(UInt32.max)
        XCTAssertEqual(cbpf_atomic64_add_return(&v, 1), 1 << 32, "64 bits: no wrap at 2^32 (CVE-2016-4558)")
        XCTAssertEqual(cbpf_cmpxchg_u64(&v, 7, 9), 1 << 32, "failed cmpxchg returns what it found")
        XCTAssertEqual(cbpf_cmpxchg_u64(&v, 1 << 32, 9), 1 << 32)
        XCTAssertEqual(v, 9)
        XCTAssertEqual(cbpf_xchg_u64(&v, 11), 9)
        XCTAssertEqual(v, 11)
    }

    func testTSCAdvances() {
        let a = cbpf_rdtsc()
        cbpf_spin_ns(100_000)
        var aux: UInt32 = 0
        XCTAssertGreaterThan(cbpf_rdtscp(&aux), a)
    }

    func testAffinityAndThreadHelpers() {
        XCTAssertGreaterThanOrEqual(cbpf_nr_cpus_online(), 1)
        XCTAssertEqual(cbpf_set_affinity(-1), EINVAL)
        XCTAssertEqual(cbpf_set_thread_name("bpflab-test"), 0)
        XCTAssertGreaterThan(cbpf_gettid(), 0)
        XCTAssertGreaterThanOrEqual(cbpf_sched_getcpu(), 0)
    }
}
