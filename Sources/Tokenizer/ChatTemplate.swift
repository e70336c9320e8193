/// Prompt text the UniMoE reference builds for a chat turn, with `<image>`/`<audio>`/`<video>`
/// placeholders where media embeddings will be stitched in.
public enum ChatTemplate {
    /// Vicuna v1's system line.
    public static let vicunaSystem = "A chat between a curious user and an artificial intelligence assistant. "
        + "The assistant gives helpful, detailed, and polite answers to the user's questions."

    /// Vicuna v1 (separator " ", roles USER/ASSISTANT): the media placeholders, each on its own line
    /// (images, then audios, then videos), then the query; ends with "ASSISTANT:" for generation.
    public static func vicuna(query: String, images: Int = 0, audios: Int = 0, videos: Int = 0) -> String {
        var message = ""
        for _ in 0..<max(0, images) { message += "<image>\n" }
        for _ in 0..<max(0, audios) { message += "<audio>\n" }
        for _ in 0..<max(0, videos) { message += "<video>\n" }
        message += query
        return vicunaSystem + " USER: " + message + " ASSISTANT:"
    }
}

/// Sentinel ids that stand for a media input in a token sequence; each is replaced by that input's
/// embedding rows before the language model runs (values from the reference implementation).
public enum Placeholder: Int, Sendable, CaseIterable {
    case image = -200, audio = -300, video = -400

    /// The text that marks this placeholder in a prompt.
    public var text: String {
        switch self {
        case .image: return "<image>"
        case .audio: return "<audio>"
        case .video: return "<video>"
        }
    }
}

extension Tokenizer {
    /// Token ids of a prompt with `<image>`, `<audio>`, `<video>` replaced by `Placeholder` sentinels,
    /// as the reference's `tokenizer_image_audio_video_token`: the text between placeholders is
    /// tokenised chunk by chunk (each chunk as a fresh encode, so SentencePiece's leading-space
    /// rule applies per chunk), BOS kept once at the start.
    public func encodeWithPlaceholders(_ prompt: String) -> [Int] {
        // Split on the placeholders by bytes, as Python's re.split does on code points.
        let bytes = Array(prompt.utf8)
        var hits: [(Range<Int>, Placeholder)] = []
        for kind in Placeholder.allCases {
            hits += Text.occurrences(of: Array(kind.text.utf8), in: bytes).map { ($0, kind) }
        }
        hits.sort { $0.0.lowerBound < $1.0.lowerBound }
        var chunks: [String] = []
        var sentinels: [Placeholder] = []
        var start = 0
        for (range, kind) in hits where range.lowerBound >= start {
            chunks.append(String(decoding: bytes[start..<range.lowerBound], as: UTF8.self))
            sentinels.append(kind)
            start = range.upperBound
        }
        chunks.append(String(decoding: bytes[start...], as: UTF8.self))
        let encoded = chunks.map { encode($0) }
        var out: [Int] = []
        // The reference drops the first id of every chunk when the first chunk starts with BOS.
        var dropFirst = false
        if let first = encoded.first?.first, first == bosTokenId {
            dropFirst = true
            out.append(first)
        }
        for (i, ids) in encoded.enumerated() {
            out += dropFirst ? Array(ids.dropFirst()) : ids
            if i < sentinels.count { out.append(sentinels[i].rawValue) }
        }
        return out
    }
}
