import CFFmpeg

/// How a frame must be turned to be shown upright, read from a display matrix the way the ffmpeg
/// program (and ffplay) do: quarter turns clockwise, then an optional horizontal / vertical flip.
struct Orientation: Equatable, Sendable {
    var clockwiseQuarterTurns = 0
    var hflip = false
    var vflip = false

    static let upright = Orientation()

    /// From a 3×3 display matrix (16.16 fixed point); angles that are not multiples of 90° are ignored.
    init(displayMatrix m: UnsafePointer<Int32>?) {
        guard let m else { return }
        var theta = -av_display_rotation_get(m).rounded()
        theta -= 360 * (theta / 360 + 0.9 / 360).rounded(.down)
        if abs(theta - 90) < 1 {
            clockwiseQuarterTurns = 1
            if m[3] > 0 { hflip = true }          // transpose=cclock_flip == clock, then hflip
        } else if abs(theta - 180) < 1 {
            hflip = m[0] < 0
            vflip = m[4] < 0
            if !hflip && !vflip { hflip = true; vflip = true }
        } else if abs(theta - 270) < 1 {
            clockwiseQuarterTurns = 3
            if m[3] < 0 { hflip = true }          // transpose=clock_flip == cclock, then hflip
        } else if abs(theta) <= 1 {
            vflip = m[4] < 0
        }
    }

    init() {}

    var swapsAxes: Bool { clockwiseQuarterTurns % 2 == 1 }
    var isIdentity: Bool { clockwiseQuarterTurns == 0 && !hflip && !vflip }
}

/// Turns decoded frames of any pixel format into upright RGB24 at a requested size: planes are
/// rotated first (as the ffmpeg program's transpose/hflip/vflip filters do), then one swscale pass
/// converts and scales with the same flags and colour-space setup as the `scale` filter. Owns the
/// SwsContext (freed in deinit).
final class FrameConverter {
    let file: String
    let flags: Int32
    private var sws: OpaquePointer?
    private var key: [Int32] = []
    /// Keeps the last rotated frame alive until the next conversion.
    private var rotated: Frame?

    init(file: String, flags: Int32 = SWS_BILINEAR) {
        self.file = file
        self.flags = flags
    }

    deinit { sws_freeContext(sws) }

    /// Upright size of a frame of `w`×`h` under `orientation`.
    static func uprightSize(width w: Int, height h: Int, _ o: Orientation) -> (Int, Int) {
        o.swapsAxes ? (h, w) : (w, h)
    }

    /// `frame` upright, scaled to `width`×`height` (nil: its own upright size).
    func convert(_ frame: Frame, orientation: Orientation, width: Int?, height: Int?) throws -> RGBImage {
        try convert(frame.pointer, orientation: orientation, width: width, height: height)
    }

    private func convert(_ frame: UnsafeMutablePointer<AVFrame>, orientation: Orientation, width: Int?, height: Int?) throws -> RGBImage {
        var src = frame
        if !orientation.isIdentity {
            src = try rotate(frame, orientation)
        }
        let sw = src.pointee.width, sh = src.pointee.height
        let dw = Int32(width ?? Int(sw)), dh = Int32(height ?? Int(sh))
        guard sw > 0, sh > 0, dw > 0, dh > 0 else { throw MediaError.invalidData(file: file, reason: "frame of size \(sw)x\(sh)") }
        let k = [sw, sh, src.pointee.format, dw, dh, Int32(src.pointee.colorspace.rawValue), Int32(src.pointee.color_range.rawValue)]
        if key != k {
            sws_freeContext(sws)
            sws = sws_getContext(sw, sh, AVPixelFormat(src.pointee.format), dw, dh, AV_PIX_FMT_RGB24, flags, nil, nil, nil)
            guard sws != nil else {
                key = []
                let fmt = av_get_pix_fmt_name(AVPixelFormat(src.pointee.format)).map { String(cString: $0) } ?? "unknown"
                throw MediaError.invalidData(file: file, reason: "cannot convert pixel format \(fmt) \(sw)x\(sh) to RGB")
            }
            setColorspace(src)
            key = k
        }
        // swscale's SIMD writers may store a few bytes past the last pixel, so it writes into a padded
        // AVFrame buffer (as inside libavfilter) and the rows are copied out.
        let dst = try Frame(file: file)
        dst.pointer.pointee.format = AV_PIX_FMT_RGB24.rawValue
        dst.pointer.pointee.width = dw
        dst.pointer.pointee.height = dh
        try check(av_frame_get_buffer(dst.pointer, 0), "av_frame_get_buffer", file: file)
        let rows = withUnsafePointer(to: &src.pointee.data) { dataTuple in
            withUnsafePointer(to: &src.pointee.linesize) { lineTuple in
                dataTuple.withMemoryRebound(to: UnsafePointer<UInt8>?.self, capacity: 8) { data in
                    lineTuple.withMemoryRebound(to: Int32.self, capacity: 8) { lines in
                        withUnsafeMutablePointer(to: &dst.pointer.pointee.data) { dstData in
                            withUnsafeMutablePointer(to: &dst.pointer.pointee.linesize) { dstLines in
                                dstData.withMemoryRebound(to: UnsafeMutablePointer<UInt8>?.self, capacity: 8) { dd in
                                    dstLines.withMemoryRebound(to: Int32.self, capacity: 8) { dl in
                                        sws_scale(sws, data, lines, 0, sh, dd, dl)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        try check(rows, "sws_scale", file: file)
        let rowBytes = Int(dw) * 3, stride = Int(dst.pointer.pointee.linesize.0)
        guard let base = dst.pointer.pointee.data.0 else { throw MediaError.invalidData(file: file, reason: "no output buffer") }
        let pixels = [UInt8](unsafeUninitializedCapacity: rowBytes * Int(dh)) { buf, n in
            for y in 0..<Int(dh) { (buf.baseAddress! + y * rowBytes).update(from: base + y * stride, count: rowBytes) }
            n = rowBytes * Int(dh)
        }
        return RGBImage(uncheckedWidth: Int(dw), height: Int(dh), pixels: pixels)
    }

    /// The colour matrix and ranges libavfilter's scale filter sets (FFmpeg 5.1, in_color_matrix=auto):
    /// the frame's own matrix for input and output, the frame's range when it has one.
    private func setColorspace(_ f: UnsafeMutablePointer<AVFrame>) {
        var invTable: UnsafeMutablePointer<Int32>? = nil, table: UnsafeMutablePointer<Int32>? = nil
        var srcFull: Int32 = 0, dstFull: Int32 = 0, brightness: Int32 = 0, contrast: Int32 = 0, saturation: Int32 = 0
        guard sws_getColorspaceDetails(sws, &invTable, &srcFull, &table, &dstFull, &brightness, &contrast, &saturation) >= 0 else { return }
        guard let coefficients = sws_getCoefficients(Int32(f.pointee.colorspace.rawValue)) else { return }
        if f.pointee.color_range != AVCOL_RANGE_UNSPECIFIED { srcFull = f.pointee.color_range == AVCOL_RANGE_JPEG ? 1 : 0 }
        _ = sws_setColorspaceDetails(sws, coefficients, srcFull, coefficients, dstFull, brightness, contrast, saturation)
    }

    /// A rotated / flipped copy of `f`, plane by plane, in the same pixel format when that format is
    /// planar-compatible (equal horizontal and vertical chroma subsampling, byte-aligned pixels).
    private func rotate(_ f: UnsafeMutablePointer<AVFrame>, _ o: Orientation) throws -> UnsafeMutablePointer<AVFrame> {
        let fmt = AVPixelFormat(f.pointee.format)
        guard let desc = av_pix_fmt_desc_get(fmt) else { throw MediaError.invalidData(file: file, reason: "unknown pixel format") }
        let flagsOK = (desc.pointee.flags & UInt64(AV_PIX_FMT_FLAG_BITSTREAM | AV_PIX_FMT_FLAG_HWACCEL | AV_PIX_FMT_FLAG_PAL)) == 0
        if !flagsOK || desc.pointee.log2_chroma_w != desc.pointee.log2_chroma_h {
            // Convert to RGB24 at full size first, then rotate that (as the ffmpeg program's auto-inserted scaler does).
            let plain = try FrameConverter(file: file, flags: flags).convert(f, orientation: .upright, width: nil, height: nil)
            let tmp = try Frame(file: file)
            try fill(tmp, from: plain)
            rgbSource = tmp
            return try rotate(tmp.pointer, o)
        }
        let w = Int(f.pointee.width), h = Int(f.pointee.height)
        let (ow, oh) = FrameConverter.uprightSize(width: w, height: h, o)
        let out = try Frame(file: file)
        out.pointer.pointee.format = f.pointee.format
        out.pointer.pointee.width = Int32(ow)
        out.pointer.pointee.height = Int32(oh)
        out.pointer.pointee.colorspace = f.pointee.colorspace
        out.pointer.pointee.color_range = f.pointee.color_range
        try check(av_frame_get_buffer(out.pointer, 0), "av_frame_get_buffer", file: file)
        var steps = [Int32](repeating: 0, count: 4)
        steps.withUnsafeMutableBufferPointer { b in
            av_image_fill_max_pixsteps(b.baseAddress, nil, desc)
        }
        let planes = Int(av_pix_fmt_count_planes(fmt))
        for p in 0..<planes {
            let chroma = (p == 1 || p == 2)
            let sx = chroma ? Int(desc.pointee.log2_chroma_w) : 0
            let sy = chroma ? Int(desc.pointee.log2_chroma_h) : 0
            let pw = -((-w) >> sx), ph = -((-h) >> sy)        // AV_CEIL_RSHIFT
            let step = Int(steps[p])
            let srcBase = planePointer(f, p), srcStride = Int(planeStride(f, p))
            let dstBase = planePointer(out.pointer, p), dstStride = Int(planeStride(out.pointer, p))
            guard let srcBase, let dstBase else { continue }
            let opw = o.swapsAxes ? ph : pw, oph = o.swapsAxes ? pw : ph
            for y in 0..<oph {
                let dstRow = dstBase + y * dstStride
                for x in 0..<opw {
                    // Output (x, y) after the flips comes from upright (ux, uy); map back through the turn.
                    let ux = o.hflip ? opw - 1 - x : x
                    let uy = o.vflip ? oph - 1 - y : y
                    let sxp: Int, syp: Int
                    switch o.clockwiseQuarterTurns {
                    case 1: sxp = uy; syp = ph - 1 - ux
                    case 2: sxp = pw - 1 - ux; syp = ph - 1 - uy
                    case 3: sxp = pw - 1 - uy; syp = ux
                    default: sxp = ux; syp = uy
                    }
                    let s = srcBase + syp * srcStride + sxp * step
                    let d = dstRow + x * step
                    for b in 0..<step { d[b] = s[b] }
                }
            }
        }
        rotated = out
        return out.pointer
    }

    /// Keeps the RGB copy of a frame whose format could not be rotated directly alive while it is used.
    private var rgbSource: Frame?

    private func fill(_ frame: Frame, from image: RGBImage) throws {
        frame.pointer.pointee.format = AV_PIX_FMT_RGB24.rawValue
        frame.pointer.pointee.width = Int32(image.width)
        frame.pointer.pointee.height = Int32(image.height)
        try check(av_frame_get_buffer(frame.pointer, 0), "av_frame_get_buffer", file: file)
        let stride = Int(frame.pointer.pointee.linesize.0)
        guard let base = frame.pointer.pointee.data.0 else { return }
        image.pixels.withUnsafeBufferPointer { src in
            for y in 0..<image.height {
                (base + y * stride).update(from: src.baseAddress! + y * image.width * 3, count: image.width * 3)
            }
        }
    }
}

private func planePointer(_ f: UnsafeMutablePointer<AVFrame>, _ p: Int) -> UnsafeMutablePointer<UInt8>? {
    switch p {
    case 0: return f.pointee.data.0
    case 1: return f.pointee.data.1
    case 2: return f.pointee.data.2
    default: return f.pointee.data.3
    }
}

private func planeStride(_ f: UnsafeMutablePointer<AVFrame>, _ p: Int) -> Int32 {
    switch p {
    case 0: return f.pointee.linesize.0
    case 1: return f.pointee.linesize.1
    case 2: return f.pointee.linesize.2
    default: return f.pointee.linesize.3
    }
}
