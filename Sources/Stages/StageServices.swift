import Foundation
import Media
import Tensor
import Wire

/// One upload being decoded: its bytes arrive chunk by chunk while a thread decodes them.
///
/// `@unchecked Sendable`: `result` is guarded by `cond`.
final class DecodeJob: @unchecked Sendable {
    let input: ChunkedInput
    let started = monotonicSeconds()
    private let cond = NSCondition()
    private var result: Result<Tensor, Error>?

    init(item: MediaItem, stage: DecodeStage) {
        input = ChunkedInput(name: item.name)
        let input = self.input
        let t = Thread { [self] in
            let r = Result { try stage.decode(item.modality, .stream(input)) }
            cond.lock(); result = r; cond.broadcast(); cond.unlock()
        }
        t.stackSize = 8 << 20
        t.start()
    }

    func wait(timeout: Double) throws -> Tensor {
        cond.lock(); defer { cond.unlock() }
        let deadline = Date(timeIntervalSinceNow: timeout)
        while result == nil { if !cond.wait(until: deadline) { break } }
        guard let result else { throw WireError.timeout("decoding \(input.name) took more than \(timeout) s") }
        return try result.get()
    }
}

/// The decode process's service: `mediaOpen` starts decoding an upload on its own thread,
/// `mediaChunk`s feed it (decoding runs while the upload continues), and the reply to the last
/// chunk carries the decoded tensor (or the error naming the file).
public final class DecodeService: WorkerHandler {
    public let stage: DecodeStage
    public var decodeTimeout = 300.0
    private var jobs: [UInt64: DecodeJob] = [:]

    public init(stage: DecodeStage) { self.stage = stage }

    public func handle(_ jobs: [Message]) -> [Message] { jobs.map(handle) }

    private func handle(_ m: Message) -> Message {
        switch m.kind {
        case .mediaOpen:
            do {
                let item = try m.decodePayload(MediaItem.self)
                jobs[m.stream]?.input.fail("upload restarted")
                jobs[m.stream] = DecodeJob(item: item, stage: stage)
                return Message(.ack, requestID: m.requestID, stream: m.stream)
            } catch { return Message.errorReply(to: m, "decode: \(error)") }
        case .mediaChunk:
            guard let job = jobs[m.stream] else { return Message.errorReply(to: m, "decode: chunk for unknown upload \(m.stream)") }
            if let p = m.payload { job.input.append(p) }
            guard m.flags.contains(.last) else { return Message(.ack, requestID: m.requestID, stream: m.stream, sequence: m.sequence) }
            job.input.finish()
            jobs[m.stream] = nil
            do {
                let t = try job.wait(timeout: decodeTimeout)
                return Message(.decoded, requestID: m.requestID, stream: m.stream, tensors: [t])
            } catch {
                return Message.errorReply(to: m, "\(error)")
            }
        default:
            return Message.errorReply(to: m, "decode: cannot handle \(m.kind) messages")
        }
    }

    public func stats() -> [String: Int] {
        var s = ["open_uploads": jobs.count]
        for (k, v) in stage.timings.entries { s["\(k)_ms"] = Int(v.seconds * 1000); s["\(k)_count"] = v.count }
        return s
    }
}

/// The encode process's service: `encode` (modality in the `expert` field, tensor 0 the encoder
/// input) → `encoded` (tensor 0 the features).
public final class EncodeService: WorkerHandler {
    public let stage: EncodeStage
    public init(stage: EncodeStage) { self.stage = stage }

    public func handle(_ jobs: [Message]) -> [Message] {
        jobs.map { m in
            guard m.kind == .encode, m.tensors.count == 1, let modality = Modality(code: m.expert) else {
                return Message.errorReply(to: m, "encode: expected an encode message with one tensor and a modality code, got \(m.kind) with \(m.tensors.count) tensor(s), modality \(m.expert)")
            }
            do {
                return Message(.encoded, requestID: m.requestID, stream: m.stream, expert: m.expert, tensors: [try stage.encode(modality, m.tensors[0])])
            } catch { return Message.errorReply(to: m, "encode \(modality.rawValue): \(error)") }
        }
    }

    public func stats() -> [String: Int] {
        stage.timings.entries.reduce(into: [:]) { s, e in s["\(e.key)_ms"] = Int(e.value.seconds * 1000); s["\(e.key)_count"] = e.value.count }
    }
}

/// The connect process's service: `connect` (features) → `connected` (embedding rows).
public final class ConnectService: WorkerHandler {
    public let stage: ConnectStage
    public init(stage: ConnectStage) { self.stage = stage }

    public func handle(_ jobs: [Message]) -> [Message] {
        jobs.map { m in
            guard m.kind == .connect, m.tensors.count == 1, let modality = Modality(code: m.expert) else {
                return Message.errorReply(to: m, "connect: expected a connect message with one tensor and a modality code, got \(m.kind) with \(m.tensors.count) tensor(s), modality \(m.expert)")
            }
            do {
                return Message(.connected, requestID: m.requestID, stream: m.stream, expert: m.expert, tensors: [try stage.connect(modality, m.tensors[0])])
            } catch { return Message.errorReply(to: m, "connect \(modality.rawValue): \(error)") }
        }
    }

    public func stats() -> [String: Int] {
        stage.timings.entries.reduce(into: [:]) { s, e in s["\(e.key)_ms"] = Int(e.value.seconds * 1000); s["\(e.key)_count"] = e.value.count }
    }
}
