import Foundation
import Stages
import Tensor
import TestSupport
import Testing
import Wire

/// A seeded mutation fuzzer over the wire: well-formed messages of every kind, mutated (bytes
/// flipped, frames cut, dropped, repeated, replaced, header fields randomised), sent into every
/// role over its real socket — the worker roles with the test playing their dispatcher, the
/// coordinator as a client. Every 250 cases the role must still answer a stats query; at the end
/// it must be running and its memory bounded. `UNIMOE_FUZZ_CASES` sets the cases per role
/// (default 1500; `scripts/fuzz` runs 20000 per role) and `UNIMOE_FUZZ_SEED` the seed.
@Suite(.serialized) struct WireFuzzTests {
    static let cases = Int(ProcessInfo.processInfo.environment["UNIMOE_FUZZ_CASES"] ?? "") ?? 1500
    static let seed = UInt64(ProcessInfo.processInfo.environment["UNIMOE_FUZZ_SEED"] ?? "") ?? 20261203

    @Test(arguments: ["decode", "encode", "connect", "router", "expert", "coordinator"])
    func mutatedMessagesNeverBreakARole(role: String) throws {
        let c = try Cluster()
        defer { c.stop() }
        let socket: Socket
        var peer: [UInt8]? = nil
        if role == "coordinator" {
            try c.start("coordinator", name: role)
            socket = try Socket(.dealer)
            try socket.connect(c.frontend)
        } else {
            // The router waits (up to expert_timeout) for experts on a step that parses: give it some.
            if role == "router" { for g in [0, 1] { try c.start("expert", ["--group", "\(g)"], name: "expert\(g)") } }
            guard let (fake, id) = try c.startPlayingDispatcher(role) else { return }
            socket = fake
            peer = id
        }
        let pid = try #require(c.processes[role]).processIdentifier
        var rng = SplitMix(seed: Self.seed &+ UInt64(role.utf8.reduce(0) { $0 &* 31 &+ UInt64($1) }))
        let seeds = try Self.seedMessages()
        func send(_ frames: [[UInt8]]) throws {
            try socket.send((peer.map { [OutFrame.bytes($0)] } ?? []) + frames.map { .bytes($0) })
        }
        func drain() throws { while try socket.receive(timeout: 0) != nil {} }
        func stillServes(_ n: Int) throws -> Bool {
            let id = UInt64(1 << 40) + UInt64(n)
            try send(Message(.stats, requestID: id).frames().map(Self.bytes))
            let deadline = monotonicSeconds() + 10
            while monotonicSeconds() < deadline {
                guard let frames = try socket.receive(timeout: deadline - monotonicSeconds()) else { break }
                let body = Array(frames.dropFirst(peer == nil ? 0 : 1))
                if let m = try? Message(frames: body), m.kind == .statsReply, m.requestID == id { return true }
            }
            return false
        }
        var rssAfterWarmup = 0
        let t0 = monotonicSeconds()
        for n in 0..<Self.cases {
            let original = seeds[Int(rng.next() % UInt64(seeds.count))]
            try send(Self.mutate(original, &rng))
            if n % 25 == 0 { try drain() }
            if n % 250 == 249 {
                guard try stillServes(n) else {
                    Issue.record("\(role) stopped answering after \(n + 1) fuzz cases (alive: \(alive(pid)))\n\(c.log(role).suffix(1500))")
                    return
                }
                if n == 249 { rssAfterWarmup = residentKiB(pid) }
            }
        }
        #expect(try stillServes(Self.cases))
        #expect(c.processes[role]?.isRunning == true)
        #expect(c.log(role).contains("rejected"), "the mutated messages never reached \(role)")
        let rss = residentKiB(pid)
        #expect(rss < rssAfterWarmup + 128 << 10, "\(role) RSS grew \(rssAfterWarmup) → \(rss) KiB over \(Self.cases) cases")
        // Under `scripts/fuzz --asan` the roles are AddressSanitizer builds: stopped, they report
        // any leak or memory error in their log.
        c.stop(role)
        #expect(!c.log(role).contains("Sanitizer"), "\(c.log(role).suffix(3000))")
        print("fuzz: \(role): \(Self.cases) cases in \(String(format: "%.1f", monotonicSeconds() - t0)) s, 0 crashes, RSS \(rssAfterWarmup) → \(rss) KiB")
    }

    /// One well-formed message of every kind any role takes (tiny tensors, plausible payloads).
    static func seedMessages() throws -> [[[UInt8]]] {
        let hidden = 64
        func t(_ shape: [Int]) -> Tensor { Tensor(zeros: shape) }
        var ms: [Message] = [
            Message(.heartbeat, requestID: 1), Message(.stats, requestID: 2), Message(.cancel, requestID: 3),
            Message(.disconnect), Message(.ack, requestID: 4),
            try Message.json(.ready, WorkerAnnouncement(role: "router", services: ["router"], name: "fuzz")),
            try Message.json(.mediaOpen, MediaItem(modality: .image, name: "x.png"), requestID: 5, stream: 9),
            Message(.mediaChunk, requestID: 5, stream: 9, sequence: 0, layer: 0, flags: .last, payload: Data([0x89, 0x50, 0x4e, 0x47, 1, 2, 3])),
            Message(.encode, requestID: 6, stream: 9, expert: 0, tensors: [t([1, 3, 8, 8])]),
            Message(.connect, requestID: 7, stream: 9, expert: 1, tensors: [t([2, 16])]),
            try Message.json(.trunkStep, TrunkStepHeader(sequences: [11]), requestID: 8, tensors: [t([3, hidden])]),
            try Message.json(.release, TrunkStepHeader(sequences: [11]), requestID: 9),
            Message(.expertForward, requestID: 10, layer: 1, expert: 0, tensors: [t([2, hidden])]),
            try Message.expertForward(layer: 1, experts: [1, 0], rows: [t([1, hidden]), t([2, hidden])]),
            Message(.expertResult, requestID: 11, tensors: [t([2, hidden])]),
            try Message.json(.ask, AskRequest(question: "hi", maxNewTokens: 2), requestID: 12),
            Message(.token, requestID: 13, payload: Data(#"{"id":1,"text":"a"}"#.utf8)),
            Message(.error, requestID: 14, payload: Data("no".utf8)),
        ]
        ms.append(Message(.decoded, requestID: 15, tensors: [t([1, 3, 8, 8])]))
        return ms.map { $0.frames().map(bytes) }
    }

    static func bytes(_ f: OutFrame) -> [UInt8] {
        switch f {
        case .bytes(let b): return b
        case .tensor(let t): return Array(UnsafeRawBufferPointer(start: UnsafeRawPointer(t.floats), count: t.byteCount))
        }
    }

    /// 1–3 mutations of a message's frames.
    static func mutate(_ message: [[UInt8]], _ rng: inout SplitMix) -> [[UInt8]] {
        var frames = message
        for _ in 0...(rng.next() % 3) {
            let i = Int(rng.next() % UInt64(max(frames.count, 1)))
            switch rng.next() % 9 {
            case 0, 1:  // flip bytes anywhere
                guard !frames.isEmpty, !frames[i].isEmpty else { continue }
                for _ in 0...(rng.next() % 4) { frames[i][Int(rng.next() % UInt64(frames[i].count))] ^= UInt8(truncatingIfNeeded: rng.next() | 1) }
            case 2:  // a header field (kind, ids, sequence, layer, expert, flags, counts) set to a random value
                guard !frames.isEmpty, frames[0].count >= 44 else { continue }
                let at = [6, 8, 16, 24, 28, 32, 36, 40, 42][Int(rng.next() % 9)]
                let v = rng.next()
                for k in 0..<4 where at + k < frames[0].count { frames[0][at + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(k))) }
            case 3:  // cut a frame short
                guard !frames.isEmpty else { continue }
                frames[i] = Array(frames[i].prefix(Int(rng.next() % UInt64(frames[i].count + 1))))
            case 4:  // drop a frame
                guard !frames.isEmpty else { continue }
                frames.remove(at: i)
            case 5:  // repeat a frame
                guard !frames.isEmpty else { continue }
                frames.insert(frames[i], at: i)
            case 6:  // a random frame appended
                frames.append((0..<Int(rng.next() % 64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
            case 7:  // a frame replaced by random bytes of the same length
                guard !frames.isEmpty else { continue }
                frames[i] = frames[i].map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            default:  // the kind set to another valid kind
                guard !frames.isEmpty, frames[0].count >= 8 else { continue }
                let kinds: [UInt16] = [1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15, 16, 20, 21, 22, 23, 30, 31, 40, 41, 50, 51, 52, 60, 61, 62, 63]
                let k = kinds[Int(rng.next() % UInt64(kinds.count))]
                frames[0][6] = UInt8(k & 0xff); frames[0][7] = UInt8(k >> 8)
            }
        }
        return frames
    }
}

/// SplitMix64: a tiny seeded generator, so a failing fuzz case is reproducible from its seed.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
