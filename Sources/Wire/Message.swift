import Foundation
import Tensor

/// What a message is for. Numbers are part of the wire format: append, never renumber.
public enum MessageKind: UInt16, Sendable, CaseIterable {
    // Control (any role).
    case ready = 1          // worker → dispatcher: payload JSON `WorkerAnnouncement`
    case heartbeat = 2      // both directions
    case disconnect = 3     // worker → dispatcher: leaving cleanly
    case error = 4          // reply: payload UTF-8 text
    case stats = 5          // request: no payload
    case statsReply = 6     // reply: payload JSON object
    // Expert workers (router → expert).
    case expertForward = 10 // layer, expert; tensor 0 = rows [n, hidden]
    case expertResult = 11  // tensor 0 = outputs [n, hidden]
    // Expert workers in training (trainer → expert; forward reuses expertForward/expertResult).
    case expertBackward = 12    // layer, expert; tensor 0 = output gradients [n, hidden] → expertResult with input gradients
    case trainControl = 13      // payload JSON TrainControl (configure, zero, norm, step, state, restore, export); tensors for restore
    case trainControlReply = 14 // payload JSON TrainControlReply; tensors (state/export pages)
    // Data-parallel trainers (rank > 0 → rank 0 and back).
    case gradShare = 15         // sequence = round; payload JSON {rank, round, stats, count}; tensors: flat gradient chunks
    case gradSum = 16           // the summed gradients, same layout
    // Decode stage.
    case mediaChunk = 20    // stream = upload id; sequence = chunk index; payload = bytes; flags.last on the final chunk
    case decoded = 21       // tensor 0 = encoder input (pixels [n, 3, S, S] or log-mel [n, mel, frames])
    case mediaOpen = 22     // stream = upload id; payload JSON MediaItem (kind and name); chunks follow
    case ack = 23           // empty reply (a chunk was taken)
    // Encode / connect stages.
    case encode = 30
    case encoded = 31
    case connect = 40
    case connected = 41
    // Router (trunk).
    case trunkStep = 50     // payload JSON step description; tensors: input embeddings per sequence
    case logits = 51
    case release = 52       // drop the KV caches of the listed sequences
    // Coordinator (client-facing).
    case ask = 60           // payload JSON request; media follows as mediaChunk messages
    case token = 61         // streamed: payload JSON {"id":…, "text":…}
    case done = 62          // final: payload JSON {"ids":…, "text":…, "timings":…}
    case cancel = 63        // client → coordinator: request id of an ask to abandon (its KV cache is released)
}

/// Per-message flags.
public struct MessageFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// A payload frame follows the tensor frames.
    public static let hasPayload = MessageFlags(rawValue: 1)
    /// The last message of a stream (last media chunk).
    public static let last = MessageFlags(rawValue: 2)
    static let known: MessageFlags = [.hasPayload, .last]
}

/// Bounds a receiver enforces before touching a message's contents.
public struct WireLimits: Sendable {
    public var maxTensors = 64
    public var maxRank = 6
    public var maxTensorBytes = 2 << 30
    public var maxPayloadBytes = 256 << 20
    public init() {}
    public static let standard = WireLimits()
}

/// One protocol message: the fixed header fields, tensors sent as raw little-endian frames and an
/// optional byte payload (JSON for control data, media bytes for chunks). Never JSON for tensors.
public struct Message: @unchecked Sendable {
    public static let magic: UInt32 = 0x454F_4D55  // "UMOE" read as little-endian bytes
    public static let version: UInt16 = 1
    static let fixedHeaderSize = 44

    public var kind: MessageKind
    /// This hop's request id: a dispatcher replaces it with its job id and restores it in the reply.
    public var requestID: UInt64
    /// The end-to-end stream (client request or media upload) the message belongs to; dispatchers
    /// keep it, so a worker can tie together chunks of one upload.
    public var stream: UInt64
    public var sequence: UInt32
    public var layer: Int32
    public var expert: Int32
    public var flags: MessageFlags
    public var tensors: [Tensor]
    public var payload: Data?

    public init(_ kind: MessageKind, requestID: UInt64 = 0, stream: UInt64 = 0, sequence: UInt32 = 0, layer: Int32 = -1, expert: Int32 = -1,
                flags: MessageFlags = [], tensors: [Tensor] = [], payload: Data? = nil) {
        self.kind = kind
        self.requestID = requestID
        self.stream = stream
        self.sequence = sequence
        self.layer = layer
        self.expert = expert
        self.flags = flags
        self.tensors = tensors
        self.payload = payload
    }

    /// An error reply to `request` carrying `text`.
    public static func errorReply(to request: Message?, _ text: String) -> Message {
        Message(.error, requestID: request?.requestID ?? 0, stream: request?.stream ?? 0, sequence: request?.sequence ?? 0,
                layer: request?.layer ?? -1, expert: request?.expert ?? -1, payload: Data(text.utf8))
    }

    /// A message whose payload is `object` encoded as JSON.
    public static func json<T: Encodable>(_ kind: MessageKind, _ object: T, requestID: UInt64 = 0, stream: UInt64 = 0,
                                          sequence: UInt32 = 0, tensors: [Tensor] = []) throws -> Message {
        Message(kind, requestID: requestID, stream: stream, sequence: sequence, tensors: tensors,
                payload: try JSONEncoder().encode(object))
    }

    /// Decodes the JSON payload; a missing or invalid payload is `malformed`.
    public func decodePayload<T: Decodable>(_ type: T.Type) throws -> T {
        guard let payload else { throw WireError.malformed("\(kind) message carries no payload") }
        do { return try JSONDecoder().decode(type, from: payload) } catch {
            throw WireError.malformed("\(kind) payload is not a valid \(T.self): \(error)")
        }
    }

    public var payloadText: String { payload.map { String(decoding: $0, as: UTF8.self) } ?? "" }

    /// Header + tensor frames + payload frame, ready for `Socket.send`.
    public func frames() -> [OutFrame] {
        var h = ByteWriter()
        h.u32(Message.magic); h.u16(Message.version); h.u16(kind.rawValue)
        h.u64(requestID); h.u64(stream); h.u32(sequence); h.i32(layer); h.i32(expert)
        var f = flags
        if payload != nil { f.insert(.hasPayload) } else { f.remove(.hasPayload) }
        h.u32(f.rawValue)
        // The wire carries f32/f16/bf16 activations; a q8_0 weight (never sent today) goes widened.
        let wireTensors = tensors.map { $0.dtype == .q8_0 ? $0.converted(to: .f32) : $0 }
        h.u16(UInt16(wireTensors.count)); h.u16(0)
        for t in wireTensors {
            h.u8(Message.dtypeCode(t.dtype)); h.u8(UInt8(t.rank)); h.u16(0)
            for d in t.shape { h.u64(UInt64(d)) }
        }
        var out: [OutFrame] = [.bytes(h.bytes)]
        for t in wireTensors { out.append(.tensor(t)) }
        if let payload { out.append(.bytes([UInt8](payload))) }
        return out
    }

    static func dtypeCode(_ d: DType) -> UInt8 {
        switch d {
        case .f32: return 1
        case .f16: return 2
        case .bf16: return 3
        case .q8_0: preconditionFailure("q8_0 tensors travel dequantised (frames() widens them)")
        }
    }

    static func dtype(code: UInt8) -> DType? {
        switch code { case 1: return .f32; case 2: return .f16; case 3: return .bf16; default: return nil }
    }

    /// Parses and validates `frames` (magic, version, kind, flags, frame count, every tensor's byte
    /// length against its shape × dtype size, limits). Throws `WireError.malformed` naming the problem.
    public init(frames: [InFrame], limits: WireLimits = .standard) throws {
        guard let head = frames.first else { throw WireError.malformed("no frames") }
        var r = ByteReader(head.bytes)
        guard head.count >= Message.fixedHeaderSize else {
            throw WireError.malformed("header is \(head.count) bytes, needs at least \(Message.fixedHeaderSize)")
        }
        let magic = try r.u32()
        guard magic == Message.magic else { throw WireError.malformed(String(format: "bad magic 0x%08x (not a unimoe message)", magic)) }
        let version = try r.u16()
        guard version == Message.version else { throw WireError.malformed("protocol version \(version), this build speaks \(Message.version)") }
        let rawKind = try r.u16()
        guard let kind = MessageKind(rawValue: rawKind) else { throw WireError.malformed("unknown message kind \(rawKind)") }
        self.kind = kind
        requestID = try r.u64()
        stream = try r.u64()
        sequence = try r.u32()
        layer = try r.i32()
        expert = try r.i32()
        let rawFlags = try r.u32()
        flags = MessageFlags(rawValue: rawFlags)
        guard flags.isSubset(of: MessageFlags.known) else { throw WireError.malformed(String(format: "unknown flags 0x%x", rawFlags)) }
        let tensorCount = Int(try r.u16())
        _ = try r.u16()
        guard tensorCount <= limits.maxTensors else { throw WireError.malformed("\(tensorCount) tensors, limit \(limits.maxTensors)") }
        let hasPayload = flags.contains(.hasPayload)
        let expectedFrames = 1 + tensorCount + (hasPayload ? 1 : 0)
        guard frames.count == expectedFrames else {
            throw WireError.malformed("\(frames.count) frames, header announces \(expectedFrames)")
        }
        var tensors: [Tensor] = []
        tensors.reserveCapacity(tensorCount)
        for i in 0..<tensorCount {
            let code = try r.u8()
            guard let dtype = Message.dtype(code: code) else { throw WireError.malformed("tensor \(i): unknown dtype code \(code)") }
            let rank = Int(try r.u8())
            _ = try r.u16()
            guard rank <= limits.maxRank else { throw WireError.malformed("tensor \(i): rank \(rank), limit \(limits.maxRank)") }
            var shape: [Int] = []
            var elements = 1
            for _ in 0..<rank {
                let d = try r.u64()
                guard d <= UInt64(limits.maxTensorBytes) else { throw WireError.malformed("tensor \(i): dimension \(d) too large") }
                shape.append(Int(d))
                let (m, overflow) = elements.multipliedReportingOverflow(by: Int(d))
                guard !overflow, m * dtype.size <= limits.maxTensorBytes else {
                    throw WireError.malformed("tensor \(i): shape \(shape)… exceeds \(limits.maxTensorBytes) bytes")
                }
                elements = m
            }
            let frame = frames[1 + i]
            guard frame.count == elements * dtype.size else {
                throw WireError.malformed("tensor \(i): frame has \(frame.count) bytes, shape \(shape) \(dtype.rawValue) needs \(elements * dtype.size)")
            }
            tensors.append(frame.tensor(shape: shape, dtype: dtype))
        }
        guard r.remaining == 0 else { throw WireError.malformed("header has \(r.remaining) trailing bytes") }
        self.tensors = tensors
        if hasPayload {
            let p = frames[frames.count - 1]
            guard p.count <= limits.maxPayloadBytes else {
                throw WireError.malformed("payload of \(p.count) bytes, limit \(limits.maxPayloadBytes)")
            }
            payload = p.data
        } else {
            payload = nil
        }
    }
}

/// Little-endian field writer for headers.
struct ByteWriter {
    var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func i32(_ v: Int32) { u32(UInt32(bitPattern: v)) }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
}

/// Bounds-checked little-endian field reader; running off the end is `malformed`.
struct ByteReader {
    let bytes: [UInt8]
    var offset = 0
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    var remaining: Int { bytes.count - offset }

    private mutating func take(_ n: Int) throws -> ArraySlice<UInt8> {
        guard remaining >= n else { throw WireError.malformed("header truncated at byte \(offset) (needs \(n) more)") }
        defer { offset += n }
        return bytes[offset..<offset + n]
    }

    private mutating func int<T: FixedWidthInteger>(_: T.Type) throws -> T {
        let s = try take(MemoryLayout<T>.size)
        var v: T = 0
        for (i, b) in s.enumerated() { v |= T(b) << (8 * i) }
        return v
    }

    mutating func u8() throws -> UInt8 { try int(UInt8.self) }
    mutating func u16() throws -> UInt16 { try int(UInt16.self) }
    mutating func u32() throws -> UInt32 { try int(UInt32.self) }
    mutating func i32() throws -> Int32 { Int32(bitPattern: try u32()) }
    mutating func u64() throws -> UInt64 { try int(UInt64.self) }
}

extension Socket {
    /// Sends `message`, prefixed by `routingID` when this is a ROUTER addressing one peer.
    public func send(_ message: Message, to routingID: [UInt8]? = nil) throws {
        var frames = message.frames()
        if let routingID { frames.insert(.bytes(routingID), at: 0) }
        try send(frames)
    }
}
