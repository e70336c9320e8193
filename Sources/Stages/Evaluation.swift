import Foundation
import Media
import Training

/// Accuracy of a model on a data file in the training format: each sample's first human turn is
/// asked (its media through the same stages as `unimoe run`, greedy), and the answer counts as
/// correct when the expected answer's words appear, in order and whole, in the generated text.
/// Results per modality (the family's prefix, e.g. `speech` of `speech_digit`, or the sample's
/// modality group) and per question family.
public struct Evaluation {
    public struct Tally: Codable, Sendable, Equatable {
        public var correct = 0
        public var total = 0
        public var accuracy: Double { total == 0 ? 0 : Double(correct) / Double(total) }
    }

    /// One evaluated sample.
    public struct Outcome: Codable, Sendable {
        public var id: String
        public var family: String
        public var modality: String
        public var expected: String
        public var generated: String
        public var correct: Bool
    }

    public private(set) var byModality: [String: Tally] = [:]
    public private(set) var byFamily: [String: Tally] = [:]
    public private(set) var outcomes: [Outcome] = []
    public var overall: Tally { byModality.values.reduce(into: Tally()) { $0.correct += $1.correct; $0.total += $1.total } }

    public init() {}

    /// The request a sample asks: its first human turn without placeholders, its media in the
    /// template's order (images, audios, videos).
    public static func request(_ s: RawSample, maxNewTokens: Int) -> (AskRequest, [String]) {
        var q = s.turns.first { $0.fromHuman }?.value ?? ""
        for p in ["<image>", "<audio>", "<video>"] { q = q.replacingOccurrences(of: p + "\n", with: "").replacingOccurrences(of: p, with: "") }
        var media: [MediaItem] = [], files: [String] = []
        for f in s.images { media.append(MediaItem(modality: .image, name: f)); files.append(f) }
        for f in s.audios { media.append(MediaItem(modality: .audio, name: f)); files.append(f) }
        for f in s.videos { media.append(MediaItem(modality: .video, name: f)); files.append(f) }
        return (AskRequest(question: q.trimmingCharacters(in: .whitespacesAndNewlines), media: media, maxNewTokens: maxNewTokens), files)
    }

    /// Expected answer: the `answer` key, else the first gpt turn.
    public static func expected(_ s: RawSample) -> String { s.answer ?? s.turns.first { !$0.fromHuman }?.value ?? "" }

    /// Lower-case alphanumeric words.
    static func words(_ s: String) -> [String] {
        s.lowercased().split { !($0.isLetter || $0.isNumber) }.map(String.init)
    }

    /// Whether `expected`'s words occur as a contiguous run of whole words in `generated`.
    public static func matches(expected: String, generated: String) -> Bool {
        let e = words(expected), g = words(generated)
        guard !e.isEmpty, g.count >= e.count else { return false }
        for i in 0...(g.count - e.count) where Array(g[i..<(i + e.count)]) == e { return true }
        return false
    }

    public static func modality(_ s: RawSample) -> String {
        if let f = s.family, let p = f.split(separator: "_").first { return String(p) }
        return s.modalityGroup
    }

    public mutating func record(_ s: RawSample, generated: String) {
        let exp = Self.expected(s)
        let ok = Self.matches(expected: exp, generated: generated)
        let m = Self.modality(s), f = s.family ?? m
        byModality[m, default: Tally()].correct += ok ? 1 : 0
        byModality[m, default: Tally()].total += 1
        byFamily[f, default: Tally()].correct += ok ? 1 : 0
        byFamily[f, default: Tally()].total += 1
        outcomes.append(Outcome(id: s.id, family: f, modality: m, expected: exp, generated: generated, correct: ok))
    }
}
