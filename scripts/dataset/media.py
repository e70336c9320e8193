"""Media writers. Every file is made by the ffmpeg program (and espeak-ng for speech) with settings
that make the output a pure function of the inputs: bit-exact flags (no encoder version strings or
timestamps in the containers), fixed encoder settings, one thread, explicit noise seeds."""

import os
import shutil
import subprocess
import tempfile

FFMPEG = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-threads", "1",
          "-fflags", "+bitexact"]
BITEXACT_OUT = ["-flags:v", "+bitexact", "-flags:a", "+bitexact", "-fflags", "+bitexact",
                "-map_metadata", "-1", "-threads", "1"]
WAV_OUT = ["-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le", "-f", "wav"]


def _run(cmd, path, data=None, stdin=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    p = subprocess.run(cmd + [path], input=data, stdin=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise RuntimeError("ffmpeg failed for %s: %s" % (path, p.stderr.decode(errors="replace").strip()))


# While collect_pngs() is active, png() queues its frames here instead of running ffmpeg; the
# block's end writes the pictures of each size with one ffmpeg call (its image2 muxer numbers the
# files in a scratch folder, then each is renamed to its path): the same bytes as one call per
# picture, ~50x faster.
_queued = None


def _dims(size):
    """ffmpeg's -s for a side or a (width, height) pair."""
    w, h = size if isinstance(size, tuple) else (size, size)
    return "%dx%d" % (w, h)


def png(path, size, rgb24):
    """One RGB24 frame -> PNG; `size` is the side of a square picture or (width, height)."""
    if _queued is not None:
        _queued.append((path, size, rgb24))
        return
    _run(FFMPEG + ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", _dims(size), "-i", "pipe:0",
                   "-frames:v", "1", "-c:v", "png", "-pix_fmt", "rgb24"] + BITEXACT_OUT + ["-f", "image2"],
         path, data=rgb24)


class collect_pngs:
    """`with collect_pngs():` queues the block's png() calls and writes them when it ends."""

    def __enter__(self):
        global _queued
        _queued = []

    def __exit__(self, *exc):
        global _queued
        queued, _queued = _queued, None
        if exc[0] is None:
            by_size = {}
            for path, size, rgb in queued:
                by_size.setdefault(size, []).append((path, rgb))
            for size, pictures in by_size.items():
                _png_batch(size, pictures)


def _png_batch(size, pictures):
    """Pictures of one size: [(path, rgb24)] -> PNG files, one ffmpeg call."""
    if len(pictures) == 1:
        return png(pictures[0][0], size, pictures[0][1])
    folder = os.path.dirname(pictures[0][0])
    os.makedirs(folder, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".png-batch-", dir=folder)   # same file system: renames stay cheap
    try:
        _run(FFMPEG + ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", _dims(size), "-i", "pipe:0",
                       "-c:v", "png", "-pix_fmt", "rgb24"] + BITEXACT_OUT + ["-f", "image2", "-start_number", "0"],
             os.path.join(scratch, "%05d.png"), data=b"".join(rgb for _, rgb in pictures))
        for i, (path, _) in enumerate(pictures):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.replace(os.path.join(scratch, "%05d.png" % i), path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def mp4(path, size, fps, frames, rotate=0):
    """RGB24 frames -> MP4, H.264 yuv420p, a keyframe every 4 frames, no B-frames, index first.
    With `rotate` 90 the frames are stored turned a quarter anticlockwise with a display matrix that
    turns them back, as a phone held sideways records: a player shows the frames as given."""
    turn = ["-vf", "transpose=cclock"] if rotate == 90 else []
    _run(FFMPEG + ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "%dx%d" % (size, size), "-framerate", str(fps),
                   "-i", "pipe:0", "-an"] + turn + ["-c:v", "libx264", "-preset", "medium", "-crf", "18", "-g", "4",
                   "-keyint_min", "1", "-bf", "0", "-pix_fmt", "yuv420p", "-movflags", "+faststart"]
         + BITEXACT_OUT + ["-f", "mp4"], path, data=b"".join(frames))
    if rotate == 90:
        _display_quarter_turn(path, size)


def _display_quarter_turn(path, height):
    """Writes a phone's portrait display matrix (turn a quarter clockwise) into the video track's
    tkhd box: ffmpeg 5.1's mov muxer no longer takes a `rotate` tag, so the matrix is set in place."""
    data = bytearray(open(path, "rb").read())
    at = data.find(b"tkhd")
    if at < 4:
        raise RuntimeError("no tkhd box in %s" % path)
    version = data[at + 4]
    matrix = at + 4 + 4 + (32 if version == 1 else 20) + 8 + 8
    values = (0, 0x10000, 0, -0x10000 & 0xFFFFFFFF, 0, 0, height << 16, 0, 0x40000000)
    data[matrix:matrix + 36] = b"".join(v.to_bytes(4, "big") for v in values)
    open(path, "wb").write(bytes(data))


def transcode(src, path, args):
    """Re-encodes `src` into `path` with ffmpeg output `args` (picture and audio formats of the
    outside split), then removes `src`."""
    _run(FFMPEG + ["-i", src] + args + BITEXACT_OUT, path)
    os.remove(src)


def tone(path, freq, amp, dur):
    """A pure sine of `freq` Hz at amplitude `amp` (of full scale), 10 ms fades against clicks."""
    src = "aevalsrc=exprs=%.6f*sin(2*PI*%.4f*t):s=16000:d=%.4f" % (amp, freq, dur)
    fades = "afade=t=in:d=0.01,afade=t=out:st=%.4f:d=0.01" % (dur - 0.01)
    _run(FFMPEG + ["-f", "lavfi", "-i", src, "-af", fades] + WAV_OUT + BITEXACT_OUT, path)


def noise(path, colour, amp, dur, seed):
    """anoisesrc noise of `colour` (white, pink, brown, ...) with an explicit seed."""
    src = "anoisesrc=c=%s:a=%.6f:r=16000:d=%.4f:s=%d" % (colour, amp, dur, seed)
    fades = "afade=t=in:d=0.01,afade=t=out:st=%.4f:d=0.01" % (dur - 0.01)
    _run(FFMPEG + ["-f", "lavfi", "-i", src, "-af", fades] + WAV_OUT + BITEXACT_OUT, path)


def speech(path, text, voice, speed, pitch, amplitude, lead_ms, min_dur):
    """espeak-ng says `text`; ffmpeg delays it by lead_ms, pads it to at least min_dur seconds and
    resamples it to 16 kHz mono."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    say = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-a", str(amplitude),
                          "--stdout", text], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if say.returncode != 0 or len(say.stdout) < 100:
        raise RuntimeError("espeak-ng failed for %s: %s" % (path, say.stderr.decode(errors="replace").strip()))
    af = "adelay=%d,apad=whole_dur=%.4f" % (lead_ms, min_dur)
    _run(FFMPEG + ["-f", "wav", "-i", "pipe:0", "-af", af] + WAV_OUT + BITEXACT_OUT, path, data=say.stdout)
