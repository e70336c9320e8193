"""The question families. Each media family has a `make(rng, ctx)` that writes one medium and
returns its answer word and a short caption (for the stage-1 alignment sample); the question
phrasing is picked afterwards from `QUESTIONS[family]`."""

from . import media
from .raster import COLOUR_NAMES, SHAPES, Canvas, background_for, colour, extent

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIRECTIONS = ("left", "right", "up", "down")
DIRECTION_VECTORS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

# espeak-ng voices (base languages x variants): all stock, all intelligible English.
VOICES = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = ("", "+m1", "+m3", "+f2", "+f3")

ECHO_WORDS = ("apple", "river", "house", "music", "garden", "window", "pencil", "tiger", "cloud",
              "bread", "chair", "table", "ocean", "forest", "candle", "rocket", "planet", "butter",
              "camera", "doctor", "engine", "flower", "guitar", "hammer", "island", "jacket", "kitten",
              "ladder", "mirror", "pillow", "rabbit", "ticket", "violin", "wallet", "zebra", "lemon")

QUESTIONS = {
    "image_color": ["What colour is the shape?", "What color is the shape in the picture?",
                    "Which colour is the object?", "Name the colour of the shape.",
                    "What is the colour of the shape shown? Answer with one word."],
    "image_shape": ["What shape is shown?", "Which shape is in the image?",
                    "Is it a circle, a square or a triangle?", "Name the shape in the picture.",
                    "What kind of shape do you see? Answer with one word."],
    "image_count": ["How many shapes are there?", "How many objects are in the image?",
                    "Count the shapes in the picture.", "How many shapes do you see?",
                    "What is the number of shapes? Answer with one word."],
    "video_direction": ["Which way is the object moving?", "In which direction does the object move?",
                        "Where is the shape going: left, right, up or down?", "What direction is the motion?",
                        "Which direction does the shape travel? Answer with one word."],
    "video_color": ["What colour is the moving object?", "What color is the shape in the video?",
                    "Which colour is the object that moves?", "Name the colour of the moving shape.",
                    "What is the colour of the moving object? Answer with one word."],
    "audio_pitch": ["Is the tone high or low?", "Is this a high or a low sound?",
                    "What is the pitch of the tone?", "Is the pitch low or high?",
                    "Is the sound high-pitched or low-pitched? Answer high or low."],
    "audio_kind": ["Is this a tone or noise?", "What kind of sound is this?", "Do you hear a tone or noise?",
                   "Is the sound a pure tone or noise?", "Tone or noise? Answer with one word."],
    "speech_digit": ["What did the speaker say?", "Which number is spoken?", "What digit do you hear?",
                     "Which number does the voice say?", "What number is said? Answer with one word."],
    "speech_color": ["What did the speaker say?", "What colour word do you hear?", "Which colour is spoken?",
                     "What colour does the voice name?", "Which color word is said? Answer with one word."],
    "text_echo": ["Repeat the word: {w}", "Say the word {w}.", "Please repeat this word: {w}",
                  "Echo the word {w}.", "Write the word {w} back to me.", "Repeat after me: {w}"],
}

CAPTION_QUESTIONS = {
    "image": ["Describe the image briefly.", "What is in the picture?", "Give a short caption for the image."],
    "video": ["Describe the video briefly.", "What happens in the video?", "Give a short caption for the video."],
    "audio": ["Describe the sound briefly.", "What do you hear?", "Give a short caption for the audio."],
}


def _one_shape_picture(rng, ctx, shape, name):
    size = ctx.size
    rgb = colour(rng, name)
    canvas = Canvas(size, background_for(rng, [rgb]), rng, gradient=rng.randint(0, ctx.gradient_max))
    radius = rng.uniform(0.12, 0.26) * size
    e = extent(shape, radius)
    cx = rng.randint(int(e) + 1, size - int(e) - 2)
    cy = rng.randint(int(e) + 1, size - int(e) - 2)
    canvas.stamp(shape, radius, cx, cy, rgb)
    media.png(ctx.path, size, canvas.rgb24())


def image_color(rng, ctx):
    name, shape = ctx.balanced(COLOUR_NAMES), rng.choice(SHAPES)
    _one_shape_picture(rng, ctx, shape, name)
    return name, "%s %s" % (name, shape)


def image_shape(rng, ctx):
    name, shape = rng.choice(COLOUR_NAMES), ctx.balanced(SHAPES)
    _one_shape_picture(rng, ctx, shape, name)
    return shape, "%s %s" % (name, shape)


def image_count(rng, ctx):
    # ctx.width / ctx.height: a non-square picture (the model pads it to a square, which shrinks its
    # shapes); ctx.shape_scale: shapes drawn smaller. Both only in `--count-variety` training data.
    w, h = ctx.width or ctx.size, ctx.height or ctx.size
    n = ctx.balanced((1, 2, 3, 4))
    names = [rng.choice(COLOUR_NAMES) for _ in range(n)]
    rgbs = [colour(rng, c) for c in names]
    canvas = Canvas(max(w, h), background_for(rng, rgbs), rng, gradient=rng.randint(0, ctx.gradient_max))
    scale = 1.0
    while True:  # non-overlapping placement by rejection; shrink the shapes if it keeps failing
        placed = []
        for _ in range(n):
            shape = rng.choice(SHAPES)
            radius = rng.uniform(0.07, 0.11) * min(w, h) * ctx.shape_scale * scale
            e = extent(shape, radius)
            for _ in range(200):
                cx = rng.randint(int(e) + 1, w - int(e) - 2)
                cy = rng.randint(int(e) + 1, h - int(e) - 2)
                if all((cx - x) ** 2 + (cy - y) ** 2 >= (e + pe + 2) ** 2 for _, _, x, y, pe in placed):
                    placed.append((shape, radius, cx, cy, e))
                    break
            else:
                break
        if len(placed) == n:
            break
        scale *= 0.9
    for (shape, radius, cx, cy, _), rgb in zip(placed, rgbs):
        canvas.stamp(shape, radius, cx, cy, rgb)
    media.png(ctx.path, (w, h), canvas.rgb24(w, h))
    word = NUMBER_WORDS[n]
    return word, ("one shape" if n == 1 else "%s shapes" % word)


def _moving_object_video(rng, ctx, direction, name):
    """One object crossing the frame in a straight line, with a comet trail of fading, shrinking
    copies behind it in every frame, so that each frame alone shows the direction of motion."""
    size = ctx.size
    shape = rng.choice(SHAPES)
    rgb = colour(rng, name)
    bg = background_for(rng, [rgb])
    base = Canvas(size, bg, rng, gradient=rng.randint(0, ctx.gradient_max * 2 // 3))
    radius = rng.uniform(0.08, 0.12) * size
    e = extent(shape, radius)
    trail_n = rng.randint(4, 6)
    spacing = rng.uniform(0.55, 0.8) * radius
    tail = trail_n * spacing
    fps = rng.choice((8, 10, 12))
    frames_n = max(8, int(round(fps * rng.uniform(1.0, 2.0))))
    dx, dy = DIRECTION_VECTORS[direction]
    lo, hi = int(e) + 1, size - int(e) - 2
    lane = rng.randint(lo, hi)
    # The head travels from where its whole tail is in view to the far edge (or the reverse).
    start, end = lo + int(tail), hi
    if dx < 0 or dy < 0:
        start, end = size - 1 - start, size - 1 - end
    frames = []
    for f in range(frames_n):
        t = f / (frames_n - 1)
        along = int(round(start + (end - start) * t))
        hx, hy = (along, lane) if dx else (lane, along)
        canvas = base.copy()
        for k in range(trail_n, 0, -1):  # farthest (faintest) first, head on top
            alpha = 0.7 * (1 - k / (trail_n + 1))
            canvas.stamp(shape, radius * (1 - 0.07 * k), int(round(hx - dx * k * spacing)),
                         int(round(hy - dy * k * spacing)), rgb, alpha)
        canvas.stamp(shape, radius, hx, hy, rgb)
        frames.append(canvas.rgb24())
    media.mp4(ctx.path, size, fps, frames, rotate=ctx.rotate)
    return shape


def video_direction(rng, ctx):
    direction, name = ctx.balanced(DIRECTIONS), rng.choice(COLOUR_NAMES)
    shape = _moving_object_video(rng, ctx, direction, name)
    return direction, "%s %s %swards" % (name, shape, direction)


def video_color(rng, ctx):
    direction, name = rng.choice(DIRECTIONS), ctx.balanced(COLOUR_NAMES)
    shape = _moving_object_video(rng, ctx, direction, name)
    return name, "%s %s %swards" % (name, shape, direction)


def _pitch_freq(rng, level):
    return rng.uniform(200, 400) if level == "low" else rng.uniform(1500, 3000)


def audio_pitch(rng, ctx):
    level = ctx.balanced(("low", "high"))
    media.tone(ctx.path, _pitch_freq(rng, level), rng.uniform(0.1, 0.8), rng.uniform(1.0, 2.0))
    return level, "%s tone" % level


def audio_kind(rng, ctx):
    dur = rng.uniform(1.0, 2.0)
    if ctx.balanced(("tone", "noise")) == "tone":
        level = rng.choice(("low", "high"))
        media.tone(ctx.path, _pitch_freq(rng, level), rng.uniform(0.1, 0.8), dur)
        return "tone", "%s tone" % level
    kind = rng.choice(("white", "pink", "brown"))
    media.noise(ctx.path, kind, rng.uniform(0.1, 0.6), dur, rng.randint(1, 2 ** 31 - 1))
    return "noise", "%s noise" % kind


def _speak(rng, ctx, word):
    voice = rng.choice(VOICES) + rng.choice(VARIANTS)
    media.speech(ctx.path, word, voice, rng.randint(130, 190), rng.randint(30, 70), rng.randint(60, 130),
                 rng.randint(0, 300), rng.uniform(1.0, 1.6))


def speech_digit(rng, ctx):
    word = ctx.balanced(NUMBER_WORDS)
    _speak(rng, ctx, word)
    return word, "voice saying %s" % word


def speech_color(rng, ctx):
    word = ctx.balanced(COLOUR_NAMES)
    _speak(rng, ctx, word)
    return word, "voice saying %s" % word


# family -> (medium key, file extension, caption family, maker), in generation order.
FAMILIES = {
    "image_color": ("image", "png", "caption_image", image_color),
    "image_shape": ("image", "png", "caption_image", image_shape),
    "image_count": ("image", "png", "caption_image", image_count),
    "video_direction": ("video", "mp4", "caption_video", video_direction),
    "video_color": ("video", "mp4", "caption_video", video_color),
    "audio_pitch": ("audio", "wav", "caption_audio", audio_pitch),
    "audio_kind": ("audio", "wav", "caption_audio", audio_kind),
    "speech_digit": ("audio", "wav", "caption_speech", speech_digit),
    "speech_color": ("audio", "wav", "caption_speech", speech_color),
}
