/// Bicubic resizing exactly as Pillow's `Image.resize(size, Image.BICUBIC)` does it for 8-bit RGB
/// (libImaging/Resample.c): a separable filter with a = −0.5 whose support widens with the downscale
/// factor (antialiasing), coefficients rounded to 22-bit fixed point, a horizontal pass rounded to
/// 8 bits, then a vertical pass. Matching it bit for bit is what lets our CLIP inputs equal the
/// `CLIPImageProcessor(Pil)` reference that Uni-MoE was trained with.
enum PillowResample {
    private static let precisionBits = 32 - 8 - 2

    private static func bicubic(_ x0: Double) -> Double {
        let a = -0.5
        let x = abs(x0)
        if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
        if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
        return 0
    }

    /// Per output pixel: first input index, tap count, and fixed-point taps (`ksize` per pixel).
    private static func coefficients(inSize: Int, outSize: Int) -> (bounds: [(Int, Int)], taps: [Int32], ksize: Int) {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = max(scale, 1)
        let support = 2.0 * filterScale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        var bounds: [(Int, Int)] = []
        bounds.reserveCapacity(outSize)
        var taps = [Int32](repeating: 0, count: outSize * ksize)
        var k = [Double](repeating: 0, count: ksize)
        for xx in 0..<outSize {
            let center = (Double(xx) + 0.5) * scale
            let ss = 1.0 / filterScale
            var xmin = Int(center - support + 0.5)      // C cast: truncates toward zero
            if xmin < 0 { xmin = 0 }
            var xmax = Int(center + support + 0.5)
            if xmax > inSize { xmax = inSize }
            xmax -= xmin
            var ww = 0.0
            for x in 0..<max(xmax, 0) {
                let w = bicubic((Double(x + xmin) - center + 0.5) * ss)
                k[x] = w
                ww += w
            }
            for x in 0..<max(xmax, 0) {
                let v = ww != 0 ? k[x] / ww : k[x]
                let fixed = v * Double(1 << precisionBits)
                taps[xx * ksize + x] = Int32(v < 0 ? Int(-0.5 + fixed) : Int(0.5 + fixed))
            }
            bounds.append((xmin, max(xmax, 0)))
        }
        return (bounds, taps, ksize)
    }

    @inline(__always) private static func clip8(_ v: Int32) -> UInt8 {
        let s = v >> Int32(precisionBits)
        return s < 0 ? 0 : (s > 255 ? 255 : UInt8(s))
    }

    /// `image` resized to `width`×`height`.
    static func resize(_ image: RGBImage, width: Int, height: Int) -> RGBImage {
        if width == image.width && height == image.height { return image }
        let horiz = coefficients(inSize: image.width, outSize: width)
        let vert = coefficients(inSize: image.height, outSize: height)
        let needH = width != image.width, needV = height != image.height
        let half: Int32 = 1 << Int32(precisionBits - 1)

        // Horizontal pass over the rows the vertical pass will read.
        var src = image.pixels
        var srcW = image.width, srcH = image.height
        var vBounds = vert.bounds
        if needH {
            let first = vert.bounds[0].0
            let last = vert.bounds[height - 1].0 + vert.bounds[height - 1].1
            let rows = needV ? last - first : srcH
            let rowOffset = needV ? first : 0
            if needV { vBounds = vBounds.map { ($0.0 - first, $0.1) } }
            var tmp = [UInt8](repeating: 0, count: width * rows * 3)
            src.withUnsafeBufferPointer { s in
                horiz.taps.withUnsafeBufferPointer { kk in
                    tmp.withUnsafeMutableBufferPointer { d in
                        for y in 0..<rows {
                            let inRow = (y + rowOffset) * srcW * 3
                            for xx in 0..<width {
                                let (xmin, n) = horiz.bounds[xx]
                                let k = xx * horiz.ksize
                                var r = half, g = half, b = half
                                for x in 0..<n {
                                    let p = inRow + (x + xmin) * 3
                                    let w = kk[k + x]
                                    r &+= Int32(s[p]) &* w
                                    g &+= Int32(s[p + 1]) &* w
                                    b &+= Int32(s[p + 2]) &* w
                                }
                                let o = (y * width + xx) * 3
                                d[o] = clip8(r); d[o + 1] = clip8(g); d[o + 2] = clip8(b)
                            }
                        }
                    }
                }
            }
            src = tmp
            srcW = width
            srcH = rows
        }
        guard needV else { return RGBImage(uncheckedWidth: srcW, height: srcH, pixels: src) }
        var out = [UInt8](repeating: 0, count: width * height * 3)
        src.withUnsafeBufferPointer { s in
            vert.taps.withUnsafeBufferPointer { kk in
                out.withUnsafeMutableBufferPointer { d in
                    for yy in 0..<height {
                        let (ymin, n) = vBounds[yy]
                        let k = yy * vert.ksize
                        for xx in 0..<srcW {
                            var r = half, g = half, b = half
                            for y in 0..<n {
                                let p = ((y + ymin) * srcW + xx) * 3
                                let w = kk[k + y]
                                r &+= Int32(s[p]) &* w
                                g &+= Int32(s[p + 1]) &* w
                                b &+= Int32(s[p + 2]) &* w
                            }
                            let o = (yy * srcW + xx) * 3
                            d[o] = clip8(r); d[o + 1] = clip8(g); d[o + 2] = clip8(b)
                        }
                    }
                }
            }
        }
        return RGBImage(uncheckedWidth: srcW, height: height, pixels: out)
    }
}
