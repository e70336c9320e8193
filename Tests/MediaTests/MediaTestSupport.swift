import Foundation
import XCTest
import Media
import TestSupport

/// Test media made with the ffmpeg program from lavfi sources, cached per content in a temp folder
/// shared by the (possibly parallel) test processes, plus the ffmpeg program's own decodes as reference.
enum TestMedia {
    static let dir: String = {
        let d = NSTemporaryDirectory() + "unimoe-media-tests-\(getuid())"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }()

    /// Runs the ffmpeg program; fails the test with its stderr on error.
    static func ffmpeg(_ args: [String]) throws -> Data {
        let r = try runProcess("/usr/bin/ffmpeg", ["-hide_banner", "-loglevel", "error", "-nostdin"] + args, timeout: 120)
        guard r.status == 0 else { throw TestMediaError.tool("ffmpeg \(args.joined(separator: " ")): \(r.stderr)") }
        return r.stdoutData
    }

    /// A file `name` made by `ffmpeg args… OUT` once (named after the arguments' hash, written atomically).
    static func make(_ name: String, _ args: [String]) throws -> String {
        var h: UInt64 = 1469598103934665603
        for b in args.joined(separator: "\u{1}").utf8 { h = (h ^ UInt64(b)) &* 1099511628211 }
        let ext = (name as NSString).pathExtension
        let path = "\(dir)/\((name as NSString).deletingPathExtension)-\(String(h, radix: 16)).\(ext)"
        if FileManager.default.fileExists(atPath: path) { return path }
        let tmp = "\(dir)/tmp-\(getpid())-\(UInt64.random(in: 0...UInt64.max)).\(ext)"
        _ = try ffmpeg(["-y"] + args + [tmp])
        if rename(tmp, path) != 0 { unlink(tmp) }
        return path
    }

    static let video2s = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=2"]
    static let tone2s = ["-f", "lavfi", "-i", "sine=frequency=440:duration=2:sample_rate=44100"]

    static func h264() throws -> String { try make("h264.mp4", video2s + ["-c:v", "libx264", "-g", "12", "-pix_fmt", "yuv420p"]) }
    static func h264MoovAtEnd() throws -> String { try h264() }   // the mp4 muxer writes moov last by default
    static func h264FastStart() throws -> String {
        try make("faststart.mp4", video2s + ["-c:v", "libx264", "-g", "12", "-pix_fmt", "yuv420p", "-movflags", "+faststart"])
    }
    static func vp9() throws -> String {
        try make("vp9.webm", video2s + ["-c:v", "libvpx-vp9", "-b:v", "200k", "-g", "12", "-deadline", "realtime", "-cpu-used", "8"])
    }
    static func hevc() throws -> String {
        try make("hevc.mkv", video2s + ["-c:v", "libx265", "-x265-params", "log-level=error:keyint=12", "-preset", "ultrafast"])
    }
    static func av1() throws -> String {
        try make("av1.mkv", ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=1", "-c:v", "libaom-av1", "-cpu-used", "8", "-g", "5"])
    }
    static func gif() throws -> String { try make("anim.gif", ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=1"]) }
    static func tenBit() throws -> String { try make("ten.mp4", video2s + ["-c:v", "libx264", "-pix_fmt", "yuv420p10le", "-g", "12"]) }
    /// 333×217 4:2:0 (VP9 in MP4: x264 refuses odd 4:2:0 sizes), chroma planes 167×109.
    static func odd() throws -> String {
        try make("odd.mp4", ["-f", "lavfi", "-i", "testsrc2=size=333x217:rate=25:duration=2,format=rgb24", "-c:v", "libvpx-vp9",
                             "-pix_fmt", "yuv420p", "-deadline", "realtime", "-cpu-used", "8", "-g", "10"])
    }
    static func videoWithAudio() throws -> String {
        try make("av.mp4", video2s + tone2s + ["-c:v", "libx264", "-g", "12", "-c:a", "aac", "-ac", "2", "-shortest"])
    }
    /// Display-matrix rotation (stream side data) set by remuxing, as phones record.
    static func rotated(_ degrees: Int, source: String) throws -> String {
        try make("rot\(degrees).mp4", ["-i", source, "-c", "copy", "-metadata:s:v:0", "rotate=\(degrees)"])
    }
    /// Variable frame rate: irregular gaps between frames.
    static func vfr() throws -> String {
        try make("vfr.mp4", video2s + ["-vf", "select='not(mod(n\\,3))+eq(n\\,7)+eq(n\\,8)',setpts=N/TB/10+if(gt(N\\,5)\\,0.3/TB\\,0)",
                                       "-vsync", "vfr", "-c:v", "libx264", "-g", "12"])
    }
    static func image(_ ext: String, codec: [String] = []) throws -> String {
        try make("img.\(ext)", ["-f", "lavfi", "-i", "testsrc2=size=333x217", "-frames:v", "1"] + codec)
    }
    static func audio(_ ext: String, codec: [String] = []) throws -> String {
        try make("tone.\(ext)", tone2s + ["-ac", "2"] + codec)
    }

    /// What the ffmpeg program decodes: frames with the given pts indices, upright, scaled bilinear.
    static func referenceFrames(_ file: String, indices: [Int], width: Int, height: Int) throws -> [[UInt8]] {
        let unique = Array(Set(indices)).sorted()
        let select = unique.map { "eq(n\\,\($0))" }.joined(separator: "+")
        let data = try ffmpeg(["-i", file, "-vf", "select=\(select),scale=\(width):\(height):flags=bilinear", "-vsync", "0",
                               "-pix_fmt", "rgb24", "-f", "rawvideo", "-"])
        let size = width * height * 3
        guard data.count == size * unique.count else { throw TestMediaError.tool("reference has \(data.count) bytes, want \(size * unique.count)") }
        let bytes = [UInt8](data)
        return indices.map { i in
            let k = unique.firstIndex(of: i)!
            return Array(bytes[(k * size)..<((k + 1) * size)])
        }
    }

    /// Presentation times of every frame (ffprobe) and the stream's (else container's) duration.
    static func probe(_ file: String) throws -> (times: [Double], duration: Double) {
        let r = try runProcess("/usr/bin/ffprobe", ["-v", "error", "-select_streams", "v:0", "-show_entries",
                                                     "frame=best_effort_timestamp_time:stream=duration:format=duration", "-of", "json", file])
        guard r.status == 0, let j = try JSONSerialization.jsonObject(with: r.stdoutData) as? [String: Any] else {
            throw TestMediaError.tool("ffprobe \(file): \(r.stderr)")
        }
        let frames = (j["frames"] as? [[String: Any]] ?? []).compactMap { ($0["best_effort_timestamp_time"] as? String).flatMap(Double.init) }
        let stream = ((j["streams"] as? [[String: Any]])?.first?["duration"] as? String).flatMap(Double.init)
        let container = ((j["format"] as? [String: Any])?["duration"] as? String).flatMap(Double.init)
        return (frames, stream ?? container ?? 0)
    }

    /// `ffmpeg -i F -ar 16000 -ac 1 -f f32le -`.
    static func referenceAudio(_ file: String) throws -> [Float] {
        let data = try ffmpeg(["-i", file, "-ar", "16000", "-ac", "1", "-f", "f32le", "-"])
        return data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    /// Reads `path` into a chunked stream fed by a background thread, `chunk` bytes at a time.
    static func stream(_ path: String, chunk: Int) throws -> ChunkedInput {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let input = ChunkedInput(name: (path as NSString).lastPathComponent)
        Thread.detachNewThread {
            var i = 0
            while i < bytes.count {
                let j = min(bytes.count, i + chunk)
                input.append(bytes[i..<j])
                i = j
                if i % (chunk * 4) == 0 { usleep(200) }    // let the reader catch up and wait now and then
            }
            input.finish()
        }
        return input
    }
}

enum TestMediaError: Error { case tool(String) }

/// Mean absolute difference of two byte buffers.
func meanAbsDiff(_ a: [UInt8], _ b: [UInt8]) -> Double {
    guard a.count == b.count else { return .infinity }
    var s = 0
    for i in 0..<a.count { s += abs(Int(a[i]) - Int(b[i])) }
    return Double(s) / Double(max(1, a.count))
}
