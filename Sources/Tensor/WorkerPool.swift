import Dispatch
import Foundation
import Synchronization

/// Splits kernel work over the threads this process may use (`Parallel.setThreads`).
///
/// Why not `DispatchQueue.concurrentPerform` or a condition variable: in this VM waking a sleeping
/// thread costs ~60 µs, while a decode step makes ~150 kernel calls of 100–500 µs each. So the
/// workers of this pool spin on an atomic generation counter for a short while after each job
/// (about a millisecond, long enough to bridge the small serial gaps between kernels) and only then
/// sleep on a semaphore. A call costs ~1 µs while the workers are hot.
///
/// Work is claimed task by task, and the caller never waits for a worker that has not joined: on a
/// busy machine a descheduled worker simply misses the job and the caller (and whoever did join)
/// does all of it, instead of the caller waiting a whole scheduler time slice.
public enum Parallel {
    /// Threads kernels may use, the calling thread included.
    public static var threads: Int {
        if #available(macOS 15.0, *) { return WorkerPool.currentThreads }
        return 1
    }

    /// Sets how many threads kernels use (the calling thread included); extra workers are started or
    /// stopped. Called once per process, e.g. from the pipeline's per-role thread setting.
    public static func setThreads(_ n: Int) {
        if #available(macOS 15.0, *) { WorkerPool.setThreads(max(1, n)) }
    }

    /// Runs `body(task, worker)` for every task in `0..<tasks`, spread over the pool; returns when
    /// all are done. `worker` is in `0..<threads` and unique among concurrently running bodies, so
    /// it can index per-thread scratch. Nested or concurrent calls run serially on the caller.
    public static func forEach(tasks: Int, _ body: (_ task: Int, _ worker: Int) -> Void) {
        if tasks <= 1 { if tasks == 1 { body(0, 0) }; return }
        // Sharing a closure with the pool's threads takes `withoutActuallyEscaping`, which boxes
        // it (one small allocation per call); the decode kernels use the job form below.
        withoutActuallyEscaping(body) { forEach(tasks: tasks, job: ClosureJob(body: $0)) }
    }

    /// The closure form's job.
    private struct ClosureJob: ParallelJob {
        let body: (Int, Int) -> Void
        func run(task: Int, worker: Int) { body(task, worker) }
    }

    /// `forEach` for a job held in a value: runs `job.run(task:worker:)` for every task in
    /// `0..<tasks` without allocating (the pool reads the job through a pointer to the caller's
    /// copy). The kernels a decode step calls ~150 times use this form.
    public static func forEach<J: ParallelJob>(tasks: Int, job: J) {
        if tasks <= 0 { return }
        if tasks > 1, #available(macOS 15.0, *), let pool = WorkerPool.acquire() {
            withUnsafePointer(to: job) { p in
                pool.run(tasks: tasks, context: UnsafeRawPointer(p)) { ctx, t, w in
                    ctx.assumingMemoryBound(to: J.self).pointee.run(task: t, worker: w)
                }
            }
            WorkerPool.release()
            return
        }
        for t in 0..<tasks { job.run(task: t, worker: 0) }
    }

    /// `forEach` for bodies that throw: every task runs, and the first error a task throws is
    /// rethrown once all have finished (later ones are dropped).
    public static func forEach(tasks: Int, throwing body: (_ task: Int, _ worker: Int) throws -> Void) throws {
        let lock = NSLock()
        var failure: (any Error)?
        forEach(tasks: tasks) { t, w in
            do { try body(t, w) } catch { lock.lock(); failure = failure ?? error; lock.unlock() }
        }
        if let failure { throw failure }
    }

    /// `body(task)` for every task in `0..<tasks`, spread over the pool, as an array in task order;
    /// the first error thrown is rethrown once all tasks have finished.
    public static func map<T>(tasks: Int, _ body: (_ task: Int) throws -> T) throws -> [T] {
        var results = [T?](repeating: nil, count: tasks)
        try results.withUnsafeMutableBufferPointer { out in
            let slots = out.baseAddress!   // each task writes only its own slot
            try forEach(tasks: tasks, throwing: { t, _ in slots[t] = try body(t) })
        }
        return results.map { $0! }
    }

    /// Tells the pool's spinning workers to sleep now instead of spinning out their ~1 ms: call it
    /// before this thread blocks on I/O for long (a worker waiting for its next job), so the
    /// spinners do not take the cores the other processes need meanwhile. (The router waiting a
    /// millisecond or two for its experts does not: its next kernels want the spinners awake.) The next
    /// `forEach` wakes them again (one wake-up, ~60 µs, instead of a hot start).
    public static func park() {
        if #available(macOS 15.0, *) { WorkerPool.park() }
    }

}

/// A unit of parallel work as a value (its operands as stored properties), for
/// `Parallel.forEach(tasks:job:)`: `run` is called once per task, possibly on several threads at
/// once, with `worker` unique among the concurrent calls.
public protocol ParallelJob {
    func run(task: Int, worker: Int)
}

/// The persistent worker threads behind `Parallel`.
/// `@unchecked Sendable`: `job`/`jobContext`/`jobTasks` are written only by the single caller holding `busy`,
/// while `open` is false and no worker is `active`; workers read them only after incrementing
/// `active` and then seeing `open` true (sequentially consistent), so reads never race writes.
@available(macOS 15.0, *)
final class WorkerPool: @unchecked Sendable {
    let threads: Int
    private let generation = Atomic<Int>(0)
    private let nextTask = Atomic<Int>(0)
    private let finished = Atomic<Int>(0)
    /// True while the current job accepts workers; `active` counts workers inside it.
    private let open = Atomic<Bool>(false)
    private let active = Atomic<Int>(0)
    private let sleeping = Atomic<Int>(0)
    private let stop = Atomic<Bool>(false)
    /// Set by `park()`: spinning workers go to sleep at once. Cleared when the next job is posted.
    private let parked = Atomic<Bool>(false)
    private let wake = DispatchSemaphore(value: 0)
    /// The posted job: a function of no captures, called with `jobContext` (a pointer into the
    /// caller's frame, valid until `run` returns).
    private var job: ((UnsafeRawPointer, Int, Int) -> Void)?
    private var jobContext: UnsafeRawPointer?
    private var jobTasks = 0
    /// Spin this long (ns) waiting for the next job before sleeping. While spinning the worker
    /// yields now and then so that other processes sharing the cores (a pipeline's roles) get them.
    private let spinNanoseconds: UInt64 = 1_000_000

    nonisolated(unsafe) private static var current = WorkerPool(threads: ProcessInfo.processInfo.activeProcessorCount)
    private static let currentLock = NSLock()
    private static let busy = Atomic<Bool>(false)

    static var currentThreads: Int {
        currentLock.lock()
        defer { currentLock.unlock() }
        return current.threads
    }

    init(threads: Int) {
        self.threads = threads
        for w in 1..<max(threads, 1) {
            let t = Thread { [self] in self.workerLoop(w) }
            t.stackSize = 1 << 20
            t.start()
        }
    }

    static func setThreads(_ n: Int) {
        // Wait until no job runs, then swap pools.
        while !busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged {}
        currentLock.lock()
        if current.threads != n {
            current.shutdown()
            current = WorkerPool(threads: n)
        }
        currentLock.unlock()
        busy.store(false, ordering: .releasing)
    }

    /// The pool if no other job runs now (nil: run serially — nested or concurrent use).
    static func acquire() -> WorkerPool? {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return nil }
        currentLock.lock()
        let p = current
        currentLock.unlock()
        if p.threads <= 1 { busy.store(false, ordering: .releasing); return nil }
        return p
    }

    static func release() { busy.store(false, ordering: .releasing) }

    static func park() {
        currentLock.lock()
        let p = current
        currentLock.unlock()
        if p.threads > 1 { p.parked.store(true, ordering: .relaxed) }
    }

    private func shutdown() {
        stop.store(true, ordering: .releasing)
        generation.add(1, ordering: .releasing)
        for _ in 0..<threads { wake.signal() }
    }

    func run(tasks: Int, context: UnsafeRawPointer, _ invoke: @escaping (UnsafeRawPointer, Int, Int) -> Void) {
        job = invoke
        jobContext = context
        jobTasks = tasks
        nextTask.store(0, ordering: .relaxed)
        finished.store(0, ordering: .relaxed)
        parked.store(false, ordering: .relaxed)
        open.store(true, ordering: .sequentiallyConsistent)
        generation.add(1, ordering: .sequentiallyConsistent)
        let sleepers = sleeping.exchange(0, ordering: .sequentiallyConsistent)
        for _ in 0..<sleepers { wake.signal() }
        work(invoke, context, tasks: tasks, worker: 0)
        // Tasks claimed by workers may still run; then close the job and wait only for the
        // workers that joined (a worker arriving after `open` turned false never reads `job`).
        // Waiting yields now and then: when other processes share the cores, the thread still
        // holding a task may be waiting for this core, and a bare spin would hold it a whole
        // scheduler slice.
        var spins = 0
        while finished.load(ordering: .acquiring) < tasks { spins += 1; if spins & 63 == 0 { sched_yield() } }
        open.store(false, ordering: .sequentiallyConsistent)
        while active.load(ordering: .sequentiallyConsistent) > 0 { spins += 1; if spins & 63 == 0 { sched_yield() } }
        job = nil
        jobContext = nil
    }

    @inline(__always)
    private func work(_ invoke: (UnsafeRawPointer, Int, Int) -> Void, _ context: UnsafeRawPointer, tasks: Int, worker: Int) {
        while true {
            let t = nextTask.add(1, ordering: .relaxed).oldValue
            if t >= tasks { return }
            invoke(context, t, worker)
            finished.add(1, ordering: .releasing)
        }
    }

    private func workerLoop(_ w: Int) {
        // Start from the pool's initial generation, not a fresh load, so a job posted before this
        // thread first ran is still joined when it is open.
        var seen = 0
        while true {
            // Spin for the next job, then sleep.
            var spins = 0
            var deadline: UInt64 = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                if spins & 63 == 0 { sched_yield() }
                if spins & 1023 == 0 || parked.load(ordering: .relaxed) {
                    let now = DispatchTime.now().uptimeNanoseconds
                    if deadline == 0 && !parked.load(ordering: .relaxed) { deadline = now + spinNanoseconds }
                    else if now > deadline {
                        sleeping.add(1, ordering: .sequentiallyConsistent)
                        if generation.load(ordering: .sequentiallyConsistent) == seen { wake.wait() }
                        deadline = 0
                    }
                }
            }
            seen = generation.load(ordering: .acquiring)
            if stop.load(ordering: .acquiring) { return }
            // Join only while the job is open (Dekker pair with the caller's close + active check).
            active.add(1, ordering: .sequentiallyConsistent)
            if open.load(ordering: .sequentiallyConsistent), let invoke = job, let context = jobContext {
                work(invoke, context, tasks: jobTasks, worker: w)
            }
            active.subtract(1, ordering: .releasing)
        }
    }
}
