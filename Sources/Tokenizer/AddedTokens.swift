import JSON

/// One entry of `added_tokens` in tokenizer.json: text matched whole in the input before the model
/// runs (special tokens such as `<s>`, chat markers, user additions).
struct AddedToken: Sendable {
    let id: Int
    let content: Bytes
    let special: Bool
    let singleWord: Bool
    let lstrip: Bool
    let rstrip: Bool
    let normalized: Bool

    init(json: JSONValue, file: String) throws {
        guard let id = json["id"]?.intValue, id >= 0, let content = json["content"]?.stringValue else {
            throw TokenizerError.malformed(file: file, reason: "an added_tokens entry lacks an integer 'id' or a 'content' string")
        }
        self.id = id
        self.content = Array(content.utf8)
        special = json["special"]?.boolValue ?? false
        singleWord = json["single_word"]?.boolValue ?? false
        lstrip = json["lstrip"]?.boolValue ?? false
        rstrip = json["rstrip"]?.boolValue ?? false
        normalized = json["normalized"]?.boolValue ?? !special
    }
}

/// Finds added tokens in text the way `tokenizers`' `AddedVocabulary::find_matches` does: leftmost-
/// longest matches of all patterns (a byte trie standing in for aho-corasick), then the single_word,
/// lstrip and rstrip rules.
struct AddedTokenMatcher: Sendable {
    private struct Node: Sendable { var children: [UInt8: Int] = [:]; var token: Int = -1 }
    private var nodes = [Node()]
    private var firstBytes = [Bool](repeating: false, count: 256)
    private let tokens: [AddedToken]

    /// `patterns[i]` is the text matched for `tokens[i]` (its content, normalized if it asks to be).
    init(tokens: [AddedToken], patterns: [Bytes]) {
        self.tokens = tokens
        for (index, pattern) in patterns.enumerated() where !pattern.isEmpty {
            var node = 0
            for b in pattern {
                if let child = nodes[node].children[b] {
                    node = child
                } else {
                    nodes.append(Node())
                    nodes[node].children[b] = nodes.count - 1
                    node = nodes.count - 1
                }
            }
            if nodes[node].token < 0 { nodes[node].token = index }
            firstBytes[Int(pattern[0])] = true
        }
    }

    var isEmpty: Bool { nodes.count == 1 }

    /// Splits `text` into runs: `(range, tokenId)` for added tokens, `(range, nil)` for the rest.
    func split(_ text: Bytes) -> [(Range<Int>, Int?)] {
        if isEmpty || text.isEmpty { return [(0..<text.count, nil)] }
        var out: [(Range<Int>, Int?)] = []
        var startOffset = 0
        var i = 0
        while i < text.count {
            guard firstBytes[Int(text[i])] else { i += 1; continue }
            // Longest pattern starting at i.
            var node = 0, k = i, best = -1, bestEnd = i
            while k < text.count, let child = nodes[node].children[text[k]] {
                node = child
                k += 1
                if nodes[node].token >= 0 { best = nodes[node].token; bestEnd = k }
            }
            guard best >= 0 else { i += 1; continue }
            var start = i, stop = bestEnd
            i = bestEnd
            let token = tokens[best]
            if token.singleWord {
                let startOK = start == 0 || !AddedTokenMatcher.endsWithWord(text[..<start])
                let stopOK = stop == text.count || !AddedTokenMatcher.startsWithWord(text[stop...])
                if !startOK || !stopOK { continue }
            }
            if token.lstrip { start = max(AddedTokenMatcher.whitespaceStart(text[..<start]), startOffset) }
            if token.rstrip { stop = AddedTokenMatcher.whitespaceEnd(text, from: stop) }
            if start < startOffset { continue }
            if startOffset < start { out.append((startOffset..<start, nil)) }
            out.append((start..<stop, token.id))
            startOffset = stop
            i = max(i, stop)
        }
        if startOffset != text.count { out.append((startOffset..<text.count, nil)) }
        return out
    }

    private static func endsWithWord(_ s: ArraySlice<UInt8>) -> Bool {
        guard let last = String(decoding: s, as: UTF8.self).unicodeScalars.last else { return false }
        return Text.isWordCharacter(last)
    }

    private static func startsWithWord(_ s: ArraySlice<UInt8>) -> Bool {
        guard let first = String(decoding: s, as: UTF8.self).unicodeScalars.first else { return false }
        return Text.isWordCharacter(first)
    }

    /// Offset where the run of whitespace ending `s` begins.
    private static func whitespaceStart(_ s: ArraySlice<UInt8>) -> Int {
        var start = s.endIndex
        for scalar in String(decoding: s, as: UTF8.self).unicodeScalars.reversed() {
            guard Text.isWhitespace(scalar) else { break }
            start -= scalar.utf8.count
        }
        return start
    }

    /// Offset just past the run of whitespace starting at `from`.
    private static func whitespaceEnd(_ text: Bytes, from: Int) -> Int {
        var end = from
        for scalar in String(decoding: text[from...], as: UTF8.self).unicodeScalars {
            guard Text.isWhitespace(scalar) else { break }
            end += scalar.utf8.count
        }
        return end
    }
}
