import Foundation
import Tensor

/// EXPERT_FORWARD carries one expert worker's whole share of a MoE layer: one `[n, hidden]` tensor
/// per expert, so a worker serving two of the layer's chosen experts gets one message, computes
/// both in one pass over its threads and sends one reply. With one expert the index is the header's
/// `expert` field; with several, the payload is the JSON list of indices, tensor by tensor.
extension Message {
    public static func expertForward(layer: Int, experts: [Int], rows: [Tensor]) throws -> Message {
        precondition(experts.count == rows.count && !experts.isEmpty, "one rows tensor per expert")
        var m = Message(.expertForward, layer: Int32(layer), expert: Int32(experts[0]), tensors: rows)
        if experts.count > 1 { m.payload = try JSONEncoder().encode(experts) }
        return m
    }

    /// The expert of each tensor of an EXPERT_FORWARD (checked: one per tensor, no repeats, none
    /// negative); `malformed` otherwise.
    public func expertIndices() throws -> [Int] {
        let experts: [Int]
        if payload == nil {
            guard tensors.count == 1 else {
                throw WireError.malformed("\(kind) with \(tensors.count) tensors needs the list of their experts as its payload")
            }
            experts = [Int(expert)]
        } else {
            experts = try decodePayload([Int].self)
        }
        guard experts.count == tensors.count else {
            throw WireError.malformed("\(kind) names \(experts.count) experts for \(tensors.count) tensors")
        }
        guard experts.allSatisfy({ $0 >= 0 }), Set(experts).count == experts.count else {
            throw WireError.malformed("\(kind) names experts \(experts): each must appear once and be ≥ 0")
        }
        return experts
    }
}
