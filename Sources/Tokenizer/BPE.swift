import JSON
import Synchronization

/// The model stage of `tokenizer.json`: byte-pair encoding of one pre-tokenized word. Merges are a
/// rank table applied lowest rank first (leftmost on ties) with a priority queue, exactly as
/// `tokenizers`' `Word::merge_all`; characters missing from the vocabulary fall back to `<0xNN>`
/// byte tokens when `byte_fallback` is set, else to the unknown token. Results are cached per word.
final class BPEModel: Sendable {
    let vocab: [ByteKey: Int]
    /// Token bytes by id (nil for ids the vocabulary skips).
    let tokens: [Bytes?]
    private let merges: [UInt64: MergeTarget]
    private let unkId: Int?
    private let fuseUnk: Bool
    private let byteFallback: Bool
    private let ignoreMerges: Bool
    private let prefix: Bytes?
    private let suffix: Bytes?
    /// Id of `<0xNN>` for every byte, -1 where absent.
    private let byteIds: [Int]
    /// Id of each single ASCII character token (when no prefix/suffix applies), -1 where absent.
    private let asciiIds: [Int]
    private let cache = Mutex<[ByteKey: [Int]]>([:])
    private static let cacheCapacity = 10_000

    struct MergeTarget: Sendable { let rank: Int32; let id: Int32 }

    init(json: JSONValue, file: String) throws {
        if let type = json["type"]?.stringValue, type != "BPE" {
            throw TokenizerError.unsupported(file: file, stage: "model", type: type)
        }
        guard let vocabJSON = json["vocab"]?.members else {
            throw TokenizerError.malformed(file: file, reason: "model has no 'vocab' object")
        }
        var vocab: [ByteKey: Int] = [:]
        vocab.reserveCapacity(vocabJSON.count)
        var maxId = -1
        for (token, idJSON) in vocabJSON {
            guard let id = idJSON.intValue, id >= 0 else {
                throw TokenizerError.malformed(file: file, reason: "vocab entry '\(token)' has id \(idJSON), not a non-negative integer")
            }
            vocab[ByteKey(Array(token.utf8))] = id
            maxId = max(maxId, id)
        }
        var tokens = [Bytes?](repeating: nil, count: maxId + 1)
        for (t, id) in vocab { tokens[id] = t.bytes }
        self.vocab = vocab
        self.tokens = tokens

        func optionalString(_ key: String) -> Bytes? {
            guard let s = json[key]?.stringValue, !s.isEmpty else { return nil }
            return Array(s.utf8)
        }
        prefix = optionalString("continuing_subword_prefix")
        suffix = optionalString("end_of_word_suffix")
        fuseUnk = json["fuse_unk"]?.boolValue ?? false
        byteFallback = json["byte_fallback"]?.boolValue ?? false
        ignoreMerges = json["ignore_merges"]?.boolValue ?? false
        if let unk = json["unk_token"]?.stringValue {
            guard let id = vocab[ByteKey(Array(unk.utf8))] else {
                throw TokenizerError.malformed(file: file, reason: "unk_token '\(unk)' is not in the vocabulary")
            }
            unkId = id
        } else {
            unkId = nil
        }

        guard let mergesJSON = json["merges"]?.arrayValue else {
            throw TokenizerError.malformed(file: file, reason: "BPE model has no 'merges' array")
        }
        var merges: [UInt64: MergeTarget] = [:]
        merges.reserveCapacity(mergesJSON.count)
        let prefixLength = prefix?.count ?? 0
        for (rank, m) in mergesJSON.enumerated() {
            let a: String, b: String
            if let s = m.stringValue {
                // Split on the space as a scalar, not a Character: a second token starting with a
                // combining mark would otherwise fuse with the space into one grapheme.
                let parts = s.unicodeScalars.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else {
                    throw TokenizerError.malformed(file: file, reason: "merge \(rank + 1) '\(s)' is not two tokens separated by one space")
                }
                a = String(String.UnicodeScalarView(parts[0])); b = String(String.UnicodeScalarView(parts[1]))
            } else if let pair = m.arrayValue, pair.count == 2, let x = pair[0].stringValue, let y = pair[1].stringValue {
                a = x; b = y
            } else {
                throw TokenizerError.malformed(file: file, reason: "merge \(rank + 1) is neither \"a b\" nor [\"a\", \"b\"]")
            }
            let name = "\(a) \(b)"
            guard let ia = vocab[ByteKey(Array(a.utf8))] else { throw TokenizerError.mergeOutOfVocabulary(file: file, merge: name, token: a) }
            guard let ib = vocab[ByteKey(Array(b.utf8))] else { throw TokenizerError.mergeOutOfVocabulary(file: file, merge: name, token: b) }
            let bb = Array(b.utf8)
            let joined = Array(a.utf8) + (bb.count >= prefixLength ? Array(bb[prefixLength...]) : bb)
            guard let id = vocab[ByteKey(joined)] else {
                throw TokenizerError.mergeOutOfVocabulary(file: file, merge: name, token: String(decoding: joined, as: UTF8.self))
            }
            let key = UInt64(ia) << 32 | UInt64(ib)
            if merges[key] == nil { merges[key] = MergeTarget(rank: Int32(rank), id: Int32(id)) }
        }
        self.merges = merges

        var byteIds = [Int](repeating: -1, count: 256)
        for b in 0..<256 {
            let name = "<0x" + String(b, radix: 16, uppercase: true).leftPadded(to: 2) + ">"
            byteIds[b] = vocab[ByteKey(Array(name.utf8))] ?? -1
        }
        self.byteIds = byteIds
        var asciiIds = [Int](repeating: -1, count: 128)
        for c in 0..<128 { asciiIds[c] = vocab[ByteKey([UInt8(c)])] ?? -1 }
        self.asciiIds = asciiIds
    }

    func id(of token: Bytes) -> Int? { vocab[ByteKey(token)] }

    func token(of id: Int) -> Bytes? { id >= 0 && id < tokens.count ? tokens[id] : nil }

    /// Token ids of one word.
    func encode(_ word: Bytes) -> [Int] {
        if word.isEmpty { return [] }
        let key = ByteKey(word)
        if ignoreMerges, let id = vocab[key] { return [id] }
        if let hit = cache.withLock({ $0[key] }) { return hit }
        let ids = mergeWord(word)
        cache.withLock { c in if c.count < BPEModel.cacheCapacity { c[key] = ids } }
        return ids
    }

    /// Initial symbols (one per character, or per byte after fallback), then merges.
    private func mergeWord(_ w: Bytes) -> [Int] {
        var ids: [Int] = []
        ids.reserveCapacity(w.count)
        var pendingUnk = false
        var i = 0
        while i < w.count {
            let n = min(Text.sequenceLength(w[i]), w.count - i)
            let end = i + n
            let isFirst = i == 0, isLast = end == w.count
            var id = -1
            if n == 1 && w[i] < 0x80 && (prefix == nil || isFirst) && (suffix == nil || !isLast) {
                id = asciiIds[Int(w[i])]
            } else {
                var key = Bytes()
                if !isFirst, let prefix { key += prefix }
                key += w[i..<end]
                if isLast, let suffix { key += suffix }
                id = vocab[ByteKey(key)] ?? -1
            }
            if id >= 0 {
                if pendingUnk, let unkId { ids.append(unkId); pendingUnk = false }
                ids.append(id)
            } else {
                var handled = false
                if byteFallback {
                    var key = Bytes()
                    if !isFirst, let prefix { key += prefix }
                    key += w[i..<end]
                    if isLast, let suffix { key += suffix }
                    if key.allSatisfy({ byteIds[Int($0)] >= 0 }) {
                        for b in key { ids.append(byteIds[Int(b)]) }
                        handled = true
                    }
                }
                if !handled, let unkId {
                    if pendingUnk && !fuseUnk { ids.append(unkId) }
                    pendingUnk = true
                }
            }
            i = end
        }
        if pendingUnk, let unkId { ids.append(unkId) }
        if ids.count < 2 || merges.isEmpty { return ids }
        return applyMerges(ids)
    }

    /// `Word::merge_all`: a min-heap of (rank, position); stale entries are skipped when popped.
    private func applyMerges(_ start: [Int]) -> [Int] {
        let n = start.count
        var sym = start
        var prev = [Int](repeating: -1, count: n)
        var next = [Int](repeating: -1, count: n)
        var alive = [Bool](repeating: true, count: n)
        for k in 0..<n { prev[k] = k - 1; next[k] = k + 1 < n ? k + 1 : -1 }
        var heap = MergeHeap()
        for k in 0..<(n - 1) {
            if let m = merges[UInt64(sym[k]) << 32 | UInt64(sym[k + 1])] {
                heap.push(.init(rank: m.rank, pos: Int32(k), id: m.id))
            }
        }
        while let top = heap.pop() {
            let pos = Int(top.pos)
            guard alive[pos], next[pos] >= 0 else { continue }
            let right = next[pos]
            guard let m = merges[UInt64(sym[pos]) << 32 | UInt64(sym[right])], m.id == top.id else { continue }
            sym[pos] = Int(top.id)
            alive[right] = false
            next[pos] = next[right]
            if next[right] >= 0 { prev[next[right]] = pos }
            if prev[pos] >= 0, let m = merges[UInt64(sym[prev[pos]]) << 32 | UInt64(sym[pos])] {
                heap.push(.init(rank: m.rank, pos: Int32(prev[pos]), id: m.id))
            }
            if next[pos] >= 0, let m = merges[UInt64(sym[pos]) << 32 | UInt64(sym[next[pos]])] {
                heap.push(.init(rank: m.rank, pos: Int32(pos), id: m.id))
            }
        }
        var out: [Int] = []
        var k = 0
        while k >= 0 && k < n { out.append(sym[k]); k = next[k] }
        return out
    }
}

/// Binary min-heap of pending merges ordered by (rank, position).
private struct MergeHeap {
    struct Entry { let rank: Int32; let pos: Int32; let id: Int32 }
    private var items: [Entry] = []

    @inline(__always)
    private static func less(_ a: Entry, _ b: Entry) -> Bool { a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos }

    mutating func push(_ e: Entry) {
        items.append(e)
        var c = items.count - 1
        while c > 0 {
            let p = (c - 1) / 2
            if MergeHeap.less(items[c], items[p]) { items.swapAt(c, p); c = p } else { break }
        }
    }

    mutating func pop() -> Entry? {
        guard let first = items.first else { return nil }
        let last = items.removeLast()
        if items.isEmpty { return first }
        items[0] = last
        var p = 0
        while true {
            let l = 2 * p + 1, r = l + 1
            var m = p
            if l < items.count && MergeHeap.less(items[l], items[m]) { m = l }
            if r < items.count && MergeHeap.less(items[r], items[m]) { m = r }
            if m == p { break }
            items.swapAt(p, m); p = m
        }
        return first
    }
}

extension String {
    func leftPadded(to n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}
