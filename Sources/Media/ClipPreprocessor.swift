import Tensor

/// Turns an RGB image into the normalised `[3, crop, crop]` tensor a CLIP vision tower expects, as
/// transformers' `CLIPImageProcessor` (PIL backend) does: resize the shortest side to `size` with
/// Pillow's bicubic filter, centre-crop `cropSize`², scale by 1/255, normalise with `mean`/`std`.
/// With `padToSquare` the image is first pasted centred on a square of the mean colour (Uni-MoE's
/// `expand2square`, image_aspect_ratio "pad").
public struct ClipPreprocessor: Sendable {
    public let size: Int
    public let cropSize: Int
    public let mean: [Float]
    public let std: [Float]
    public let padToSquare: Bool

    /// OpenAI CLIP's normalisation constants.
    public static let clipMean: [Float] = [0.48145466, 0.4578275, 0.40821073]
    public static let clipStd: [Float] = [0.26862954, 0.26130258, 0.27577711]

    public init(size: Int = 336, cropSize: Int = 336, mean: [Float] = ClipPreprocessor.clipMean,
                std: [Float] = ClipPreprocessor.clipStd, padToSquare: Bool = false) {
        self.size = size
        self.cropSize = cropSize
        self.mean = mean
        self.std = std
        self.padToSquare = padToSquare
    }

    private func validate() throws {
        guard size > 0, cropSize > 0, mean.count == 3, std.count == 3, std.allSatisfy({ $0 != 0 }) else {
            throw MediaError.invalidArgument("ClipPreprocessor needs positive sizes and 3 means / 3 non-zero stds (size \(size), crop \(cropSize), mean \(mean), std \(std))")
        }
    }

    public func callAsFunction(_ image: RGBImage) throws -> Tensor {
        try validate()
        let out = Tensor(zeros: [3, cropSize, cropSize])
        write(image, into: out.floats)
        return out
    }

    /// `[n, 3, crop, crop]` for `images` in order.
    public func batch(_ images: [RGBImage]) throws -> Tensor {
        try validate()
        let plane = 3 * cropSize * cropSize
        let out = Tensor(zeros: [images.count, 3, cropSize, cropSize])
        for (i, image) in images.enumerated() { write(image, into: out.floats + i * plane) }
        return out
    }

    /// The uint8 image after padding, resizing and cropping (before normalisation).
    func prepared(_ image: RGBImage) -> RGBImage {
        var img = padToSquare ? squared(image) : image
        let (short, long) = img.width <= img.height ? (img.width, img.height) : (img.height, img.width)
        let newLong = Int(Double(size * long) / Double(short))      // Python int(size * long / short)
        let (w, h) = img.width <= img.height ? (size, newLong) : (newLong, size)
        img = PillowResample.resize(img, width: w, height: h)
        return centerCrop(img)
    }

    private func write(_ image: RGBImage, into dst: UnsafeMutablePointer<Float>) {
        let img = prepared(image)
        let n = cropSize * cropSize
        let scale = [0, 1, 2].map { 1 / (255 * std[$0]) }
        let shift = [0, 1, 2].map { mean[$0] / std[$0] }
        img.pixels.withUnsafeBufferPointer { p in
            for i in 0..<n {
                for c in 0..<3 { dst[c * n + i] = Float(p[i * 3 + c]) * scale[c] - shift[c] }
            }
        }
    }

    /// Uni-MoE's expand2square: a square of the mean colour (int(mean·255) per channel) with the
    /// image pasted at ((side − w) / 2, 0) or (0, (side − h) / 2).
    private func squared(_ image: RGBImage) -> RGBImage {
        let side = max(image.width, image.height)
        if image.width == image.height { return image }
        let bg = mean.map { UInt8(clamping: Int($0 * 255)) }
        var px = [UInt8](repeating: 0, count: side * side * 3)
        for i in 0..<(side * side) { px[i * 3] = bg[0]; px[i * 3 + 1] = bg[1]; px[i * 3 + 2] = bg[2] }
        let ox = (side - image.width) / 2, oy = (side - image.height) / 2
        for y in 0..<image.height {
            let d = ((y + oy) * side + ox) * 3
            px.replaceSubrange(d..<(d + image.width * 3), with: image.pixels[(y * image.width * 3)..<((y + 1) * image.width * 3)])
        }
        return RGBImage(uncheckedWidth: side, height: side, pixels: px)
    }

    /// transformers' center_crop: top = (h − crop) // 2, padding with zeros when the image is smaller.
    private func centerCrop(_ image: RGBImage) -> RGBImage {
        let c = cropSize, h = image.height, w = image.width
        func floorDiv2(_ v: Int) -> Int { v >= 0 ? v / 2 : -((-v + 1) / 2) }
        var top = floorDiv2(h - c), left = floorDiv2(w - c)
        var src = image
        if top < 0 || left < 0 || top + c > h || left + c > w {
            let nh = max(c, h), nw = max(c, w)
            let tp = (nh - h + 1) / 2, lp = (nw - w + 1) / 2          // ceil((new − old) / 2)
            var px = [UInt8](repeating: 0, count: nh * nw * 3)
            for y in 0..<h {
                let d = ((y + tp) * nw + lp) * 3
                px.replaceSubrange(d..<(d + w * 3), with: image.pixels[(y * w * 3)..<((y + 1) * w * 3)])
            }
            src = RGBImage(uncheckedWidth: nw, height: nh, pixels: px)
            top += tp; left += lp
        }
        var out = [UInt8](repeating: 0, count: c * c * 3)
        for y in 0..<c {
            let sy = top + y
            guard sy >= 0, sy < src.height else { continue }
            for x in 0..<c {
                let sx = left + x
                guard sx >= 0, sx < src.width else { continue }
                let s = (sy * src.width + sx) * 3, d = (y * c + x) * 3
                out[d] = src.pixels[s]; out[d + 1] = src.pixels[s + 1]; out[d + 2] = src.pixels[s + 2]
            }
        }
        return RGBImage(uncheckedWidth: c, height: c, pixels: out)
    }
}
