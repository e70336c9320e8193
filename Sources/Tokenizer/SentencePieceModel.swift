import Foundation

/// A SentencePiece `tokenizer.model`: a serialized `sentencepiece.ModelProto` holding the pieces
/// (text, score, type) and the trainer's settings. The file is untrusted: it is read by a
/// bounds-checked protobuf wire reader, unknown fields are skipped, and anything that does not
/// parse is a `TokenizerError.malformed` naming the file, the field and the byte offset.
public struct SentencePieceModel: Sendable, Equatable {
    /// `SentencePiece.Type` of the proto.
    public enum PieceType: Int, Sendable {
        case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    /// `TrainerSpec.ModelType` of the proto.
    public enum ModelType: Int, Sendable {
        case unigram = 1, bpe = 2, word = 3, char = 4
    }

    /// One vocabulary entry; its id is its index in `pieces`.
    public struct Piece: Sendable, Equatable {
        public var text: String
        public var score: Float
        public var type: PieceType
    }

    public var pieces: [Piece] = []
    /// The proto's default is unigram.
    public var modelType: ModelType = .unigram
    public var byteFallback = false
    public var unkId = 0, bosId = 1, eosId = 2, padId = -1

    public init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TokenizerError.io(path: path, reason: "cannot be read")
        }
        try self.init(data: data, file: path)
    }

    public init(data: Data, file: String) throws {
        let bytes = [UInt8](data)
        var top = ProtoReader(bytes: bytes, range: 0..<bytes.count, file: file, message: "ModelProto")
        while let (field, wire) = try top.next() {
            switch (field, wire) {
            case (1, 2): pieces.append(try Self.piece(top.message("pieces[\(pieces.count)]"), index: pieces.count))
            case (2, 2): try readTrainerSpec(top.message("trainer_spec"))
            default: try top.skip(field: field, wire: wire)
            }
        }
        guard !pieces.isEmpty else { throw TokenizerError.malformed(file: file, reason: "not a SentencePiece model: no pieces") }
        var seen: [String: Int] = [:]
        for (i, p) in pieces.enumerated() {
            if let j = seen[p.text] {
                throw TokenizerError.malformed(file: file, reason: "pieces \(j) and \(i) are both '\(p.text)'")
            }
            seen[p.text] = i
        }
        for (name, id) in [("unk_id", unkId), ("bos_id", bosId), ("eos_id", eosId), ("pad_id", padId)] where id >= pieces.count {
            throw TokenizerError.malformed(file: file, reason: "trainer_spec.\(name) is \(id), but the model has \(pieces.count) pieces")
        }
    }

    private static func piece(_ r: ProtoReader, index: Int) throws -> Piece {
        var r = r
        var text: String?, score: Float = 0, type = PieceType.normal
        while let (field, wire) = try r.next() {
            switch (field, wire) {
            case (1, 2): text = try r.string("piece")
            case (2, 5): score = Float(bitPattern: try r.fixed32())
            case (3, 0):
                let v = try r.varint()
                guard let t = PieceType(rawValue: Int(truncatingIfNeeded: v)) else { throw r.error("type \(v) is not a SentencePiece type (1…6)") }
                type = t
            default: try r.skip(field: field, wire: wire)
            }
        }
        guard let text, !text.isEmpty else { throw r.error("has no piece text") }
        return Piece(text: text, score: score, type: type)
    }

    private mutating func readTrainerSpec(_ r: ProtoReader) throws {
        var r = r
        while let (field, wire) = try r.next() {
            switch (field, wire) {
            case (3, 0):
                let v = try r.varint()
                guard let t = ModelType(rawValue: Int(truncatingIfNeeded: v)) else { throw r.error("model_type \(v) is not one of 1…4") }
                modelType = t
            case (35, 0): byteFallback = try r.varint() != 0
            case (40, 0): unkId = try r.int32()
            case (41, 0): bosId = try r.int32()
            case (42, 0): eosId = try r.int32()
            case (43, 0): padId = try r.int32()
            default: try r.skip(field: field, wire: wire)
            }
        }
    }
}

/// Reads protobuf wire format from a byte range, every length and varint checked against the range.
struct ProtoReader {
    let bytes: [UInt8]
    let range: Range<Int>
    let file: String
    /// Where this message sits in the proto (for messages).
    let message: String
    private var pos: Int

    init(bytes: [UInt8], range: Range<Int>, file: String, message: String) {
        self.bytes = bytes; self.range = range; self.file = file; self.message = message; pos = range.lowerBound
    }

    func error(_ reason: String) -> TokenizerError {
        .malformed(file: file, reason: "not a valid SentencePiece model: \(message) \(reason) (byte \(pos))")
    }

    /// The next field's number and wire type; nil at the end of the message.
    mutating func next() throws -> (Int, Int)? {
        guard pos < range.upperBound else { return nil }
        let key = try varint()
        let field = key >> 3, wire = Int(key & 7)
        guard field >= 1, field <= 536_870_911 else { throw error("has field number \(field)") }
        return (Int(field), wire)
    }

    mutating func varint() throws -> UInt64 {
        var value: UInt64 = 0
        for shift in stride(from: 0, to: 70, by: 7) {
            guard pos < range.upperBound else { throw error("ends inside a varint") }
            let b = bytes[pos]
            pos += 1
            if shift == 63, b > 1 { throw error("has a varint longer than 64 bits") }
            value |= UInt64(b & 0x7f) << UInt64(shift)
            if b & 0x80 == 0 { return value }
        }
        throw error("has a varint longer than 10 bytes")
    }

    /// An int32 field (negative values are sign-extended to 10 bytes on the wire).
    mutating func int32() throws -> Int { Int(Int32(truncatingIfNeeded: try varint())) }

    mutating func fixed32() throws -> UInt32 {
        guard range.upperBound - pos >= 4 else { throw error("ends inside a 32-bit field") }
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(bytes[pos + i]) << UInt32(8 * i) }
        pos += 4
        return v
    }

    /// The byte range of a length-delimited field.
    mutating func lengthDelimited() throws -> Range<Int> {
        let n = try varint()
        guard n <= UInt64(range.upperBound - pos) else { throw error("has a field of \(n) bytes that runs past its end") }
        let r = pos..<(pos + Int(n))
        pos += Int(n)
        return r
    }

    /// A nested message (a reader over its bytes).
    mutating func message(_ name: String) throws -> ProtoReader {
        ProtoReader(bytes: bytes, range: try lengthDelimited(), file: file, message: "\(message).\(name)")
    }

    mutating func string(_ name: String) throws -> String {
        let r = try lengthDelimited()
        guard let s = String(validating: bytes[r], as: UTF8.self) else { throw error("\(name) is not valid UTF-8") }
        return s
    }

    /// Skips a field of a wire type we do not read; groups (3, 4) and unknown types are refused.
    mutating func skip(field: Int, wire: Int) throws {
        switch wire {
        case 0: _ = try varint()
        case 1:
            guard range.upperBound - pos >= 8 else { throw error("ends inside a 64-bit field") }
            pos += 8
        case 2: _ = try lengthDelimited()
        case 5: _ = try fixed32()
        default: throw error("field \(field) has wire type \(wire), which this reader does not accept")
        }
    }
}
