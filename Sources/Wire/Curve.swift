import CZeroMQ
import Foundation
import Synchronization

/// A deployment's CURVE keys (the pipeline file's `"curve"`, made by `unimoe keys`): with them every
/// tcp socket is authenticated and encrypted. A socket that binds is a CURVE server with the server
/// pair and admits only clients whose public key is in `allow` (a ZAP handler checks each one and
/// logs refusals); a socket that connects proves itself with the client pair. ipc and inproc
/// sockets stay open (a local deployment is protected by file permissions).
public struct CurveSettings: Codable, Sendable, Equatable {
    public var serverPublic: String
    public var serverSecret: String
    public var clientPublic: String
    public var clientSecret: String
    /// Client public keys admitted (Z85); the deployment's own client key unless listed otherwise.
    public var allow: [String]

    enum CodingKeys: String, CodingKey {
        case serverPublic = "server_public", serverSecret = "server_secret"
        case clientPublic = "client_public", clientSecret = "client_secret"
        case allow
    }

    public init(serverPublic: String, serverSecret: String, clientPublic: String, clientSecret: String, allow: [String]? = nil) {
        self.serverPublic = serverPublic
        self.serverSecret = serverSecret
        self.clientPublic = clientPublic
        self.clientSecret = clientSecret
        self.allow = allow ?? [clientPublic]
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(serverPublic: try c.decode(String.self, forKey: .serverPublic), serverSecret: try c.decode(String.self, forKey: .serverSecret),
                  clientPublic: try c.decode(String.self, forKey: .clientPublic), clientSecret: try c.decode(String.self, forKey: .clientSecret),
                  allow: try c.decodeIfPresent([String].self, forKey: .allow))
    }

    /// A fresh server pair and client pair (the client's key allowed).
    public static func generate() throws -> CurveSettings {
        let server = try CurveKeys.pair(), client = try CurveKeys.pair()
        return CurveSettings(serverPublic: server.public, serverSecret: server.secret, clientPublic: client.public, clientSecret: client.secret)
    }

    /// Every key must be 40 characters of Z85 that decode to 32 bytes.
    public func validate() throws {
        let named = [("server_public", serverPublic), ("server_secret", serverSecret), ("client_public", clientPublic),
                     ("client_secret", clientSecret)] + allow.enumerated().map { ("allow[\($0.offset)]", $0.element) }
        for (name, key) in named where CurveKeys.decode(key) == nil {
            throw WireError.malformed("curve.\(name) is not a CURVE key (40 characters of Z85, as `unimoe keys` prints)")
        }
        guard zmq_has("curve") != 0 else { throw WireError.malformed("this libzmq was built without CURVE support") }
    }
}

/// Z85 key helpers over libzmq.
public enum CurveKeys {
    /// A new key pair in Z85.
    public static func pair() throws -> (public: String, secret: String) {
        var pub = [CChar](repeating: 0, count: 41), sec = [CChar](repeating: 0, count: 41)
        try check(zmq_curve_keypair(&pub, &sec), "zmq_curve_keypair")
        return (string(fromCString: pub), string(fromCString: sec))
    }

    /// The 32 bytes a Z85 key stands for; nil when it is not one.
    public static func decode(_ key: String) -> [UInt8]? {
        guard key.utf8.count == 40 else { return nil }
        var out = [UInt8](repeating: 0, count: 32)
        let ok = key.withCString { zmq_z85_decode(&out, $0) } != nil
        return ok ? out : nil
    }

    /// Z85 of 32 key bytes.
    public static func encode(_ bytes: [UInt8]) -> String? {
        guard bytes.count == 32 else { return nil }
        var out = [CChar](repeating: 0, count: 41)
        return bytes.withUnsafeBufferPointer { zmq_z85_encode(&out, $0.baseAddress, 32) } != nil ? string(fromCString: out) : nil
    }

    /// What `zmq_setsockopt` takes for a Z85 key: its 40 characters and a terminating NUL.
    static func option(_ key: String) -> [UInt8] { Array(key.utf8) + [0] }
}

/// The process's wire security: set once from the pipeline file (`use`), applied by `Socket` to
/// every tcp bind and connect from then on.
public enum WireSecurity {
    private static let current = Mutex<CurveSettings?>(nil)
    private static let handlerStarted = Mutex(false)

    /// Adopts `curve` for the sockets made from now on; starts the ZAP handler the first time.
    public static func use(_ curve: CurveSettings?) throws {
        try curve?.validate()
        current.withLock { $0 = curve }
        if curve != nil { try startHandler() }
    }

    public static var curve: CurveSettings? { current.withLock { $0 } }

    /// Makes `socket` a CURVE server (for `bind`) or client (for `connect`) when `endpoint` is tcp.
    static func secure(_ socket: Socket, endpoint: String, server: Bool) throws {
        guard endpoint.hasPrefix("tcp://"), let c = curve else { return }
        if server {
            try socket.setInt(ZMQ_CURVE_SERVER, 1, "ZMQ_CURVE_SERVER")
            try socket.setBytes(ZMQ_CURVE_SECRETKEY, CurveKeys.option(c.serverSecret), "ZMQ_CURVE_SECRETKEY")
            try socket.setBytes(ZMQ_ZAP_DOMAIN, Array("unimoe".utf8), "ZMQ_ZAP_DOMAIN")
            try logFailedHandshakes(socket, endpoint: endpoint)
        } else {
            try socket.setBytes(ZMQ_CURVE_SERVERKEY, CurveKeys.option(c.serverPublic), "ZMQ_CURVE_SERVERKEY")
            try socket.setBytes(ZMQ_CURVE_PUBLICKEY, CurveKeys.option(c.clientPublic), "ZMQ_CURVE_PUBLICKEY")
            try socket.setBytes(ZMQ_CURVE_SECRETKEY, CurveKeys.option(c.clientSecret), "ZMQ_CURVE_SECRETKEY")
        }
    }

    private static let monitors = Mutex(0)

    /// Logs peers that fail the CURVE handshake before ZAP is asked (one that speaks no CURVE at
    /// all, a malformed handshake); ZAP logs the refused keys itself. A monitor thread per server
    /// socket reads libzmq's socket events; it ends when the socket closes.
    private static func logFailedHandshakes(_ socket: Socket, endpoint: String) throws {
        let n = monitors.withLock { n in n += 1; return n }
        let address = "inproc://unimoe-curve-monitor-\(getpid())-\(n)"
        try socket.withUnsafeHandle { h in
            _ = try check(zmq_socket_monitor(h, address, ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
                                             | ZMQ_EVENT_MONITOR_STOPPED), "zmq_socket_monitor")
        }
        let thread = Thread {
            guard let pair = try? Socket(.pair), (try? pair.connect(address)) != nil else { return }
            while true {
                guard let frames = try? pair.receive(timeout: nil), let head = frames.first?.bytes, head.count >= 6 else { continue }
                let event = Int32(head[0]) | Int32(head[1]) << 8
                let value = UInt32(head[2]) | UInt32(head[3]) << 8 | UInt32(head[4]) << 16 | UInt32(head[5]) << 24
                if event == ZMQ_EVENT_MONITOR_STOPPED { return }
                // Which side notices a peer without CURVE first is a race: a mechanism mismatch
                // here, or the peer hanging up once it saw ours (EPIPE, ECONNRESET).
                let why = value == UInt32(ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) ? "it speaks no CURVE (security mechanism mismatch)"
                    : event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ? "protocol error 0x\(String(value, radix: 16))"
                    : "the handshake failed: \(String(cString: strerror(Int32(bitPattern: value)))) (a peer without CURVE hangs up so)"
                wireLog("curve", "refused a peer on \(endpoint): \(why)")
            }
        }
        thread.name = "curve-monitor"
        thread.start()
    }

    /// The ZAP handler (RFC 27) on `inproc://zeromq.zap.01`: admits a CURVE client whose public key
    /// is in the `allow` list in force, refuses (and logs) any other. Bound before this returns, so
    /// no CURVE server socket can accept a peer unchecked.
    private static func startHandler() throws {
        let start = handlerStarted.withLock { started in
            defer { started = true }
            return !started
        }
        guard start else { return }
        let bound = DispatchSemaphore(value: 0)
        let failure = Mutex<String?>(nil)
        let thread = Thread {
            let rep: Socket
            do {
                rep = try Socket(.rep)
                try rep.bind("inproc://zeromq.zap.01")
            } catch {
                failure.withLock { $0 = "\(error)" }
                bound.signal()
                return
            }
            bound.signal()
            while true {
                guard let frames = try? rep.receive(timeout: nil), frames.count >= 6 else { continue }
                let f = frames.map(\.bytes)
                let text = { (i: Int) in String(decoding: f[i], as: UTF8.self) }
                let mechanism = text(5), address = text(3)
                let key = f.count > 6 ? CurveKeys.encode(f[6]) : nil
                let ok = mechanism == "CURVE" && key.map { curve?.allow.contains($0) == true } == true
                if !ok {
                    wireLog("curve", "refused a \(mechanism) peer from \(address): " +
                            (key.map { "public key \($0) is not in the pipeline file's curve.allow" } ?? "no CURVE key"))
                }
                let reply: [OutFrame] = [.bytes(Array("1.0".utf8)), .bytes(f[1]), .bytes(Array((ok ? "200" : "400").utf8)),
                                         .bytes(Array((ok ? "OK" : "key not allowed").utf8)), .bytes(Array((key ?? "").utf8)), .bytes([])]
                try? rep.send(reply)
            }
        }
        thread.name = "zap"
        thread.start()
        bound.wait()
        if let why = failure.withLock({ $0 }) { throw WireError.malformed("cannot start the CURVE handler: \(why)") }
    }
}
