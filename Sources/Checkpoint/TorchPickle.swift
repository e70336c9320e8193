import Foundation
import Tensor

/// A value on the safe unpickler's stack. Dicts and lists are references (pickle mutates them after
/// memoising them); globals are only ever names from the allow-list, never resolved or imported.
indirect enum PickleValue {
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    /// Items and nesting depth (tuples are immutable, so the depth is exact; lists and dicts count 1).
    case tuple([PickleValue], depth: Int)
    case list(PickleList)
    case dict(PickleDict)
    case global(String)
    case storage(TorchStorageRef)
    case tensor(TorchTensorRef)

    var kind: String {
        switch self {
        case .none: return "None"
        case .bool: return "a bool"
        case .int: return "an int"
        case .float: return "a float"
        case .string: return "a string"
        case .tuple: return "a tuple"
        case .list: return "a list"
        case .dict: return "a dict"
        case .global(let g): return "global \(g)"
        case .storage: return "a storage"
        case .tensor: return "a tensor"
        }
    }
}

final class PickleList { var items: [PickleValue] = [] }
final class PickleDict { var items: [(PickleValue, PickleValue)] = [] }

/// Owns every list and dict a pickle creates and empties them all at the end, so a hostile pickle's
/// million-deep chain of containers (or a cycle) is torn down without recursion or leaks.
final class PickleArena {
    private var lists: [PickleList] = []
    private var dicts: [PickleDict] = []
    func list() -> PickleList { let l = PickleList(); lists.append(l); return l }
    func dict() -> PickleDict { let d = PickleDict(); dicts.append(d); return d }
    func clear() {
        for l in lists { l.items.removeAll() }
        for d in dicts { d.items.removeAll() }
        lists.removeAll()
        dicts.removeAll()
    }
}

/// A storage named by a persistent id `('storage', torch.XStorage, key, location, numel)`.
public struct TorchStorageRef: Sendable, Equatable {
    public let key: String
    /// The storage type's element, as a safetensors dtype name (`F32`, `BF16`, `I64`, …).
    public let dtype: String
    public let elementSize: Int
    public let numel: Int
}

/// A tensor as `_rebuild_tensor_v2` describes it: a view into a storage.
public struct TorchTensorRef: Sendable, Equatable {
    public let storage: TorchStorageRef
    public let offset: Int
    public let shape: [Int]
    public let stride: [Int]
}

/// A safe unpickler for the `data.pkl` of a `torch.save`d state dict: a small pickle VM (protocols
/// 2–5) that knows only the opcodes a state dict uses and only allow-listed globals, which it treats
/// as names (tensor rebuilders, storage types, `OrderedDict`). Nothing is imported or executed; any
/// other opcode or global is a typed error naming it.
enum SafeUnpickler {
    /// Storage classes → (safetensors dtype, element size).
    static let storageTypes: [String: (String, Int)] = [
        "torch.FloatStorage": ("F32", 4), "torch.HalfStorage": ("F16", 2), "torch.BFloat16Storage": ("BF16", 2),
        "torch.DoubleStorage": ("F64", 8), "torch.LongStorage": ("I64", 8), "torch.IntStorage": ("I32", 4),
        "torch.ShortStorage": ("I16", 2), "torch.CharStorage": ("I8", 1), "torch.ByteStorage": ("U8", 1),
        "torch.BoolStorage": ("BOOL", 1),
    ]
    static let callables: Set<String> = [
        "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
    ]
    static let maxStack = 1_000_000
    /// Deepest tuple nesting accepted (a state dict needs 3).
    static let maxTupleDepth = 64
    static let maxMemo = 10_000_000

    /// Runs the pickle and returns the top-level dict's (name, tensor) pairs in file order.
    static func stateDict(_ data: UnsafeRawBufferPointer, path: String) throws -> [(String, TorchTensorRef)] {
        let arena = PickleArena()
        defer { arena.clear() }
        let result = try run(data, path: path, arena: arena)
        guard case .dict(let d) = result else {
            throw TorchFileError.pickle(path: path, reason: "the pickle holds \(result.kind), not a state dict")
        }
        var out: [(String, TorchTensorRef)] = []
        var seen = Set<String>()
        for (k, v) in d.items {
            guard case .string(let name) = k else { throw TorchFileError.pickle(path: path, reason: "state dict key \(k.kind) is not a string") }
            guard case .tensor(let t) = v else {
                throw TorchFileError.pickle(path: path, reason: "state dict entry '\(name)' is \(v.kind), not a tensor")
            }
            guard seen.insert(name).inserted else { throw TorchFileError.pickle(path: path, reason: "state dict names '\(name)' twice") }
            out.append((name, t))
        }
        return out
    }

    static func run(_ data: UnsafeRawBufferPointer, path: String, arena: PickleArena) throws -> PickleValue {
        func bad(_ reason: String) -> TorchFileError { .pickle(path: path, reason: reason) }
        func tuple(_ items: [PickleValue]) throws -> PickleValue {
            var depth = 1
            for case .tuple(_, let d) in items { depth = max(depth, d + 1) }
            guard depth <= maxTupleDepth else { throw bad("tuples nested deeper than \(maxTupleDepth)") }
            return .tuple(items, depth: depth)
        }
        var stack: [PickleValue] = []
        var marks: [Int] = []
        var memo: [Int: PickleValue] = [:]
        var pos = 0
        let n = data.count

        func need(_ k: Int, _ what: String) throws {
            guard k >= 0, k <= n - pos else { throw bad("truncated: \(what) at byte \(pos) needs \(k) bytes, \(n - pos) left") }
        }
        func uint(_ k: Int) throws -> UInt64 {
            try need(k, "an operand")
            var v: UInt64 = 0
            for i in 0..<k { v |= UInt64(data[pos + i]) << (8 * UInt64(i)) }
            pos += k
            return v
        }
        func length(_ k: Int) throws -> Int {
            let v = try uint(k)
            guard v <= UInt64(n - pos) else { throw bad("length \(v) at byte \(pos - k) runs past the end of the pickle") }
            return Int(v)
        }
        func string(_ k: Int) throws -> String {
            guard let s = String(validating: UnsafeRawBufferPointer(rebasing: data[pos..<(pos + k)]), as: UTF8.self) else {
                throw bad("string at byte \(pos) is not valid UTF-8")
            }
            pos += k
            return s
        }
        func line() throws -> String {
            var e = pos
            while e < n && data[e] != 0x0A { e += 1 }
            guard e < n, e - pos <= 1024 else { throw bad("unterminated GLOBAL name at byte \(pos)") }
            let s = try string(e - pos)
            pos += 1
            return s
        }
        func pop() throws -> PickleValue {
            guard let v = stack.popLast() else { throw bad("stack underflow at byte \(pos)") }
            if let m = marks.last, stack.count < m { throw bad("pop below a MARK at byte \(pos)") }
            return v
        }
        func popMark() throws -> [PickleValue] {
            guard let m = marks.popLast() else { throw bad("no MARK for the opcode at byte \(pos)") }
            let items = Array(stack[m...])
            stack.removeSubrange(m...)
            return items
        }
        func push(_ v: PickleValue) throws {
            guard stack.count < maxStack else { throw bad("stack deeper than \(maxStack)") }
            stack.append(v)
        }
        func global(_ module: String, _ name: String) throws -> PickleValue {
            let full = module + "." + name
            guard storageTypes[full] != nil || callables.contains(full) else {
                throw TorchFileError.forbiddenGlobal(path: path, name: full)
            }
            return .global(full)
        }
        func int(_ v: PickleValue, _ what: String) throws -> Int {
            guard case .int(let i) = v else { throw bad("\(what) is \(v.kind), not an int") }
            return i
        }
        func ints(_ v: PickleValue, _ what: String) throws -> [Int] {
            guard case .tuple(let t, _) = v else { throw bad("\(what) is \(v.kind), not a tuple") }
            return try t.map { try int($0, what) }
        }
        func memoize(_ index: Int) throws {
            guard let top = stack.last else { throw bad("memoize with an empty stack at byte \(pos)") }
            guard memo.count < maxMemo || memo[index] != nil else { throw bad("memo larger than \(maxMemo)") }
            memo[index] = top
        }
        func setItems(_ items: [PickleValue]) throws {
            guard items.count % 2 == 0 else { throw bad("SETITEMS with an odd number of items at byte \(pos)") }
            guard case .dict(let d)? = stack.last else { throw bad("SETITEM(S) on \(stack.last?.kind ?? "an empty stack") at byte \(pos)") }
            for i in stride(from: 0, to: items.count, by: 2) { d.items.append((items[i], items[i + 1])) }
        }
        func append(_ items: [PickleValue]) throws {
            guard case .list(let l)? = stack.last else { throw bad("APPEND(S) on \(stack.last?.kind ?? "an empty stack") at byte \(pos)") }
            l.items.append(contentsOf: items)
        }

        func persistent(_ pid: PickleValue, path: String) throws -> PickleValue {
            guard case .tuple(let t, _) = pid, t.count == 5, case .string("storage") = t[0] else {
                throw bad("persistent id \(pid.kind) is not ('storage', type, key, location, numel)")
            }
            guard case .global(let type) = t[1], let (dtype, size) = storageTypes[type] else {
                throw bad("persistent id names \(t[1].kind), not a storage type")
            }
            guard case .string(let key) = t[2], !key.isEmpty, !key.contains("/"), !key.hasPrefix(".") else {
                throw bad("persistent id has \(t[2].kind) as storage key, not a plain name")
            }
            let numel = try int(t[4], "storage numel")
            guard numel >= 0, numel <= Int.max / size else { throw bad("storage '\(key)' has numel \(numel)") }
            return .storage(TorchStorageRef(key: key, dtype: dtype, elementSize: size, numel: numel))
        }

        func call(_ g: String, _ a: [PickleValue], at: Int, path: String) throws -> PickleValue {
            switch g {
            case "collections.OrderedDict":
                guard a.isEmpty else { throw bad("OrderedDict called with arguments at byte \(at)") }
                return .dict(arena.dict())
            case "torch._utils._rebuild_tensor_v2":
                guard a.count == 6 || a.count == 7, case .storage(let s) = a[0] else {
                    throw bad("_rebuild_tensor_v2 at byte \(at) needs (storage, offset, size, stride, requires_grad, hooks)")
                }
                let offset = try int(a[1], "storage offset"), shape = try ints(a[2], "tensor size"), stride = try ints(a[3], "tensor stride")
                guard offset >= 0, shape.allSatisfy({ $0 >= 0 }), shape.count == stride.count else {
                    throw bad("_rebuild_tensor_v2 at byte \(at) has offset \(offset), size \(shape), stride \(stride)")
                }
                return .tensor(TorchTensorRef(storage: s, offset: offset, shape: shape, stride: stride))
            case "torch._utils._rebuild_parameter":
                guard a.count == 3, case .tensor = a[0] else { throw bad("_rebuild_parameter at byte \(at) needs (tensor, requires_grad, hooks)") }
                return a[0]
            default:
                throw TorchFileError.forbiddenGlobal(path: path, name: g)
            }
        }

        while true {
            guard pos < n else { throw bad("truncated: no STOP opcode") }
            let opAt = pos
            let op = data[pos]
            pos += 1
            switch op {
            case 0x80:  // PROTO
                let v = try uint(1)
                guard (2...5).contains(v) else { throw bad("pickle protocol \(v) is not supported (2–5)") }
            case 0x95:  // FRAME: a length hint only
                _ = try uint(8)
            case 0x7D: try push(.dict(arena.dict()))    // EMPTY_DICT
            case 0x5D: try push(.list(arena.list()))    // EMPTY_LIST
            case 0x29: try push(try tuple([]))          // EMPTY_TUPLE
            case 0x28:  // MARK
                guard marks.count < maxStack else { throw bad("too many MARKs") }
                marks.append(stack.count)
            case 0x74: try push(try tuple(try popMark()))  // TUPLE
            case 0x85: let a = try pop(); try push(try tuple([a]))  // TUPLE1
            case 0x86: let b = try pop(), a = try pop(); try push(try tuple([a, b]))  // TUPLE2
            case 0x87: let c = try pop(), b = try pop(), a = try pop(); try push(try tuple([a, b, c]))  // TUPLE3
            case 0x58: try push(.string(try string(try length(4))))   // BINUNICODE
            case 0x8C: try push(.string(try string(try length(1))))   // SHORT_BINUNICODE
            case 0x8D: try push(.string(try string(try length(8))))   // BINUNICODE8
            case 0x4A: try push(.int(Int(Int32(truncatingIfNeeded: try uint(4)))))  // BININT
            case 0x4B: try push(.int(Int(try uint(1))))  // BININT1
            case 0x4D: try push(.int(Int(try uint(2))))  // BININT2
            case 0x8A:  // LONG1
                let k = try length(1)
                guard k <= 8 else { throw bad("LONG1 of \(k) bytes at byte \(opAt) does not fit in 64 bits") }
                var v = try uint(k)
                if k > 0 && k < 8 && data[pos - 1] & 0x80 != 0 { v |= ~UInt64(0) << (8 * UInt64(k)) }
                try push(.int(Int(Int64(bitPattern: v))))
            case 0x47:  // BINFLOAT (big-endian)
                try need(8, "BINFLOAT")
                var bits: UInt64 = 0
                for i in 0..<8 { bits = bits << 8 | UInt64(data[pos + i]) }
                pos += 8
                try push(.float(Double(bitPattern: bits)))
            case 0x88: try push(.bool(true))    // NEWTRUE
            case 0x89: try push(.bool(false))   // NEWFALSE
            case 0x4E: try push(.none)          // NONE
            case 0x73: let v = try pop(), k = try pop(); try setItems([k, v])  // SETITEM
            case 0x75: try setItems(try popMark())   // SETITEMS
            case 0x61: try append([try pop()])        // APPEND
            case 0x65: try append(try popMark())      // APPENDS
            case 0x71: try memoize(Int(try uint(1)))  // BINPUT
            case 0x72: try memoize(Int(try uint(4)))  // LONG_BINPUT
            case 0x94: try memoize(memo.count)        // MEMOIZE
            case 0x68, 0x6A:  // BINGET, LONG_BINGET
                let i = Int(try uint(op == 0x68 ? 1 : 4))
                guard let v = memo[i] else { throw bad("memo entry \(i) read at byte \(opAt) was never stored") }
                try push(v)
            case 0x63:  // GLOBAL
                let module = try line(), name = try line()
                try push(try global(module, name))
            case 0x93:  // STACK_GLOBAL
                let nameV = try pop(), moduleV = try pop()
                guard case .string(let module) = moduleV, case .string(let name) = nameV else {
                    throw bad("STACK_GLOBAL at byte \(opAt) needs two strings")
                }
                try push(try global(module, name))
            case 0x51:  // BINPERSID
                try push(try persistent(try pop(), path: path))
            case 0x52:  // REDUCE
                let args = try pop(), callable = try pop()
                guard case .global(let g) = callable, callables.contains(g) else {
                    throw bad("REDUCE at byte \(opAt) calls \(callable.kind), which is not callable")
                }
                guard case .tuple(let a, _) = args else { throw bad("REDUCE at byte \(opAt) has \(args.kind) as arguments") }
                try push(try call(g, a, at: opAt, path: path))
            case 0x62:  // BUILD: only the attribute dict OrderedDict state dicts carry (`_metadata`), ignored
                let state = try pop()
                guard let target = stack.last else { throw bad("BUILD with an empty stack at byte \(opAt)") }
                guard case .dict = target else { throw bad("BUILD at byte \(opAt) on \(target.kind)") }
                switch state {
                case .dict, .none, .tuple: break
                default: throw bad("BUILD at byte \(opAt) with state \(state.kind)")
                }
            case 0x30: _ = try pop()             // POP
            case 0x31: _ = try popMark()         // POP_MARK
            case 0x2E:  // STOP
                guard stack.count == 1, marks.isEmpty else { throw bad("STOP with \(stack.count) values on the stack") }
                return stack[0]
            default:
                throw TorchFileError.unsupportedOpcode(path: path, opcode: op, offset: opAt)
            }
        }

    }
}

/// One `torch.save` file (the zip format, PyTorch ≥ 1.6): `<prefix>/data.pkl` read by the safe
/// unpickler, `<prefix>/data/<key>` storages checked against the sizes the pickle declares.
/// Tensors are views into the mapped file (a copy only when misaligned).
public final class TorchCheckpointFile: @unchecked Sendable {
    public let path: String
    public let archive: ZipArchive
    /// Tensor names in file order with their descriptions.
    public let tensors: [(name: String, ref: TorchTensorRef)]
    private let prefix: String

    public var names: [String] { tensors.map(\.name) }

    public init(path: String) throws {
        let archive = try ZipArchive(path: path)
        self.path = path
        self.archive = archive
        guard let pkl = archive.entries.first(where: { $0.name.hasSuffix("/data.pkl") && !$0.name.dropLast(9).contains("/") }) else {
            throw TorchFileError.zip(path: path, reason: "no <prefix>/data.pkl entry (not a torch.save zip checkpoint)")
        }
        prefix = String(pkl.name.dropLast("data.pkl".count))
        if let bo = archive.entry(prefix + "byteorder") {
            let s = String(decoding: archive.bytes(of: bo), as: UTF8.self)
            guard s == "little" else { throw TorchFileError.zip(path: path, reason: "byteorder is '\(s)', only little-endian is supported") }
        }
        tensors = try SafeUnpickler.stateDict(archive.bytes(of: pkl), path: path).map { (name: $0.0, ref: $0.1) }
        // Every storage: one declaration, an entry of exactly numel × element size bytes.
        var declared: [String: TorchStorageRef] = [:]
        for (name, t) in tensors {
            let s = t.storage
            if let d = declared[s.key], d != s {
                throw TorchFileError.tensor(path: path, name: name, reason: "storage '\(s.key)' is declared as \(s.numel) × \(s.dtype) and as \(d.numel) × \(d.dtype)")
            }
            declared[s.key] = s
            guard let e = archive.entry(prefix + "data/" + s.key) else {
                throw TorchFileError.tensor(path: path, name: name, reason: "storage '\(s.key)' has no zip entry \(prefix)data/\(s.key)")
            }
            guard e.range.count == s.numel * s.elementSize else {
                throw TorchFileError.tensor(path: path, name: name, reason: "storage '\(s.key)' declares \(s.numel) × \(s.dtype) = \(s.numel * s.elementSize) bytes but its zip entry holds \(e.range.count)")
            }
            var count = 1
            for d in t.shape {
                let (m, o) = count.multipliedReportingOverflow(by: d)
                guard !o else { throw TorchFileError.tensor(path: path, name: name, reason: "shape \(t.shape) overflows") }
                count = m
            }
            // Contiguous (row-major) only: dims of size 1 may carry any stride.
            var expect = 1
            for i in stride(from: t.shape.count - 1, through: 0, by: -1) {
                if t.shape[i] != 1 && t.stride[i] != expect {
                    throw TorchFileError.tensor(path: path, name: name, reason: "strides \(t.stride) for shape \(t.shape) are not contiguous (only contiguous tensors are supported)")
                }
                expect *= t.shape[i]
            }
            guard count == 0 || (t.offset <= s.numel && count <= s.numel - t.offset) else {
                throw TorchFileError.tensor(path: path, name: name, reason: "offset \(t.offset) + \(count) elements run past storage '\(s.key)' of \(s.numel)")
            }
        }
    }

    public func ref(_ name: String) -> TorchTensorRef? { tensors.first { $0.name == name }?.ref }

    /// The tensor (F32, F16 or BF16) as a view into the mapped file.
    public func tensor(_ ref: TorchTensorRef, name: String) throws -> Tensor {
        guard let dtype = DType(rawValue: ref.storage.dtype) else { throw CheckpointError.unsupportedDType(name: name, dtype: ref.storage.dtype) }
        guard let e = archive.entry(prefix + "data/" + ref.storage.key) else { throw CheckpointError.missingTensor(name) }
        let count = ref.shape.reduce(1, *)
        let bytes = count * dtype.size
        guard let base = archive.file.base, bytes > 0 else { return Tensor(zeros: ref.shape, dtype: dtype) }
        let start = base + e.range.lowerBound + ref.offset * dtype.size
        if Int(bitPattern: start) % dtype.size != 0 {
            let t = Tensor(zeros: ref.shape, dtype: dtype)
            t.raw.copyMemory(from: start, byteCount: bytes)
            return t
        }
        return Tensor(storage: TensorStorage(borrowing: start, byteCount: bytes, owner: archive.file), shape: ref.shape, dtype: dtype)
    }
}
