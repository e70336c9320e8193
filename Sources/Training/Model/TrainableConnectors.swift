import Foundation
import Models
import Tensor

/// A trainable LLaVA projector (`linear` or `mlp{N}x_gelu`): Linears with exact GELU between.
final class ProjectorOp {
    let linears: [LinearOp]
    private var gelus: [GELUOp] = []

    /// Takes the Linears under `prefix` (`PREFIX.{weight,bias}` or `PREFIX.{0,2,…}.{weight,bias}`).
    init(type: String, prefix: String, params: ParameterSet) throws {
        guard let depth = Projector.depth(type) else { throw TrainingError.unsupportedModel("projector type '\(type)'") }
        let names = type == "linear" ? [prefix] : (0..<depth).map { "\(prefix).\(2 * $0)" }
        linears = try names.map { n in
            guard let w = params[n + ".weight"], let b = params[n + ".bias"] else {
                throw TrainingError.badCheckpoint(path: n, reason: "projector tensors \(n).weight / .bias missing")
            }
            return LinearOp(weight: w, bias: b)
        }
        gelus = (1..<max(linears.count, 1)).map { _ in GELUOp() }
    }

    var outputWidth: Int { linears.last?.outFeatures ?? 0 }

    func forward(_ x: Tensor) -> Tensor {
        var h = linears[0].forward(x)
        for i in 1..<linears.count { h = linears[i].forward(gelus[i - 1].forward(h)) }
        return h
    }

    /// Gradients of the last Linear's output back to the first Linear's output (shared by both backward forms).
    private func backToFirst(_ dy: Tensor) -> Tensor {
        var g = dy
        for i in stride(from: linears.count - 1, to: 0, by: -1) { g = gelus[i - 1].backward(linears[i].backward(g)) }
        return g
    }

    /// dOut → d input (the speech connector's decoder output feeds it).
    func backward(_ dy: Tensor) -> Tensor { linears[0].backward(backToFirst(dy)) }

    /// Parameter gradients only: the input is a frozen encoder's output.
    func accumulateGradients(_ dy: Tensor) { linears[0].accumulateGradients(backToFirst(dy)) }

    func release() { for l in linears { l.release() }; for g in gelus { g.release() } }
}

/// Uni-MoE's trainable speech connector: transformers' `WhisperDecoder` run on the learnable query
/// tokens (plus its positional embedding) with causal self-attention and cross-attention to each
/// 30 s window's encoder states, final LayerNorm, then the projector to the trunk's width.
final class SpeechConnectorOp {
    let queries: Parameter      // [1, Q, D]
    let positions: Parameter    // [maxTarget, D]
    let layers: [Layer]
    let finalNorm: LayerNormOp
    let projector: ProjectorOp
    private var windows = 0
    private var encoderRows = 0

    final class Layer {
        let selfNorm, crossNorm, ffnNorm: LayerNormOp
        let sq, sk, sv, so, cq, ck, cv, co: LinearOp
        let selfAttention, crossAttention: AttentionOp
        let fc1, fc2: LinearOp
        let act = GELUOp()
        init(selfNorm: LayerNormOp, crossNorm: LayerNormOp, ffnNorm: LayerNormOp, sq: LinearOp, sk: LinearOp, sv: LinearOp,
             so: LinearOp, cq: LinearOp, ck: LinearOp, cv: LinearOp, co: LinearOp, selfAttention: AttentionOp,
             crossAttention: AttentionOp, fc1: LinearOp, fc2: LinearOp) {
            self.selfNorm = selfNorm; self.crossNorm = crossNorm; self.ffnNorm = ffnNorm
            self.sq = sq; self.sk = sk; self.sv = sv; self.so = so; self.cq = cq; self.ck = ck; self.cv = cv; self.co = co
            self.selfAttention = selfAttention; self.crossAttention = crossAttention; self.fc1 = fc1; self.fc2 = fc2
        }
        var ops: [LinearOp] { [sq, sk, sv, so, cq, ck, cv, co, fc1, fc2] }
    }

    var queryCount: Int { queries.shape[1] }
    var width: Int { queries.shape[2] }

    init(params: ParameterSet, heads: Int, eps: Float, projectorType: String) throws {
        let pre = "model.mm_audio_aligner.decoder.audio_decoder."
        func p(_ n: String) throws -> Parameter {
            guard let t = params[pre + n] else { throw TrainingError.badCheckpoint(path: pre + n, reason: "speech connector tensor missing") }
            return t
        }
        guard let q = params["model.query_tokens"], q.shape.count == 3, q.shape[0] == 1 else {
            throw TrainingError.badCheckpoint(path: "model.query_tokens", reason: "missing or not [1, Q, D]")
        }
        queries = q
        positions = try p("embed_positions.weight")
        let d = q.shape[2]
        guard d % heads == 0 else { throw TrainingError.unsupportedModel("speech connector width \(d) is not a multiple of \(heads) heads") }
        var built: [Layer] = []
        var i = 0
        while params[pre + "layers.\(i).fc1.weight"] != nil {
            let l = "layers.\(i)."
            func lin(_ n: String, bias: Bool = true) throws -> LinearOp { LinearOp(weight: try p(l + n + ".weight"), bias: bias ? try p(l + n + ".bias") : nil) }
            func ln(_ n: String) throws -> LayerNormOp { LayerNormOp(weight: try p(l + n + ".weight"), bias: try p(l + n + ".bias"), eps: eps) }
            built.append(Layer(selfNorm: try ln("self_attn_layer_norm"), crossNorm: try ln("encoder_attn_layer_norm"),
                               ffnNorm: try ln("final_layer_norm"),
                               sq: try lin("self_attn.q_proj"), sk: try lin("self_attn.k_proj", bias: false), sv: try lin("self_attn.v_proj"),
                               so: try lin("self_attn.out_proj"),
                               cq: try lin("encoder_attn.q_proj"), ck: try lin("encoder_attn.k_proj", bias: false),
                               cv: try lin("encoder_attn.v_proj"), co: try lin("encoder_attn.out_proj"),
                               selfAttention: AttentionOp(heads: heads, kvHeads: heads, headDim: d / heads, causal: true),
                               crossAttention: AttentionOp(heads: heads, kvHeads: heads, headDim: d / heads, causal: false),
                               fc1: try lin("fc1"), fc2: try lin("fc2")))
            i += 1
        }
        layers = built
        finalNorm = LayerNormOp(weight: try p("layer_norm.weight"), bias: try p("layer_norm.bias"), eps: eps)
        projector = try ProjectorOp(type: projectorType, prefix: "model.mm_audio_aligner.projector", params: params)
    }

    /// Encoder states `[n, P, D]` → `[n·Q, hidden]`, window after window.
    func forward(encoderStates: Tensor) throws -> Tensor {
        guard encoderStates.rank == 3, encoderStates.shape[2] == width else {
            throw TrainingError.invalidSetting("speech connector: encoder states \(encoderStates.shape), width \(width) expected")
        }
        let n = encoderStates.shape[0], pLen = encoderStates.shape[1], qn = queryCount, d = width
        windows = n
        let enc = try encoderStates.reshaped([n * pLen, d])
        encoderRows = n * pLen
        let start = Vec.sum(try queries.value.reshaped([qn, d]), try positions.value.rows(0..<qn).reshaped([qn, d]))
        var x = Tensor(zeros: [n * qn, d])
        for w in 0..<n { for i in 0..<qn { Vec.copyRow(x, w * qn + i, from: start, i, width: d) } }
        let selfSpans = (0..<n).map { AttentionSpan(queryStart: $0 * qn, queryCount: qn, keyStart: $0 * qn, keyCount: qn) }
        let crossSpans = (0..<n).map { AttentionSpan(queryStart: $0 * qn, queryCount: qn, keyStart: $0 * pLen, keyCount: pLen) }
        for l in layers {
            let a = l.selfNorm.forward(x)
            let sa = l.so.forward(l.selfAttention.forward(q: l.sq.forward(a), k: l.sk.forward(a), v: l.sv.forward(a), spans: selfSpans))
            let x1 = Vec.sum(x, sa)
            let b = l.crossNorm.forward(x1)
            let ca = l.co.forward(l.crossAttention.forward(q: l.cq.forward(b), k: l.ck.forward(enc), v: l.cv.forward(enc), spans: crossSpans))
            let x2 = Vec.sum(x1, ca)
            let f = l.fc2.forward(l.act.forward(l.fc1.forward(l.ffnNorm.forward(x2))))
            x = Vec.sum(x2, f)
        }
        return projector.forward(finalNorm.forward(x))
    }

    /// dOut `[n·Q, hidden]` → gradients into every trainable tensor; with `encoderGrad`, also
    /// returns d encoder states `[n·P, D]` (when the audio tower trains too).
    @discardableResult
    func backward(_ dOut: Tensor, encoderGrad: Bool = false) -> Tensor? {
        let qn = queryCount, d = width
        let dEnc: Tensor? = encoderGrad ? Tensor(zeros: [encoderRows, d]) : nil
        var dx = finalNorm.backward(projector.backward(dOut))
        for l in layers.reversed() {
            let dff = l.ffnNorm.backward(l.fc1.backward(l.act.backward(l.fc2.backward(dx))))
            Vec.add(dff, dx)          // d x2
            let (dcq, dck, dcv) = l.crossAttention.backward(l.co.backward(dff))
            // Keys/values come from the encoder: their input gradient only when the tower trains.
            if let dEnc {
                Vec.add(dEnc, l.ck.backward(dck))
                Vec.add(dEnc, l.cv.backward(dcv))
            } else {
                l.ck.accumulateGradients(dck)
                l.cv.accumulateGradients(dcv)
            }
            let db = l.crossNorm.backward(l.cq.backward(dcq))
            Vec.add(db, dff)          // d x1
            let (dsq, dsk, dsv) = l.selfAttention.backward(l.so.backward(db))
            let da = l.sq.backward(dsq)
            Vec.add(da, l.sk.backward(dsk))
            Vec.add(da, l.sv.backward(dsv))
            let dIn = l.selfNorm.backward(da)
            Vec.add(dIn, db)
            dx = dIn
        }
        for w in 0..<windows {
            for i in 0..<qn {
                if queries.trainable { Vec.addRow(queries.grad, i, dx, w * qn + i, width: d) }
                if positions.trainable { Vec.addRow(positions.grad, i, dx, w * qn + i, width: d) }
            }
        }
        release()
        return dEnc
    }

    func release() {
        projector.release(); finalNorm.release()
        for l in layers {
            for o in l.ops { o.release() }
            l.selfNorm.release(); l.crossNorm.release(); l.ffnNorm.release()
            l.selfAttention.release(); l.crossAttention.release(); l.act.release()
        }
    }
}
