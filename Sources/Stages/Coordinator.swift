import Foundation
import Tensor
import Wire

/// The client-facing process: takes `ask` requests and their media chunks from clients (a ROUTER
/// frontend), drives each request through decode → encode → connect on the stage workers (a
/// dispatcher backend that the workers join), stitches the embeddings, then runs the generation
/// loop — one trunk step at a time carrying every live sequence that has input ready (batched),
/// sampling each sequence's next token and streaming it to its client. Single-threaded event loop;
/// every wait is bounded, every message validated.
public final class Coordinator {
    /// Why a backend job was sent.
    enum Purpose {
        case open(media: Int, stream: UInt64), chunk(media: Int, stream: UInt64), encode(media: Int), connect(media: Int)
        case step([UInt64]), release, stats(client: [UInt8], requestID: UInt64)

        /// The upload (media index and decode stream) an open or chunk job belongs to.
        var upload: (media: Int, stream: UInt64)? {
            switch self {
            case .open(let i, let s), .chunk(let i, let s): (i, s)
            default: nil
            }
        }
    }

    /// One media upload of a request.
    struct Upload {
        var stream: UInt64
        var openJob: UInt64?
        var worker: Dispatcher.WorkerID?
        var queued: [Message] = []
        /// Chunks sent to `worker` already, kept until it has decoded them: when the decoder dies
        /// mid-upload they go again, on a fresh stream, to another (or the restarted) one.
        var sent: [Message] = []
        var received = 0
        /// The client sent the LAST chunk.
        var complete = false
        /// Decoders lost during this upload.
        var restarts = 0
    }

    /// One client request in flight.
    final class Request {
        let key: UInt64
        let client: [UInt8]
        let clientRequestID: UInt64
        /// The request; until its ASK arrives (media announced first) only `media` is known.
        var ask: AskRequest
        /// Set when the ASK arrived.
        var state: GenerationState?
        var uploads: [Upload]
        var embeddings: [Tensor?]
        var input: Tensor?
        /// The stitched prompt, kept so a new router can rebuild the KV cache (failover).
        var prompt: Tensor?
        var failovers = 0
        var jobs: Set<UInt64> = []
        var timings = StageTimings()
        let started = monotonicSeconds()
        var firstToken = true
        var mediaStarted: [Double]
        var promptTokens = 0

        init(key: UInt64, client: [UInt8], clientRequestID: UInt64, ask: AskRequest, state: GenerationState?, streams: [UInt64]) {
            self.key = key
            self.client = client
            self.clientRequestID = clientRequestID
            self.ask = ask
            self.state = state
            uploads = streams.map { Upload(stream: $0) }
            embeddings = Array(repeating: nil, count: ask.media.count)
            mediaStarted = Array(repeating: 0, count: ask.media.count)
        }

        /// Adds a media input (announced before the ASK, or listed in it) with its upload stream.
        func addMedia(_ item: MediaItem, stream: UInt64) {
            ask.media.append(item)
            uploads.append(Upload(stream: stream))
            embeddings.append(nil)
            mediaStarted.append(0)
        }

        var ready: Bool { state != nil && embeddings.allSatisfy { $0 != nil } }
    }

    public let builder: PromptBuilder
    public let frontend: Socket
    public let backend: Dispatcher
    public let frontendEndpoint: String
    /// A request still unanswered after this long fails (naming the services nobody offers).
    public var requestTimeout = 300.0
    /// Random per process start, echoed in heartbeats: a client that sees it change knows the
    /// coordinator restarted and its request was lost with the old one (and asks again).
    public let instance = String(UInt64.random(in: 1...UInt64.max), radix: 36)
    /// Requests held at once; a new one past it is refused with a "busy: …" error.
    public var maxRequests = 256
    /// Recently refused (client, request id) pairs: their media chunks are dropped silently.
    private var refused: [RefusedKey] = []
    private struct RefusedKey: Equatable { var client: [UInt8]; var requestID: UInt64 }
    public var limits = WireLimits.standard
    let name = "coordinator"

    private var requests: [UInt64: Request] = [:]
    private var byClient: [[UInt8]: [UInt64: UInt64]] = [:]
    private var purposes: [UInt64: (request: UInt64?, purpose: Purpose)] = [:]
    /// Sequence keys start at a random point so a restarted coordinator never reuses a key whose
    /// KV cache a surviving router may still hold.
    private var nextKey = UInt64.random(in: 1..<(1 << 48)) << 8
    private var nextStream = UInt64.random(in: 1..<(1 << 48)) << 8
    private var stepJob: UInt64?
    private var routerWorker: Dispatcher.WorkerID?
    private var counters: [String: Int] = [:]

    public init(builder: PromptBuilder, frontend: String, backend: String, policy: HeartbeatPolicy) throws {
        self.builder = builder
        self.frontend = try Socket(.router)
        try self.frontend.bind(frontend)
        frontendEndpoint = try self.frontend.lastEndpoint()
        self.backend = try Dispatcher(bind: backend, policy: policy, name: "coordinator")
    }

    /// Serves until `stop` is set.
    public func run(stop: StopFlag) throws {
        while !stop.isSet {
            let ready = try Poller.wait([frontend, backend.socket], timeout: backend.policy.interval / 2)
            if ready[0] {
                repeat { handleClient(try frontend.receiveNow()) } while try Poller.wait([frontend], timeout: 0)[0]
            }
            try backend.pump(timeout: 0)
            for (job, reply) in backend.takeCompleted() { handleReply(job, reply) }
            flushUploads()
            scheduleStep()
            expireRequests()
        }
    }

    // MARK: - clients

    private func handleClient(_ frames: [InFrame]) {
        guard frames.count >= 2 else { return }
        let client = frames[0].bytes
        let m: Message
        do {
            m = try Message(frames: Array(frames.dropFirst()), limits: limits)
        } catch {
            wireLog(name, "rejected a client message: \(error)")
            send(Message.errorReply(to: nil, "coordinator rejected a message: \(error)").withRequestID(of: Array(frames.dropFirst())), to: client)
            return
        }
        switch m.kind {
        case .ask: startRequest(m, client: client)
        case .mediaOpen: announceMedia(m, client: client)
        case .mediaChunk: takeChunk(m, client: client)
        case .cancel: cancelRequest(m, client: client)
        case .stats:
            if let router = routerWorker ?? backend.workers(offering: "router").first {
                submit(Message(.stats), service: "router", pin: router, request: nil, purpose: .stats(client: client, requestID: m.requestID))
            } else {
                replyStats(client: client, requestID: m.requestID, router: [:])
            }
        case .heartbeat: send(Message(.heartbeat, requestID: m.requestID, payload: Data(instance.utf8)), to: client)
        default:
            send(Message.errorReply(to: m, "coordinator: clients may send ask, mediaOpen, mediaChunk, cancel or stats, not \(m.kind)"), to: client)
        }
    }

    private func startRequest(_ m: Message, client: [UInt8]) {
        let ask: AskRequest
        do {
            ask = try m.decodePayload(AskRequest.self)
            guard ask.maxNewTokens >= 0, ask.maxNewTokens <= 1 << 16, ask.temperature >= 0, ask.topP > 0, ask.topP <= 1 else {
                throw StageError.badRequest("max-new-tokens must be 0…65536, temperature ≥ 0, 0 < top-p ≤ 1")
            }
        } catch {
            send(Message.errorReply(to: m, "\(error)"), to: client)
            return
        }
        if let key = byClient[client]?[m.requestID], let r = requests[key] {
            // Its first media were announced and are uploading: the ASK must list them first.
            guard r.state == nil, ask.media.count >= r.ask.media.count, Array(ask.media.prefix(r.ask.media.count)) == r.ask.media else {
                fail(r, "bad request: the ask's media do not begin with the \(r.ask.media.count) announced before it")
                return
            }
            for item in ask.media.dropFirst(r.ask.media.count) { nextStream += 1; r.addMedia(item, stream: nextStream) }
            r.ask = ask
            r.state = GenerationState(request: ask, builder: builder)
            if r.ready { prepareInput(r) }
            return
        }
        guard admit(m, client: client) else { return }
        let r = newRequest(client: client, requestID: m.requestID, ask: ask)
        r.state = GenerationState(request: ask, builder: builder)
        if ask.media.isEmpty { prepareInput(r) }
    }

    /// False (and the client told "busy") when `maxRequests` requests are held already.
    private func admit(_ m: Message, client: [UInt8]) -> Bool {
        let key = RefusedKey(client: client, requestID: m.requestID)
        if refused.contains(key) { return false }
        guard requests.count >= maxRequests else { return true }
        counters["refused_busy", default: 0] += 1
        refused.append(key)
        if refused.count > 1024 { refused.removeFirst(refused.count - 1024) }
        send(Message(.error, requestID: m.requestID, payload: Data("\(StageError.busyPrefix)the coordinator holds \(requests.count) requests (its max_requests); retry shortly".utf8)), to: client)
        return false
    }

    private func newRequest(client: [UInt8], requestID: UInt64, ask: AskRequest) -> Request {
        let key = nextKey
        nextKey += 1
        let streams = ask.media.indices.map { _ in nextStream += 1; return nextStream }
        let r = Request(key: key, client: client, clientRequestID: requestID, ask: ask, state: nil, streams: streams)
        requests[key] = r
        byClient[client, default: [:]][requestID] = key
        counters["requests", default: 0] += 1
        return r
    }

    /// MEDIA_OPEN from a client: media input `layer` of a request whose ASK comes later (the
    /// gateway uploads parts while the HTTP body that holds the question is still arriving).
    private func announceMedia(_ m: Message, client: [UInt8]) {
        let item: MediaItem
        do { item = try m.decodePayload(MediaItem.self) } catch {
            send(Message.errorReply(to: m, "coordinator: mediaOpen payload: \(error)"), to: client)
            return
        }
        let r: Request
        if let key = byClient[client]?[m.requestID], let existing = requests[key] { r = existing } else {
            guard admit(m, client: client) else { return }
            r = newRequest(client: client, requestID: m.requestID, ask: AskRequest(question: ""))
        }
        guard r.state == nil, Int(m.layer) == r.ask.media.count else {
            fail(r, "bad request: media \(m.layer) announced, expected \(r.ask.media.count) before the ask")
            return
        }
        nextStream += 1
        r.addMedia(item, stream: nextStream)
    }

    /// The client gave up on a request (an HTTP client went away, a stop string matched): forget
    /// it and free its KV cache in the router. Nothing is sent back; an unknown id is ignored (the
    /// request may have finished while the cancel was on its way).
    private func cancelRequest(_ m: Message, client: [UInt8]) {
        guard let key = byClient[client]?[m.requestID], let r = requests[key] else { return }
        wireLog(name, "request \(key) cancelled by its client")
        counters["cancelled", default: 0] += 1
        drop(r)
    }

    private func takeChunk(_ m: Message, client: [UInt8]) {
        guard let key = byClient[client]?[m.requestID], let r = requests[key] else {
            if refused.contains(RefusedKey(client: client, requestID: m.requestID)) { return }  // told "busy" already
            send(Message.errorReply(to: m, "coordinator: media chunk for unknown request \(m.requestID)"), to: client)
            return
        }
        let i = Int(m.layer)
        guard r.ask.media.indices.contains(i) else {
            fail(r, "media chunk for input \(i), the request has \(r.ask.media.count)")
            return
        }
        var u = r.uploads[i]
        guard Int(m.sequence) == u.received else {
            fail(r, "\(r.ask.media[i].name): chunk \(m.sequence) arrived, expected \(u.received)")
            return
        }
        if u.received == 0 {
            r.mediaStarted[i] = monotonicSeconds()
            do {
                let open = try Message.json(.mediaOpen, r.ask.media[i], stream: u.stream)
                u.openJob = submit(open, service: "decode", pin: nil, request: r.key, purpose: .open(media: i, stream: u.stream))
            } catch { fail(r, "\(error)"); return }
        }
        u.received += 1
        u.complete = m.flags.contains(.last)
        u.queued.append(Message(.mediaChunk, stream: u.stream, sequence: m.sequence, flags: m.flags.intersection(.last), payload: m.payload ?? Data()))
        r.uploads[i] = u
    }

    // MARK: - backend

    @discardableResult
    private func submit(_ m: Message, service: String, pin: Dispatcher.WorkerID?, request: UInt64?, purpose: Purpose) -> UInt64? {
        do {
            let id = try backend.submit(m, service: service, pinnedTo: pin)
            purposes[id] = (request, purpose)
            if let request { requests[request]?.jobs.insert(id) }
            return id
        } catch {
            if let request, let r = requests[request] { fail(r, "\(service): \(error)") }
            return nil
        }
    }

    /// Sends queued chunks once the decode worker that opened the upload is known (chunks of one
    /// upload must reach the same worker, in order).
    private func flushUploads() {
        for r in requests.values {
            for i in r.uploads.indices where !r.uploads[i].queued.isEmpty {
                if r.uploads[i].worker == nil, let open = r.uploads[i].openJob {
                    r.uploads[i].worker = backend.worker(of: open)
                }
                guard let w = r.uploads[i].worker else { continue }
                let q = r.uploads[i].queued, stream = r.uploads[i].stream
                r.uploads[i].queued.removeAll()
                r.uploads[i].sent.append(contentsOf: q)
                for c in q { submit(c, service: "decode", pin: w, request: r.key, purpose: .chunk(media: i, stream: stream)) }
            }
        }
    }

    private func handleReply(_ job: UInt64, _ reply: Dispatcher.Reply) {
        guard let (key, purpose) = purposes.removeValue(forKey: job) else { return }
        let m = reply.message
        if case .stats(let client, let requestID) = purpose {
            let router = (try? m.decodePayload([String: Int].self)) ?? [:]
            replyStats(client: client, requestID: requestID, router: router)
            return
        }
        if case .release = purpose { return }
        if case .step(let seqs) = purpose {
            stepJob = nil
            handleStep(seqs, m, worker: reply.worker)
            return
        }
        guard let key, let r = requests[key] else { return }
        r.jobs.remove(job)
        if let (i, stream) = purpose.upload, stream != r.uploads[i].stream { return }  // an upload restarted since
        if m.kind == .error {
            if let (i, _) = purpose.upload, reply.stateLost {
                restartUpload(r, i, why: m.payloadText)
            } else if case .open(let i, _) = purpose {
                fail(r, "\(r.ask.media[i].name): \(m.payloadText)")
            } else {
                fail(r, m.payloadText)
            }
            return
        }
        switch purpose {
        case .open(let i, _):
            if r.uploads[i].worker == nil { r.uploads[i].worker = reply.worker }
        case .chunk(let i, _):
            guard m.kind == .decoded else { return }  // an ack
            r.uploads[i].sent = []
            guard m.tensors.count == 1 else { fail(r, "decode returned \(m.tensors.count) tensors"); return }
            r.timings.add("decode", seconds: monotonicSeconds() - r.mediaStarted[i])
            r.mediaStarted[i] = monotonicSeconds()
            let modality = r.ask.media[i].modality
            submit(Message(.encode, stream: r.uploads[i].stream, expert: modality.code, tensors: m.tensors),
                   service: "encode/\(modality.rawValue)", pin: nil, request: key, purpose: .encode(media: i))
        case .encode(let i):
            guard m.kind == .encoded, m.tensors.count == 1 else { fail(r, "encode answered \(m.kind)"); return }
            r.timings.add("encode", seconds: monotonicSeconds() - r.mediaStarted[i])
            r.mediaStarted[i] = monotonicSeconds()
            let modality = r.ask.media[i].modality
            submit(Message(.connect, stream: r.uploads[i].stream, expert: modality.code, tensors: m.tensors),
                   service: "connect/\(modality.rawValue)", pin: nil, request: key, purpose: .connect(media: i))
        case .connect(let i):
            guard m.kind == .connected, m.tensors.count == 1 else { fail(r, "connect answered \(m.kind)"); return }
            r.timings.add("connect", seconds: monotonicSeconds() - r.mediaStarted[i])
            r.embeddings[i] = m.tensors[0]
            if r.ready { prepareInput(r) }
        default: break
        }
    }

    /// The decode worker holding upload `i`'s stream died: opens a fresh stream on another (or the
    /// restarted) decoder and sends it every chunk again (at most `maxFailovers` times per upload).
    private func restartUpload(_ r: Request, _ i: Int, why: String) {
        var u = r.uploads[i]
        u.restarts += 1
        guard u.restarts <= Coordinator.maxFailovers else {
            fail(r, "\(r.ask.media[i].name): \(why) (\(u.restarts - 1) decoders lost during this upload; giving up)")
            return
        }
        // The old stream's jobs still out: forgotten; an open the dispatcher re-sent to a live
        // decoder is ended there, so that decoder does not wait for its bytes.
        let stale = r.jobs.filter { purposes[$0]?.purpose.upload?.stream == u.stream }
        if let open = u.openJob, stale.contains(open), let w = backend.worker(of: open) { endStream(u.stream, received: 0, on: w) }
        backend.forget(Array(stale))
        for j in stale { purposes[j] = nil }
        r.jobs.subtract(stale)
        nextStream += 1
        u.stream = nextStream
        u.worker = nil
        u.queued = (u.sent + u.queued).map { var c = $0; c.stream = u.stream; return c }
        u.sent = []
        r.uploads[i] = u
        counters["decode_failovers", default: 0] += 1
        wireLog(name, "request \(r.key): \(r.ask.media[i].name): decoder lost (\(why)); uploading \(u.queued.count) chunk(s) again")
        do {
            r.uploads[i].openJob = submit(try Message.json(.mediaOpen, r.ask.media[i], stream: u.stream), service: "decode", pin: nil,
                                          request: r.key, purpose: .open(media: i, stream: u.stream))
        } catch { fail(r, "\(error)") }
    }

    /// Ends a decode stream whose bytes will not all come (an empty LAST chunk; the reply is ignored).
    private func endStream(_ stream: UInt64, received: Int, on worker: Dispatcher.WorkerID) {
        submit(Message(.mediaChunk, stream: stream, sequence: UInt32(received), flags: .last), service: "decode", pin: worker,
               request: nil, purpose: .release)
    }

    private func prepareInput(_ r: Request) {
        do {
            let t0 = monotonicSeconds()
            let input = try builder.stitch(ids: builder.promptIds(r.ask), request: r.ask, embeddings: r.embeddings.compactMap { $0 })
            r.promptTokens = input.shape[0]
            r.input = input
            r.prompt = input
            r.timings.add("stitch", seconds: monotonicSeconds() - t0)
            if r.state?.finished == true { finish(r) }
        } catch { fail(r, "\(error)") }
    }

    /// One trunk step for every sequence with input ready (only one step in flight at a time).
    private func scheduleStep() {
        guard stepJob == nil else { return }
        // A router that died between steps held no live sequence: steps go to any router again.
        if let w = routerWorker, backend.workers[w] == nil { routerWorker = nil }
        let ready = requests.values.filter { $0.input != nil }.sorted { $0.key < $1.key }
        guard !ready.isEmpty else { return }
        let seqs = ready.map(\.key)
        do {
            let m = try Message.json(.trunkStep, TrunkStepHeader(sequences: seqs), tensors: ready.map { $0.input! })
            for r in ready { r.input = nil }
            stepJob = submit(m, service: "router", pin: routerWorker, request: nil, purpose: .step(seqs))
            stepStarted = monotonicSeconds()
        } catch {
            for r in ready { fail(r, "\(error)") }
        }
    }
    private var stepStarted = 0.0

    private func handleStep(_ seqs: [UInt64], _ m: Message, worker: Dispatcher.WorkerID?) {
        let elapsed = monotonicSeconds() - stepStarted
        guard m.kind == .logits, m.tensors.count == seqs.count else {
            let why = m.kind == .error ? m.payloadText : "router answered \(m.kind) with \(m.tensors.count) tensors for \(seqs.count) sequences"
            if let w = routerWorker, backend.workers[w] == nil {
                // The router died with the KV caches: each sequence is prefilled again on the next
                // live router (a replica, or this one restarted) from its prompt and the tokens it
                // generated; its next logits are those the lost step would have given.
                routerWorker = nil
                for s in seqs { if let r = requests[s] { failOver(r, why: why) } }
                return
            }
            for s in seqs { if let r = requests[s] { fail(r, "router: \(why)") } }
            return
        }
        if routerWorker == nil { routerWorker = worker }
        var orphans: [UInt64] = []
        defer {
            // Sequences whose request failed while their step was in flight: free their caches.
            if !orphans.isEmpty, let w = routerWorker, let rel = try? Message.json(.release, TrunkStepHeader(sequences: orphans)) {
                submit(rel, service: "router", pin: w, request: nil, purpose: .release)
            }
        }
        for (s, logits) in zip(seqs, m.tensors) {
            guard let r = requests[s] else { orphans.append(s); continue }
            r.timings.add(r.firstToken ? "prefill" : "decode_steps", seconds: elapsed)
            if r.firstToken {
                r.timings.add("first_token", seconds: monotonicSeconds() - r.started)
                r.firstToken = false
            }
            guard let state = r.state else { continue }  // input exists only once asked
            let (id, text) = state.accept(logits)
            struct Token: Codable { var id: Int; var text: String }
            if let tm = try? Message.json(.token, Token(id: id, text: text), requestID: r.clientRequestID) { send(tm, to: r.client) }
            if state.finished {
                finish(r)
            } else {
                do { r.input = try builder.embed(id) } catch { fail(r, "\(error)") }
            }
        }
    }

    /// Rebuilds `r`'s input for a fresh KV cache after its router died (at most `maxFailovers`
    /// times per request: a request that keeps killing routers fails).
    private func failOver(_ r: Request, why: String) {
        guard let prompt = r.prompt, let state = r.state else { fail(r, "router: \(why)"); return }
        r.failovers += 1
        guard r.failovers <= Coordinator.maxFailovers else {
            fail(r, "router: \(why) (\(r.failovers - 1) routers lost during this request; giving up)")
            return
        }
        do {
            r.input = try builder.replay(prompt: prompt, generated: state.ids)
            counters["router_failovers", default: 0] += 1
            wireLog(name, "request \(r.key): router lost (\(why)); prefilling \(r.input?.shape[0] ?? 0) rows again on the next router")
        } catch { fail(r, "router: \(why); replay: \(error)") }
    }
    static let maxFailovers = 3

    private func finish(_ r: Request) {
        r.timings.add("total", seconds: monotonicSeconds() - r.started)
        let answer = Answer(ids: r.state?.ids ?? [], text: r.state?.text ?? "", timings: r.timings.milliseconds, promptTokens: r.promptTokens)
        if let m = try? Message.json(.done, answer, requestID: r.clientRequestID) { send(m, to: r.client) }
        counters["answered", default: 0] += 1
        drop(r)
    }

    private func fail(_ r: Request, _ text: String) {
        guard requests[r.key] != nil else { return }
        wireLog(name, "request \(r.key) failed: \(text)")
        send(Message(.error, requestID: r.clientRequestID, payload: Data(text.utf8)), to: r.client)
        counters["failed", default: 0] += 1
        drop(r)
    }

    private func drop(_ r: Request) {
        requests[r.key] = nil
        byClient[r.client]?[r.clientRequestID] = nil
        if byClient[r.client]?.isEmpty == true { byClient[r.client] = nil }
        // An upload cut short (the client went away mid-body) would keep its decoder waiting for
        // bytes: end it with an empty LAST chunk; the reply is ignored.
        let cut = r.uploads.filter { $0.received > 0 && !$0.complete }
            .compactMap { u in (u.worker ?? u.openJob.flatMap { backend.worker(of: $0) }).map { (u, $0) } }
        backend.forget(Array(r.jobs))
        for j in r.jobs { purposes[j] = nil }
        for (u, w) in cut {
            for c in u.queued { submit(c, service: "decode", pin: w, request: nil, purpose: .release) }
            endStream(u.stream, received: u.received, on: w)
        }
        if let w = routerWorker, !r.firstToken,
           let m = try? Message.json(.release, TrunkStepHeader(sequences: [r.key])) {
            submit(m, service: "router", pin: w, request: nil, purpose: .release)
        }
    }

    private func expireRequests() {
        let now = monotonicSeconds()
        for r in requests.values where now - r.started > requestTimeout {
            let starved = backend.starvedServices
            fail(r, "no answer after \(Int(requestTimeout)) s" + (starved.isEmpty ? "" : "; no worker offers \(starved.joined(separator: ", "))"))
        }
    }

    private func replyStats(client: [UInt8], requestID: UInt64, router: [String: Int]) {
        var s = counters
        for (k, v) in backend.statsCounters() { s["coordinator/\(k)"] = v }
        for (k, v) in router { s["router/\(k)"] = v }
        s["live_requests"] = requests.count
        if let m = try? Message.json(.statsReply, s, requestID: requestID) { send(m, to: client) }
    }

    private func send(_ m: Message, to client: [UInt8]) {
        do { try frontend.send(m, to: client) } catch {
            wireLog(name, "client gone (\(error)); dropping its requests")
            for key in byClient[client]?.values ?? [:].values { if let r = requests[key] { drop(r) } }
        }
    }
}
