"""Pure-Python rasteriser for the synthetic pictures and video frames: an RGB24 canvas, flat or
gently graded backgrounds, and anti-aliased circles, squares and triangles stamped from cached
coverage masks (4x4 supersampling). Integer arithmetic on the canvas keeps it deterministic."""

import math

SHAPES = ("circle", "square", "triangle")

# The answer colours: each a per-channel range the sample is jittered within.
COLOURS = {
    "red": ((200, 255), (0, 45), (0, 45)),
    "green": ((0, 50), (150, 215), (0, 60)),
    "blue": ((0, 50), (20, 80), (190, 255)),
    "yellow": ((225, 255), (205, 245), (0, 45)),
    "white": ((238, 255), (238, 255), (238, 255)),
    "black": ((0, 22), (0, 22), (0, 22)),
}
COLOUR_NAMES = tuple(COLOURS)

# Muted background hues (degrees) far from every answer colour: teal, violet, mauve, olive-brown.
MUTED_HUES = ((165, 200), (255, 290), (300, 330), (35, 50))
MIN_CONTRAST = 115  # Euclidean RGB distance between a shape colour and its background


def colour(rng, name):
    return tuple(rng.randint(lo, hi) for lo, hi in COLOURS[name])


def distance(a, b):
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def _hsv(h, s, v):
    h = (h % 360) / 60.0
    i = int(h)
    f = h - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6]
    return (round(r * 255), round(g * 255), round(b * 255))


def background(rng):
    """A grey or a muted (low-saturation, mid-value) tone: never one of the answer colours."""
    if rng.random() < 0.5:
        g = rng.randint(72, 178)
        return (g, g, g)
    lo, hi = rng.choice(MUTED_HUES)
    return _hsv(rng.uniform(lo, hi), rng.uniform(0.12, 0.32), rng.uniform(0.33, 0.68))


def background_for(rng, colours):
    """A background contrasting with every colour in `colours` (re-drawn until it does)."""
    for _ in range(1000):
        bg = background(rng)
        if all(distance(bg, c) >= MIN_CONTRAST for c in colours):
            return bg
    raise RuntimeError("no contrasting background found")


class Canvas:
    def __init__(self, size, bg, rng=None, gradient=0):
        """A size x size canvas filled with `bg`; with `gradient` > 0 a linear ramp of up to
        +-gradient levels in a random direction (drawn from rng) is added."""
        self.size = size
        self.bg = bg
        if gradient and rng is not None:
            ang = rng.uniform(0, 2 * math.pi)
            gx, gy = math.cos(ang) * gradient, math.sin(ang) * gradient
            half = (size - 1) / 2.0
            # One x term per column, one y term per row: the same float operations, in the same
            # order, as computing each pixel's step on its own (so the same bytes).
            across = [(x - half) * gx for x in range(size)]
            shade = {}   # ramp step -> the background pixel shifted by it
            rows = []
            for y in range(size):
                down = (y - half) * gy
                for a in across:
                    d = int(round((a + down) / half))
                    p = shade.get(d)
                    if p is None:
                        p = shade[d] = bytes(min(255, max(0, c + d)) for c in bg)
                    rows.append(p)
            self.px = bytearray(b"".join(rows))
        else:
            self.px = bytearray(bytes(bg) * (size * size))

    def copy(self):
        c = Canvas.__new__(Canvas)
        c.size, c.bg, c.px = self.size, self.bg, bytearray(self.px)
        return c

    def stamp(self, shape, radius, cx, cy, rgb, alpha=1.0):
        """Blends `shape` of `radius` (pixels, may be fractional) centred on pixel (cx, cy)."""
        s, px = self.size, self.px
        a_scale = int(round(alpha * 256))
        r, g, b = rgb
        for dx, dy, cov in mask(shape, radius):
            x, y = cx + dx, cy + dy
            if 0 <= x < s and 0 <= y < s:
                a = cov * a_scale // 16  # cov in 0..16 -> a in 0..256
                i = (y * s + x) * 3
                px[i] = (px[i] * (256 - a) + r * a + 128) >> 8
                px[i + 1] = (px[i + 1] * (256 - a) + g * a + 128) >> 8
                px[i + 2] = (px[i + 2] * (256 - a) + b * a + 128) >> 8

    def rgb24(self, width=None, height=None):
        """The pixels, or those of the top-left width x height region."""
        s = self.size
        w, h = width or s, height or s
        if (w, h) == (s, s):
            return bytes(self.px)
        return b"".join(bytes(self.px[y * s * 3:(y * s + w) * 3]) for y in range(h))


def extent(shape, radius):
    """Radius of a circle around the shape's centre that contains it (for placement)."""
    return radius * {"circle": 1.0, "square": 0.886 * math.sqrt(2), "triangle": 1.3}[shape]


def _inside(shape, radius, x, y):
    if shape == "circle":
        return x * x + y * y <= radius * radius
    if shape == "square":  # same area as the circle
        h = 0.886 * radius
        return -h <= x <= h and -h <= y <= h
    # Equilateral triangle pointing up, circumradius 1.3 r, centroid at the origin.
    R = 1.3 * radius
    if y > R / 2 or y < -R:
        return False
    # half-width at height y grows linearly from 0 at the apex (y = -R) to R*sin60 at the base.
    half = (y + R) / (1.5 * R) * (R * math.sqrt(3) / 2)
    return -half <= x <= half


_MASKS = {}


def mask(shape, radius):
    """[(dx, dy, coverage 1..16)] for the shape centred on the middle of pixel (0, 0)."""
    key = (shape, round(radius * 8) / 8.0)
    m = _MASKS.get(key)
    if m is not None:
        return m
    shape_, rad = key
    ext = int(math.ceil(extent(shape_, rad))) + 1
    m = []
    subs = [(i + 0.5) / 4.0 - 0.5 for i in range(4)]
    for dy in range(-ext, ext + 1):
        for dx in range(-ext, ext + 1):
            cov = sum(1 for sy in subs for sx in subs if _inside(shape_, rad, dx + sx, dy + sy))
            if cov:
                m.append((dx, dy, cov))
    _MASKS[key] = m
    return m
