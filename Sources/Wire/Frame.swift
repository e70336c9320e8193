import CZeroMQ
import Foundation
import Tensor

/// One frame to send: small owned bytes, or a tensor's storage handed to ZeroMQ without a copy
/// (the storage is retained until ZeroMQ's I/O thread is done with it).
public enum OutFrame {
    case bytes([UInt8])
    case tensor(Tensor)

    func initMessage(_ msg: UnsafeMutablePointer<zmq_msg_t>) throws {
        switch self {
        case .bytes(let b):
            try check(zmq_msg_init_size(msg, b.count), "zmq_msg_init_size")
            if !b.isEmpty {
                b.withUnsafeBytes { src in zmq_msg_data(msg).copyMemory(from: src.baseAddress!, byteCount: b.count) }
            }
        case .tensor(let t):
            let n = t.byteCount
            if n < 64 {
                // Tiny frames are copied anyway by ZeroMQ; skip the retain/free dance.
                try check(zmq_msg_init_size(msg, n), "zmq_msg_init_size")
                if n > 0 { zmq_msg_data(msg).copyMemory(from: t.raw, byteCount: n) }
                return
            }
            let hint = Unmanaged.passRetained(t.storage).toOpaque()
            let rc = zmq_msg_init_data(msg, t.raw, n, { _, hint in
                if let hint { Unmanaged<TensorStorage>.fromOpaque(hint).release() }
            }, hint)
            if rc == -1 {
                Unmanaged<TensorStorage>.fromOpaque(hint).release()
                try check(-1, "zmq_msg_init_data")
            }
        }
    }
}

/// One received frame, owning its `zmq_msg_t` until the last reference (including tensors that
/// borrow its bytes) goes away.
///
/// `@unchecked Sendable`: after `zmq_msg_recv` returns the bytes are never written again.
public final class InFrame: @unchecked Sendable {
    let msg: UnsafeMutablePointer<zmq_msg_t>

    init() {
        msg = .allocate(capacity: 1)
        zmq_msg_init(msg)
    }

    deinit {
        zmq_msg_close(msg)
        msg.deallocate()
    }

    public var count: Int { zmq_msg_size(msg) }

    public var pointer: UnsafeRawPointer { UnsafeRawPointer(zmq_msg_data(msg)) }

    public var bytes: [UInt8] {
        let n = count
        if n == 0 { return [] }
        return [UInt8](UnsafeRawBufferPointer(start: pointer, count: n))
    }

    public var data: Data { count == 0 ? Data() : Data(bytes: pointer, count: count) }

    /// The frame's bytes seen as a tensor: borrowed in place when suitably aligned, else copied.
    func tensor(shape: [Int], dtype: DType) -> Tensor {
        let n = count
        let p = zmq_msg_data(msg)!
        if n > 0 && Int(bitPattern: p) % 16 == 0 {
            return Tensor(storage: TensorStorage(borrowing: p, byteCount: n, owner: self), shape: shape, dtype: dtype)
        }
        let t = Tensor(zeros: shape, dtype: dtype)
        if n > 0 { t.raw.copyMemory(from: p, byteCount: n) }
        return t
    }
}
