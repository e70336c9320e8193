import Foundation
import Stages
import Wire

/// One request's generation: a thread asks the coordinator (through `AskClient`, which uploads the
/// media the way `unimoe ask` does) and hands each event to the HTTP connection's thread, which
/// waits on `next(timeout:)`. `cancel()` — the HTTP client went away — makes the asking thread
/// send CANCEL, so the coordinator frees the sequence in the router.
///
/// `@unchecked Sendable`: `events` and `cancelled` are touched only under `condition`'s lock.
final class Generation: @unchecked Sendable {
    enum Event {
        case token(id: Int, text: String)
        case done(Answer)
        case failed(GatewayError)
    }

    private let condition = NSCondition()
    private var events: [Event] = []
    private var cancelled = false

    /// Asks on a new thread through `client`, whose `early` uploads hold the request's media
    /// (the connection thread is done with both); `finished` runs on it once the request is over.
    init(client: AskClient, early: EarlyUploads, request: ChatRequest, finished: @escaping @Sendable () -> Void) {
        let ask = request.ask
        let handoff = Handoff(client: client, early: early)
        Thread.detachNewThread { [self] in
            defer { finished() }
            do {
                let answer = try handoff.client.ask(ask, files: [], after: handoff.early,
                                                    onToken: { id, text in self.push(.token(id: id, text: text)) },
                                                    cancelled: { self.isCancelled })
                push(.done(answer))
            } catch {
                push(.failed(Generation.classify(error, media: ask.media)))
            }
        }
    }

    var isCancelled: Bool {
        condition.lock()
        defer { condition.unlock() }
        return cancelled
    }

    func cancel() {
        condition.lock()
        cancelled = true
        condition.broadcast()
        condition.unlock()
    }

    private func push(_ e: Event) {
        condition.lock()
        events.append(e)
        condition.broadcast()
        condition.unlock()
    }

    /// The next event, waiting at most `timeout` seconds (nil when none came).
    func next(timeout: Double) -> Event? {
        condition.lock()
        defer { condition.unlock() }
        let deadline = Date(timeIntervalSinceNow: timeout)
        while events.isEmpty {
            if !condition.wait(until: deadline) { break }
        }
        return events.isEmpty ? nil : events.removeFirst()
    }

    /// The HTTP meaning of a pipeline failure: a part the decoder refused is 415 (the coordinator
    /// prefixes the error with the media's name, which is the part's), silence is 504.
    static func classify(_ error: Error, media: [MediaItem]) -> GatewayError {
        switch error {
        case StageError.stage(let text):
            if let item = media.first(where: { text.hasPrefix($0.name + ":") }) {
                return .undecodableMedia(part: item.name, reason: String(text.dropFirst(item.name.count + 1)).trimmingCharacters(in: .whitespaces))
            }
            if text.contains("no answer after") { return .timeout(text) }
            return .pipeline(text)
        case StageError.media(let file, let reason): return .invalidPart(part: file, reason: reason)
        case StageError.cancelled: return .pipeline("cancelled")
        case StageError.busy(let text): return .unavailable("busy: \(text)")
        case WireError.timeout(let text): return .timeout(text)
        default: return .unavailable("\(error)")
        }
    }
}

/// The client and uploads passed from the connection thread to the generation thread.
/// `@unchecked Sendable`: the connection thread stops using them before the handoff.
private final class Handoff: @unchecked Sendable {
    let client: AskClient
    let early: EarlyUploads
    init(client: AskClient, early: EarlyUploads) {
        self.client = client
        self.early = early
    }
}

/// Holds back generated text that could be the start of a stop string, and cuts the text at the
/// first stop string (OpenAI's `stop`: the stop string itself is not returned).
struct StopMatcher {
    let stops: [String]
    private var held = ""
    private(set) var stopped = false

    init(_ stops: [String]) { self.stops = stops }

    /// Adds generated text; returns what may be shown now.
    mutating func feed(_ piece: String) -> String {
        guard !stopped else { return "" }
        held += piece
        guard !stops.isEmpty else { defer { held = "" }; return held }
        if let cut = stops.compactMap({ held.range(of: $0)?.lowerBound }).min() {
            stopped = true
            defer { held = "" }
            return String(held[..<cut])
        }
        var keep = 0
        for s in stops {
            for k in stride(from: min(s.count - 1, held.count), to: 0, by: -1) where held.hasSuffix(s.prefix(k)) {
                keep = max(keep, k)
                break
            }
        }
        defer { held = String(held.suffix(keep)) }
        return String(held.dropLast(keep))
    }

    /// The text still held at the end (none once a stop string matched).
    mutating func finish() -> String {
        defer { held = "" }
        return stopped ? "" : held
    }
}
