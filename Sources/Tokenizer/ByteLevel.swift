/// GPT-2's reversible byte ↔ printable-character table (`bytes_to_unicode`): byte-level BPE
/// vocabularies spell every byte as one of these 256 characters.
enum ByteLevel {
    /// Scalar value standing for each byte.
    static let byteToScalar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable {
                table[b] = UInt32(b)
            } else {
                table[b] = 256 + n
                n += 1
            }
        }
        return table
    }()

    /// UTF-8 of each byte's stand-in character.
    static let byteToUTF8: [Bytes] = byteToScalar.map { v in
        var out: Bytes = []
        Text.append(Unicode.Scalar(v) ?? " ", to: &out)
        return out
    }

    /// Inverse table indexed by scalar value (< 324); -1 where no byte maps there.
    static let scalarToByte: [Int16] = {
        var table = [Int16](repeating: -1, count: 324)
        for (b, v) in byteToScalar.enumerated() { table[Int(v)] = Int16(b) }
        return table
    }()

    static func encode(_ bytes: Bytes) -> Bytes {
        var out: Bytes = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes { out.append(contentsOf: byteToUTF8[Int(b)]) }
        return out
    }

    /// The original bytes of a byte-level token, or nil if a character is outside the table.
    static func decode(_ token: Bytes) -> Bytes? {
        var out: Bytes = []
        out.reserveCapacity(token.count)
        for s in String(decoding: token, as: UTF8.self).unicodeScalars {
            let v = Int(s.value)
            guard v < scalarToByte.count, scalarToByte[v] >= 0 else { return nil }
            out.append(UInt8(scalarToByte[v]))
        }
        return out
    }
}
