import Foundation
import HTTP
import Stages

/// One completion's identity and the OpenAI objects written for it: the `chat.completion` body,
/// and the `chat.completion.chunk` events of a stream. Beyond OpenAI's fields each choice carries
/// `token_ids` (the generated ids, EOS included when produced — as `unimoe ask --json` prints them).
struct Completion {
    let id: String
    let created: Int
    let model: String
    let request: ChatRequest

    struct Usage: Encodable {
        var prompt_tokens: Int
        var completion_tokens: Int
        var total_tokens: Int
    }

    func usage(_ answer: Answer) -> Usage {
        let p = answer.promptTokens ?? 0
        return Usage(prompt_tokens: p, completion_tokens: answer.ids.count, total_tokens: p + answer.ids.count)
    }

    /// "length" when the token limit ended it, else "stop" (EOS or a stop string).
    func finishReason(_ answer: Answer, stopped: Bool) -> String {
        !stopped && answer.ids.count >= request.ask.maxNewTokens ? "length" : "stop"
    }

    /// The `stream: false` body.
    func body(text: String, answer: Answer, stopped: Bool) -> Data {
        struct Message: Encodable { var role = "assistant"; var content: String }
        struct Choice: Encodable { var index = 0; var message: Message; var finish_reason: String; var token_ids: [Int] }
        struct Body: Encodable {
            var id: String; var object = "chat.completion"; var created: Int; var model: String
            var choices: [Choice]; var usage: Usage
        }
        let b = Body(id: id, created: created, model: model,
                     choices: [Choice(message: Message(content: text), finish_reason: finishReason(answer, stopped: stopped), token_ids: answer.ids)],
                     usage: usage(answer))
        return (try? JSONEncoder().encode(b)) ?? Data()
    }

    /// One `data:` event of a stream: a delta (role and/or content, with the ids it came from), or
    /// the end of the choice (`finish`), or — with `usage` — the usage chunk (no choices).
    func chunk(role: Bool = false, content: String? = nil, ids: [Int]? = nil, finish: String? = nil, usage: Usage? = nil) -> Data {
        struct Delta: Encodable { var role: String?; var content: String? }
        struct Choice: Encodable {
            var index = 0; var delta: Delta; var finish_reason: String?; var token_ids: [Int]?
            func encode(to encoder: Encoder) throws {
                enum K: String, CodingKey { case index, delta, finish_reason, token_ids }
                var c = encoder.container(keyedBy: K.self)
                try c.encode(index, forKey: .index)
                try c.encode(delta, forKey: .delta)
                try c.encode(finish_reason, forKey: .finish_reason)  // explicit null, as OpenAI sends
                try c.encodeIfPresent(token_ids, forKey: .token_ids)
            }
        }
        struct Chunk: Encodable {
            var id: String; var object = "chat.completion.chunk"; var created: Int; var model: String
            var choices: [Choice]; var usage: Usage?
        }
        let choices = usage != nil ? [] : [Choice(delta: Delta(role: role ? "assistant" : nil, content: content), finish_reason: finish, token_ids: ids)]
        let c = Chunk(id: id, created: created, model: model, choices: choices, usage: usage)
        return Self.event((try? JSONEncoder().encode(c)) ?? Data())
    }

    static func event(_ json: Data) -> Data { Data("data: ".utf8) + json + Data("\n\n".utf8) }
    static let doneEvent = Data("data: [DONE]\n\n".utf8)
    /// An SSE comment: clients ignore it; writing it notices a client that went away.
    static let keepAlive = Data(": keep-alive\n\n".utf8)
}

/// The Server-Sent Events body of a `stream: true` completion, pulled by the HTTP server on the
/// connection's thread. Closing it before the end (the client disconnected) cancels the generation.
///
/// `@unchecked Sendable`: `next()` and `close()` are called by the server on one connection thread.
final class EventStream: HTTPStreamSource, @unchecked Sendable {
    private let generation: Generation
    private let completion: Completion
    private var pending: Generation.Event?
    private var matcher: StopMatcher
    private var startedRole = false
    private var ended = false

    init(_ generation: Generation, first: Generation.Event, completion: Completion) {
        self.generation = generation
        self.completion = completion
        pending = first
        matcher = StopMatcher(completion.request.stop)
    }

    func next() -> Data? {
        if ended { return nil }
        if !startedRole {
            startedRole = true
            return completion.chunk(role: true, content: "")
        }
        guard let event = pending ?? generation.next(timeout: 1) else { return Completion.keepAlive }
        pending = nil
        switch event {
        case .token(let id, let piece):
            let shown = matcher.feed(piece)
            if matcher.stopped && shown.isEmpty { return Completion.keepAlive }
            return completion.chunk(content: shown, ids: [id])
        case .done(let answer):
            ended = true
            var out = Data()
            let rest = matcher.finish()
            if !rest.isEmpty { out += completion.chunk(content: rest) }
            out += completion.chunk(finish: completion.finishReason(answer, stopped: matcher.stopped))
            if completion.request.includeUsage { out += completion.chunk(usage: completion.usage(answer)) }
            return out + Completion.doneEvent
        case .failed(let e):
            ended = true
            return Completion.event(e.body) + Completion.doneEvent
        }
    }

    func close() {
        if !ended { generation.cancel() }
    }
}
