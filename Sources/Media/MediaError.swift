import CFFmpeg

/// Everything that can go wrong turning a user's file or upload into pixels or samples. Every case
/// names the input (a path, or a stream's name) and says why, so a user can act on the message.
public enum MediaError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The input could not be opened or its format not recognised.
    case cannotOpen(file: String, reason: String)
    /// An FFmpeg call failed: which call, its error code and FFmpeg's message.
    case ffmpeg(file: String, function: String, code: Int32, message: String)
    /// The input holds no stream of the kind asked for (e.g. audio asked from a still image).
    case noStream(file: String, kind: String)
    /// The stream's codec has no decoder in this FFmpeg build.
    case noDecoder(file: String, codec: String)
    /// The input is empty (no bytes at all).
    case empty(file: String)
    /// The input decodes to nothing usable (no frame, no sample, a truncated file).
    case invalidData(file: String, reason: String)
    /// A `MediaLimits` bound was exceeded: the input is too big, too long or too many pixels.
    case limitExceeded(file: String, reason: String)
    /// The producer of a streamed input gave up before finishing it.
    case aborted(file: String, reason: String)
    /// A caller passed an argument that cannot work (count 0, size 0×0, ...).
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .cannotOpen(let f, let r): return "\(f): cannot open: \(r)"
        case .ffmpeg(let f, let fn, let code, let m): return "\(f): \(fn) failed: \(m) (\(code))"
        case .noStream(let f, let kind): return "\(f): no \(kind) stream"
        case .noDecoder(let f, let c): return "\(f): no decoder for codec \(c) in this FFmpeg build"
        case .empty(let f): return "\(f): input is empty (0 bytes)"
        case .invalidData(let f, let r): return "\(f): invalid data: \(r)"
        case .limitExceeded(let f, let r): return "\(f): limit exceeded: \(r)"
        case .aborted(let f, let r): return "\(f): input aborted: \(r)"
        case .invalidArgument(let m): return "invalid argument: \(m)"
        }
    }
}

/// FFmpeg's message for an error code.
func ffErrorString(_ code: Int32) -> String {
    var buf = [CChar](repeating: 0, count: 256)
    let s = buf.withUnsafeMutableBufferPointer { b -> String in
        String(cString: CFFmpeg_err2str(code, b.baseAddress, b.count))
    }
    return s
}

/// The one place FFmpeg return codes become errors: a negative `ret` throws `MediaError.ffmpeg`
/// carrying the call's name and FFmpeg's message; anything else is returned unchanged.
@discardableResult
func check(_ ret: Int32, _ function: String, file: String) throws -> Int32 {
    if ret >= 0 { return ret }
    throw MediaError.ffmpeg(file: file, function: function, code: ret, message: ffErrorString(ret))
}
