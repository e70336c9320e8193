import Foundation
import Synchronization
import Tensor
import XCTest

final class WorkerPoolTests: XCTestCase {
    /// Every task runs exactly once, right after the pool is rebuilt (workers still starting) and
    /// in long runs of back-to-back jobs; worker indices stay below the thread count.
    func testEveryTaskRunsOnceAcrossPoolRebuilds() {
        let before = Parallel.threads
        defer { Parallel.setThreads(before) }
        for threads in [2, 3, 1, 4, 2] {
            Parallel.setThreads(threads)
            XCTAssertEqual(Parallel.threads, threads)
            for tasks in [1, 2, 7, 64] {
                for _ in 0..<20 {
                    let log = TaskLog(tasks)
                    Parallel.forEach(tasks: tasks) { t, w in log.record(t, worker: w) }
                    XCTAssertEqual(log.counts, [Int](repeating: 1, count: tasks), "threads \(threads) tasks \(tasks)")
                    XCTAssertTrue(log.workers.allSatisfy { $0 >= 0 && $0 < threads })
                }
            }
        }
    }

    /// A kernel called from inside a parallel job runs serially instead of deadlocking.
    func testNestedCallsRunSerially() {
        let before = Parallel.threads
        defer { Parallel.setThreads(before) }
        Parallel.setThreads(2)
        let total = Atomic<Int>(0)
        Parallel.forEach(tasks: 4) { _, _ in
            Parallel.forEach(tasks: 5) { _, _ in total.add(1, ordering: .relaxed) }
        }
        XCTAssertEqual(total.load(ordering: .relaxed), 20)
    }
}

/// Which tasks ran and on which worker; locked because workers record concurrently.
private final class TaskLog: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var counts: [Int]
    private(set) var workers: Set<Int> = []
    init(_ n: Int) { counts = [Int](repeating: 0, count: n) }
    func record(_ t: Int, worker: Int) {
        lock.lock(); counts[t] += 1; workers.insert(worker); lock.unlock()
    }
}
