import Foundation
import Media
import Options

/// `unimoe media frames|audio`: the decode stage from the command line, per the `unimoe media`
/// section of CLI-CONTRACT.md (raw RGB24 frames or f32le samples to a file, one JSON line on stdout).
public enum MediaCommand: Command {
    public static let name = "media"
    public static let usage = "media frames FILE --count N --size WxH --out FILE | media audio FILE --out FILE"

    public static func run(_ args: [String]) throws {
        guard let sub = args.first else { throw UsageError("missing subcommand (frames or audio)") }
        let rest = Array(args.dropFirst())
        switch sub {
        case "frames": try frames(rest)
        case "audio": try audio(rest)
        default: throw UsageError("unknown subcommand '\(sub)' (frames or audio)")
        }
    }

    static func frames(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["count", "size", "out"])
        guard a.positional.count == 1 else { throw UsageError("frames needs exactly one input FILE") }
        let file = a.positional[0]
        let count = try a.int("count", default: 8, range: 1...10_000) ?? 8
        let out = try a.required("out")
        var width: Int?, height: Int?
        if let size = a.value("size") {
            let parts = size.lowercased().split(separator: "x", omittingEmptySubsequences: false)
            guard parts.count == 2, let w = Int(parts[0]), let h = Int(parts[1]), w > 0, h > 0, w <= 16384, h <= 16384 else {
                throw UsageError("--size needs WxH with positive integers up to 16384, got '\(size)'")
            }
            width = w; height = h
        }
        let frames = try MediaDecoder.videoFrames(.file(file), count: count, width: width, height: height)
        var bytes = [UInt8]()
        bytes.reserveCapacity(frames.reduce(0) { $0 + $1.image.pixels.count })
        for f in frames { bytes.append(contentsOf: f.image.pixels) }
        try bytes.withUnsafeBytes { try write($0, to: out) }
        printLine(jsonLine(["frames": frames.count, "timestamps": frames.map { $0.timestamp }]))
    }

    static func audio(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["out"])
        guard a.positional.count == 1 else { throw UsageError("audio needs exactly one input FILE") }
        let out = try a.required("out")
        let samples = try MediaDecoder.audio(.file(a.positional[0]))
        try samples.withUnsafeBytes { try write($0, to: out) }   // little-endian on every supported host
        printLine(jsonLine(["samples": samples.count, "seconds": Double(samples.count) / 16000]))
    }

    /// Writes `bytes` to `path` straight from the caller's buffer (no `Data` copy: 10 min of audio
    /// is 38 MB, and each copy into fresh memory cost page faults on all of it).
    private static func write(_ bytes: UnsafeRawBufferPointer, to path: String) throws {
        let data = bytes.baseAddress.map { Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: $0), count: bytes.count, deallocator: .none) } ?? Data()
        do {
            try data.write(to: URL(fileURLWithPath: path))
        } catch {
            throw MediaCommandError.cannotWrite(path, (error as NSError).localizedDescription)
        }
    }
}

/// Failures of `unimoe media` outside decoding (the output file).
enum MediaCommandError: Error, CustomStringConvertible {
    case cannotWrite(String, String)
    var description: String {
        switch self {
        case .cannotWrite(let p, let why): return "\(p): cannot write output: \(why)"
        }
    }
}

/// `unimoe bench media logmel [--bins N] [--seconds S]`: the in-process half of scripts/bench-media —
/// log-mel windows per second on one thread (the script compares with transformers in the same run).
enum BenchMedia {
    @Sendable static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["bins", "seconds"])
        guard a.positional == ["logmel"] else { throw UsageError("bench media needs: logmel [--bins N] [--seconds S]") }
        let bins = try a.int("bins", default: 80, range: 1...512) ?? 80
        let seconds = try a.double("seconds", default: 3, range: 0.1...600) ?? 3
        let fe = WhisperFeatureExtractor(melBins: bins)
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        let window = (0..<fe.samplesPerWindow).map { _ -> Float in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: state >> 11) % 20000) / 40000
        }
        var failure: Error?
        let perWindow = BenchReport.time(repeats: 3, minSeconds: seconds / 3) {
            do { _ = try fe.logMel(window) } catch { failure = error }
        }
        if let failure { throw failure }
        printLine(jsonLine(["bins": bins, "windows_per_second": 1 / perWindow]))
    }
}
