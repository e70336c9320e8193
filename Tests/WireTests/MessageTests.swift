import Foundation
import Tensor
import Testing
@testable import Wire

/// A connected PAIR of sockets over inproc, to push raw frames through real ZeroMQ.
func pairSockets() throws -> (Socket, Socket) {
    let a = try Socket(.pair), b = try Socket(.pair)
    let ep = "inproc://test-\(UUID().uuidString)"
    try a.bind(ep)
    try b.connect(ep)
    return (a, b)
}

func receiveMessage(_ s: Socket, limits: WireLimits = .standard) throws -> Message {
    guard let frames = try s.receive(timeout: 2) else { throw WireError.timeout("test receive") }
    return try Message(frames: frames, limits: limits)
}

@Suite struct MessageTests {
    /// EXPERT_FORWARD for one worker's share of a layer: one tensor per expert, the experts in the
    /// header (one) or the payload (several); anything inconsistent is `malformed`.
    @Test func expertForwardCarriesSeveralExperts() throws {
        let (a, b) = try pairSockets()
        let r0 = try Tensor(shape: [2, 4], values: (0..<8).map(Float.init)), r1 = try Tensor(shape: [1, 4], values: [9, 8, 7, 6])
        try a.send(try Message.expertForward(layer: 3, experts: [5, 2], rows: [r0, r1]))
        let m = try receiveMessage(b)
        #expect(m.kind == .expertForward && m.layer == 3)
        #expect(try m.expertIndices() == [5, 2])
        #expect(m.tensors.map { $0.toArray() } == [r0.toArray(), r1.toArray()])
        let one = try Message.expertForward(layer: 1, experts: [7], rows: [r1])
        #expect(one.payload == nil && one.expert == 7)
        #expect(try one.expertIndices() == [7])

        func malformed(_ m: Message) -> Bool {
            do { _ = try m.expertIndices(); return false } catch WireError.malformed { return true } catch { return false }
        }
        var noList = Message(.expertForward, layer: 0, expert: 1, tensors: [r0, r1])
        #expect(malformed(noList))
        noList.payload = Data("[1]".utf8)
        #expect(malformed(noList), "one expert named for two tensors")
        noList.payload = Data("[1,1]".utf8)
        #expect(malformed(noList), "an expert twice")
        noList.payload = Data("[1,-2]".utf8)
        #expect(malformed(noList), "a negative expert")
        noList.payload = Data("{\"experts\":[1,2]}".utf8)
        #expect(malformed(noList), "not a list")
        noList.payload = Data("[1,2]".utf8)
        #expect(try noList.expertIndices() == [1, 2])
    }

    @Test func roundTripOverTCP() throws {
        let router = try Socket(.router)
        try router.bind("tcp://127.0.0.1:*")
        let dealer = try Socket(.dealer)
        try dealer.connect(try router.lastEndpoint())
        let a = try Tensor(shape: [3, 4], values: (0..<12).map { Float($0) * 0.5 - 2 })
        let b = a.converted(to: .bf16)
        let empty = Tensor(zeros: [0, 4])
        let big = try Tensor(shape: [64, 512], values: (0..<(64 * 512)).map { Float($0 % 977) })
        let sent = Message(.expertForward, requestID: 0xDEAD_BEEF_0102, stream: 0x0102_0304_0506_0708, sequence: 7, layer: 3, expert: 1, flags: [.last],
                           tensors: [a, b, empty, big], payload: Data("{\"x\":1}".utf8))
        try dealer.send(sent)
        guard let frames = try router.receive(timeout: 2) else { Issue.record("no message"); return }
        let m = try Message(frames: Array(frames.dropFirst()))
        #expect(m.kind == .expertForward)
        #expect(m.requestID == 0xDEAD_BEEF_0102)
        #expect(m.sequence == 7 && m.layer == 3 && m.expert == 1 && m.stream == 0x0102_0304_0506_0708)
        #expect(m.flags.contains(.last) && m.flags.contains(.hasPayload))
        #expect(m.tensors.map(\.shape) == [[3, 4], [3, 4], [0, 4], [64, 512]])
        #expect(m.tensors.map(\.dtype) == [.f32, .bf16, .f32, .f32])
        #expect(m.tensors[0].toArray() == a.toArray())
        #expect(m.tensors[1].toArray() == b.toArray())
        #expect(m.tensors[3].toArray() == big.toArray())
        #expect(m.payloadText == "{\"x\":1}")
        // Reply through the ROUTER to that peer.
        try router.send(Message(.expertResult, requestID: 5, tensors: [a]), to: frames[0].bytes)
        let back = try receiveMessage(dealer)
        #expect(back.kind == .expertResult && back.requestID == 5 && back.tensors[0].toArray() == a.toArray())
    }

    /// Valid header bytes for one f32 tensor of `shape`, to corrupt field by field.
    func header(kind: UInt16 = 10, version: UInt16 = 1, magic: UInt32 = Message.magic, flags: UInt32 = 0,
                tensors: [(UInt8, [UInt64])] = [(1, [2, 3])]) -> [UInt8] {
        var w = ByteWriter()
        w.u32(magic); w.u16(version); w.u16(kind); w.u64(9); w.u64(3); w.u32(0); w.i32(0); w.i32(0); w.u32(flags)
        w.u16(UInt16(tensors.count)); w.u16(0)
        for (code, dims) in tensors {
            w.u8(code); w.u8(UInt8(dims.count)); w.u16(0)
            for d in dims { w.u64(d) }
        }
        return w.bytes
    }

    func expectMalformed(_ frames: [[UInt8]], containing needle: String, limits: WireLimits = .standard,
                         sourceLocation: SourceLocation = #_sourceLocation) throws {
        let (a, b) = try pairSockets()
        try a.send(frames.map { OutFrame.bytes($0) })
        do {
            _ = try receiveMessage(b, limits: limits)
            Issue.record("accepted a malformed message (\(needle))", sourceLocation: sourceLocation)
        } catch let WireError.malformed(text) {
            #expect(text.contains(needle), "\(text)", sourceLocation: sourceLocation)
        }
    }

    @Test func handWrittenValidHeaderIsAccepted() throws {
        let (a, b) = try pairSockets()
        try a.send([.bytes(header()), .bytes([UInt8](repeating: 0, count: 24))])
        let m = try receiveMessage(b)
        #expect(m.kind == .expertForward && m.requestID == 9 && m.stream == 3 && m.tensors[0].shape == [2, 3])
    }

    @Test func everyCorruptionIsNamed() throws {
        let body = [UInt8](repeating: 0, count: 24)
        try expectMalformed([header(magic: 0x1234_5678), body], containing: "bad magic")
        try expectMalformed([header(version: 9), body], containing: "protocol version 9")
        try expectMalformed([header(kind: 999), body], containing: "unknown message kind 999")
        try expectMalformed([header(flags: 0x80), body], containing: "unknown flags")
        try expectMalformed([header()], containing: "1 frames, header announces 2")
        try expectMalformed([header(), body, body], containing: "3 frames, header announces 2")
        try expectMalformed([header(), [UInt8](repeating: 0, count: 20)], containing: "frame has 20 bytes")
        try expectMalformed([header(tensors: [(7, [2, 3])]), body], containing: "unknown dtype code 7")
        try expectMalformed([Array(header().prefix(20))], containing: "needs at least 44")
        try expectMalformed([Array(header().dropLast(4)), body], containing: "truncated")
        try expectMalformed([header() + [0, 0], body], containing: "trailing bytes")
        try expectMalformed([header(tensors: [(1, [1 << 40])]), body], containing: "too large")
        try expectMalformed([header(tensors: [(1, [1 << 20, 1 << 20])]), body], containing: "exceeds")
        var few = WireLimits()
        few.maxTensors = 1
        try expectMalformed([header(tensors: [(1, [1]), (1, [1])]), [0, 0, 0, 0], [0, 0, 0, 0]], containing: "2 tensors, limit 1", limits: few)
        #expect(throws: WireError.malformed("no frames")) { try Message(frames: []) }
    }

    @Test func receiveHonoursItsDeadline() throws {
        let (_, b) = try pairSockets()
        let t0 = monotonicSeconds()
        let got = try b.receive(timeout: 0.15)
        let dt = monotonicSeconds() - t0
        #expect(got == nil)
        #expect(dt >= 0.14 && dt < 1.0, "waited \(dt) s")
    }

    @Test func zmqFailuresNameTheCall() throws {
        let s = try Socket(.dealer)
        do {
            try s.bind("nonsense://x")
            Issue.record("bind to a bad endpoint succeeded")
        } catch let WireError.zmq(function, _, message) {
            #expect(function.contains("zmq_bind(nonsense://x)"))
            #expect(!message.isEmpty)
        }
        s.close()
        #expect(throws: WireError.closed) { try s.connect("tcp://127.0.0.1:1") }
    }
}
