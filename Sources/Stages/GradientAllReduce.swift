import Foundation
import Tensor
import Training
import Wire

/// `GradientReducer` over ZeroMQ: rank 0 binds a ROUTER at the pipeline's `allreduce` endpoint, the
/// other ranks connect DEALERs. Each step every peer sends its gradients (`gradShare`); rank 0 sums
/// them in rank order (its own first) and sends the sum back (`gradSum`) to each. Every receive has a
/// deadline; a peer that does not answer stops training with a typed error.
public final class ZeroMQAllReduce: GradientReducer {
    public let rank: Int
    public let world: Int
    public let timeout: Double
    private let socket: Socket
    private var peers: [Int: [UInt8]] = [:]   // rank → routing id (rank 0 only)
    private var round: UInt32 = 0

    public init(rank: Int, world: Int, endpoint: String, timeout: Double = 300) throws {
        guard world >= 1, (0..<world).contains(rank) else { throw TrainingError.invalidSetting("rank \(rank) of world \(world)") }
        self.rank = rank; self.world = world; self.timeout = timeout
        socket = try Socket(rank == 0 ? .router : .dealer)
        if rank == 0 { try socket.bind(endpoint) } else { try socket.connect(endpoint) }
    }

    deinit { socket.close() }

    /// Largest tensor per frame (stays far below the wire's 2 GiB tensor limit).
    static let chunk = 1 << 26

    static func chunks(_ flat: Tensor) -> [Tensor] {
        var out: [Tensor] = []
        var at = 0
        while at < flat.count {
            let n = min(chunk, flat.count - at)
            let t = Tensor(zeros: [n])
            (t.floats).update(from: flat.floats + at, count: n)
            out.append(t); at += n
        }
        return out
    }

    struct Share: Codable { var rank: Int; var round: UInt32; var stats: [Double]; var count: Int }

    private func receive() throws -> ([UInt8]?, Message) {
        guard let frames = try socket.receive(timeout: timeout) else {
            throw TrainingError.remote("gradient all-reduce: no word from the other replicas after \(Int(timeout)) s (rank \(rank) of \(world))")
        }
        if rank == 0 {
            guard frames.count > 1 else { throw TrainingError.remote("gradient all-reduce: a frame without routing id") }
            return (frames[0].bytes, try Message(frames: Array(frames.dropFirst())))
        }
        return (nil, try Message(frames: frames))
    }

    public func allReduce(_ gradients: Tensor, stats: [Double]) throws -> (Tensor, [Double]) {
        round &+= 1
        if world == 1 { return (gradients, stats) }
        let mine = Share(rank: rank, round: round, stats: stats, count: gradients.count)
        if rank != 0 {
            try socket.send(try Message.json(.gradShare, mine, sequence: round, tensors: Self.chunks(gradients)))
            let (_, reply) = try receive()
            if reply.kind == .error { throw TrainingError.remote("gradient all-reduce: rank 0: \(reply.payloadText)") }
            guard reply.kind == .gradSum, reply.sequence == round else { throw TrainingError.remote("gradient all-reduce: unexpected \(reply.kind)") }
            let total = try reply.decodePayload(Share.self)
            return (try Self.concat(reply.tensors, count: gradients.count), total.stats)
        }
        var shares: [Int: (Share, [Tensor])] = [:]
        while shares.count < world - 1 {
            let (id, m) = try receive()
            guard m.kind == .gradShare, let id else { continue }
            let s = try m.decodePayload(Share.self)
            guard s.round == round, s.count == gradients.count, (1..<world).contains(s.rank) else {
                try? socket.send(Message.errorReply(to: m, "rank \(s.rank) sent round \(s.round) with \(s.count) values; rank 0 is at round \(round) with \(gradients.count)"), to: id)
                throw TrainingError.remote("gradient all-reduce: rank \(s.rank) is out of step (round \(s.round), \(s.count) values)")
            }
            peers[s.rank] = id
            shares[s.rank] = (s, m.tensors)
        }
        let sum = gradients.copy()
        var totals = stats
        for r in 1..<world {
            guard let (s, ts) = shares[r] else { continue }
            let g = try Self.concat(ts, count: gradients.count)
            Vec.add(sum, g)
            for i in 0..<min(totals.count, s.stats.count) { totals[i] += s.stats[i] }
        }
        let reply = Share(rank: 0, round: round, stats: totals, count: sum.count)
        for r in 1..<world {
            guard let id = peers[r] else { continue }
            try socket.send(try Message.json(.gradSum, reply, sequence: round, tensors: Self.chunks(sum)), to: id)
        }
        return (sum, totals)
    }

    static func concat(_ ts: [Tensor], count: Int) throws -> Tensor {
        guard ts.reduce(0, { $0 + $1.count }) == count else { throw TrainingError.remote("gradient all-reduce: \(ts.reduce(0) { $0 + $1.count }) values, expected \(count)") }
        let out = Tensor(zeros: [count])
        var at = 0
        for t in ts { Vec.copy(out, at: at, from: t); at += t.count }
        return out
    }
}
