import Foundation
import Options
import Tensor
import Wire

/// `unimoe wire-bench --bytes N --messages K`: the raw ZeroMQ round trip the pipeline's MoE
/// exchange is measured against — K messages of N bytes sent together through a DEALER to an
/// echoing ROUTER on another thread (loopback TCP), timed until all K echoes are back. Prints
/// `{"round_trip_us": median, "p90_us": …}`.
public enum WireBenchCommand: Command {
    public static let name = "wire-bench"
    public static let usage = "wire-bench --bytes N [--messages K] [--repeats R] [--endpoint tcp://127.0.0.1:*]"

    public static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["bytes", "messages", "repeats", "endpoint"])
        let bytes = try a.int("bytes", range: 4...(1 << 30)) ?? 4096
        let k = try a.int("messages", default: 1, range: 1...1024) ?? 1
        let repeats = try a.int("repeats", default: 2000, range: 1...1_000_000) ?? 2000
        let echo = try Socket(.router)
        try echo.bind(a.value("endpoint") ?? "tcp://127.0.0.1:*")
        let endpoint = try echo.lastEndpoint()
        let stop = StopFlag()
        let ready = DispatchSemaphore(value: 0)
        let t = Thread {
            do {
                let s = try Socket(.dealer)
                try s.connect(endpoint)
                let payload = Tensor(zeros: [bytes / 4])
                ready.signal()
                var times: [Double] = []
                for _ in 0..<(repeats + repeats / 10) {
                    let t0 = monotonicSeconds()
                    for i in 0..<k { try s.send(Message(.expertForward, requestID: UInt64(i), tensors: [payload])) }
                    for _ in 0..<k { guard try s.receive(timeout: 10) != nil else { throw WireError.timeout("echo") } }
                    times.append(monotonicSeconds() - t0)
                }
                times = Array(times.dropFirst(repeats / 10)).sorted()
                printLine(jsonLine(["round_trip_us": times[times.count / 2] * 1e6, "p90_us": times[times.count * 9 / 10] * 1e6,
                                    "bytes": bytes, "messages": k]))
            } catch { printError("wire-bench: \(error)") }
            stop.set()
        }
        t.start()
        ready.wait()
        while !stop.isSet {
            // Echo: parse (as a worker would validate) and send the same tensors back.
            guard let frames = try echo.receive(timeout: 0.2) else { continue }
            let m = try Message(frames: Array(frames.dropFirst()))
            try echo.send(Message(.expertResult, requestID: m.requestID, tensors: m.tensors), to: frames[0].bytes)
        }
    }
}
