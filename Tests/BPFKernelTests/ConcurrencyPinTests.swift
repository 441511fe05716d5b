// BPF_OBJ_PIN racing close(2) and BPF_OBJ_GET (issue 16, finding 1): the pin used to look
// the fd up without a reference and take one later, so it could pin — and objGet hand out —
// a program whose refcount had already reached zero. Runs under ThreadSanitizer in CI.
import XCTest
import CBPFShims
import Synchronization
@testable import BPFKernel

final class ConcurrencyPinTests: KernelTestCase {
    func testPinRacingCloseNeverPinsADyingObject() throws {
        let shared = Atomic<Int32>(-1)
        let stop = Atomic<Bool>(false)
        let pinned = Atomic<Int>(0), ran = Atomic<Int>(0)
        let b = bpf!
        let closer = try kthreadCreate(name: "closer") {
            var n = 0
            while !stop.load(ordering: .relaxed) && n < 20_000 {
                let kind = n % 3
                let fd: Int32?
                switch kind {
                case 0: fd = try? b.progLoad(.returning(XDP_DROP, name: "victim"))
                case 1: fd = try? b.mapCreate(MapCreateAttr(type: .progArray, maxEntries: 2, name: "victim_map"))
                default: fd = try? b.mapCreate(MapCreateAttr(type: .array, maxEntries: 1, name: "victim_arr"))
                }
                guard let fd else { continue }
                shared.store(fd, ordering: .releasing)
                for _ in 0..<(n % 7) { cbpf_cpu_relax() }
                try? b.objClose(fd)
                n += 1
            }
            stop.store(true, ordering: .relaxed)
        }
        let pinner = try kthreadCreate(name: "pinner") {
            let path = bpffsRoot + "race"
            while !stop.load(ordering: .relaxed) {
                let fd = shared.load(ordering: .acquiring)
                guard fd >= 0, (try? b.objPin(fd, path: path)) != nil else { continue }
                pinned.add(1, ordering: .relaxed)
                if let g = try? b.objGet(path: path) {
                    if (try? b.progTestRun(TestRunAttr(progFD: g, data: testPacket)))?.retval == XDP_DROP {
                        ran.add(1, ordering: .relaxed)
                    }
                    try? b.objClose(g)
                }
                try? b.unpin(path: path)
            }
        }
        kthreadJoin(closer)
        kthreadJoin(pinner)
        XCTAssertGreaterThan(pinned.load(ordering: .relaxed), 0, "the race was exercised")
        XCTAssertEqual(kernel.violations, [], "no reference was taken on an object at refcount 0")
        settle()
        XCTAssertEqual(kernel.liveObjects, 0)
    }
}
