/// Bounds that keep hostile or accidental input (a 100000×100000 PNG header, a ten-hour video, a
/// multi-gigabyte upload) from exhausting memory or time. Beyond any of them decoding stops with
/// `MediaError.limitExceeded`.
public struct MediaLimits: Sendable, Equatable {
    /// Most pixels in one decoded frame (width × height), checked before buffers are allocated.
    public var maxPixels: Int
    /// Longest media accepted, in seconds (container or stream duration, and decoded audio length).
    public var maxDurationSeconds: Double
    /// Most input bytes read (file size, or bytes a stream delivers).
    public var maxBytes: Int
    /// Most 30 s audio windows handed to the audio encoder (Uni-MoE: 20, i.e. 10 minutes).
    public var maxAudioWindows: Int

    public init(maxPixels: Int = 8192 * 8192, maxDurationSeconds: Double = 4 * 3600,
                maxBytes: Int = 4 << 30, maxAudioWindows: Int = 20) {
        self.maxPixels = maxPixels
        self.maxDurationSeconds = maxDurationSeconds
        self.maxBytes = maxBytes
        self.maxAudioWindows = maxAudioWindows
    }

    /// 64 megapixels, 4 hours, 4 GiB, 20 audio windows.
    public static let `default` = MediaLimits()
}
