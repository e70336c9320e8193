/// Where media comes from: a file path, or an upload arriving in chunks.
public enum MediaSource: Sendable {
    case file(String)
    case stream(ChunkedInput)

    /// The name errors use: the path, or the stream's name.
    public var name: String {
        switch self {
        case .file(let p): return p
        case .stream(let s): return s.name
        }
    }

    /// A file can be opened again and read at any pace (side-by-side decoding); an upload is read
    /// once, as it arrives.
    var isFile: Bool {
        if case .file = self { return true }
        return false
    }
}

/// A decoded picture: 8-bit RGB, row-major, 3 bytes per pixel, no row padding.
public struct RGBImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    /// RGB24, row-major, `width * height * 3` bytes.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) throws {
        guard width > 0, height > 0, pixels.count == width * height * 3 else {
            throw MediaError.invalidArgument("RGBImage \(width)x\(height) needs \(max(0, width * height * 3)) bytes, got \(pixels.count)")
        }
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// Unchecked initialiser for code that built `pixels` with the right size.
    init(uncheckedWidth width: Int, height: Int, pixels: [UInt8]) {
        self.width = width
        self.height = height
        self.pixels = pixels
    }
}

/// One sampled video frame and its presentation time in seconds, relative to the first frame.
public struct VideoFrame: Sendable, Equatable {
    public let image: RGBImage
    public let timestamp: Double

    public init(image: RGBImage, timestamp: Double) {
        self.image = image
        self.timestamp = timestamp
    }
}
