"""make-dataset's generator: seeded synthetic multimodal question-answer data in the reference's
training format (see docs/DATASET.md). Run through scripts/make-dataset."""

import argparse
import json
import multiprocessing
import os
import random
import shutil
import sys
import time

from . import families as F
from . import media

SPLITS = ("train", "val", "test")
SPLIT_SEED_OFFSET = {"train": 0, "val": 1000, "test": 2000, "outside": 3000, "samples": 4000}
PLACEHOLDER = {"image": "<image>\n", "audio": "<audio>\n", "video": "<video>\n"}


class Ctx:
    def __init__(self, out, rel, size, split_seed, family, index):
        self.rel = rel
        self.path = os.path.join(out, rel)
        self.size = size
        self.split_seed, self.family, self.index = split_seed, family, index
        self.gradient_max = 18   # background ramp, in levels (the outside split uses steeper ones)
        self.rotate = 0          # a video's display rotation in degrees (the outside split's phone videos)
        self.width = self.height = None  # a counting picture's sides when not size x size (--count-variety)
        self.shape_scale = 1.0   # a counting picture's shapes drawn this much smaller (--count-variety)

    def balanced(self, classes):
        """The answer class of this sample: every block of len(classes) consecutive indices holds
        each class once, in a seeded order, so the classes of a family stay balanced."""
        k = len(classes)
        order = list(classes)
        side_stream(self.split_seed, self.family, "block", self.index // k).shuffle(order)
        return order[self.index % k]


def sample_rng(split_seed, family, index):
    # str seeds go through SHA-512 in Python 3: stable across runs, processes and PYTHONHASHSEED.
    return random.Random("unimoe-dataset/%d/%s/%d" % (split_seed, family, index))


def side_stream(split_seed, family, what, index):
    """A seeded stream for one decision about a sample (`what`: its class block, its outside-split
    variant, its count variety), apart from the sample's own stream so the rest keep their draws."""
    return random.Random("unimoe-dataset/%d/%s/%s/%d" % (split_seed, family, what, index))


def conversation(question, answer, medium=None):
    return [{"from": "human", "value": (PLACEHOLDER[medium] if medium else "") + question},
            {"from": "gpt", "value": answer}]


# The outside split: media the training split never shows (other sides, steeper background ramps,
# WebP / JPEG / letterboxed pictures, phone videos with a display rotation, MP3 / Opus audio).
OUTSIDE_SIDES = {"image": (48, 96, 128), "video": (48, 96)}
OUTSIDE_PICTURES = (("webp", ["-c:v", "libwebp", "-quality", "85", "-f", "webp"]),
                    ("jpg", ["-q:v", "3", "-f", "image2"]),
                    ("png", ["-vf", "pad=iw*4/3:ih:(ow-iw)/2:0:color=0x7f7f7f", "-c:v", "png", "-f", "image2"]))
OUTSIDE_SOUNDS = (("mp3", ["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"]),
                  ("ogg", ["-c:a", "libopus", "-b:a", "32k", "-f", "ogg"]))


# --count-variety: a training counting picture is, with its own seeded draw, non-square (the
# model pads it to a square, shrinking its shapes) or drawn with smaller shapes, as users' pictures
# and the outside split's letterboxed ones are; the test split never is.
COUNT_ASPECTS = (0.625, 0.75, 0.875)   # the short side / the long side of a non-square picture
COUNT_SHAPE_SCALES = (0.6, 1.0)


def vary_count_picture(ctx, variety):
    """With probability `variety` makes ctx's counting picture non-square (half the time) or its
    shapes smaller; the draw has its own seed, so the other pictures keep their bytes."""
    v = side_stream(ctx.split_seed, ctx.family, "variety", ctx.index)
    r = v.random()
    if r < variety / 2:
        short = max(16, round(ctx.size * v.choice(COUNT_ASPECTS) / 2) * 2)
        ctx.width, ctx.height = v.choice(((ctx.size, short), (short, ctx.size)))
    elif r < variety:
        ctx.shape_scale = v.uniform(*COUNT_SHAPE_SCALES)


def make_one(task):
    """One media sample: writes its file, returns (stage-2 record, stage-1 record)."""
    out, size, split, split_seed, family, index, variety = task
    medium, ext, caption_family, maker = F.FAMILIES[family]
    rng = sample_rng(split_seed, family, index)
    rel = "media/%s/%s/%05d.%s" % (split, family, index, ext)
    ctx = Ctx(out, rel, size, split_seed, family, index)
    if split == "outside":
        variant = side_stream(split_seed, family, "outside", index)
        ctx.size = variant.choice(OUTSIDE_SIDES.get(medium, (size,)))
        ctx.gradient_max = 40
        ctx.rotate = 90 if medium == "video" and index % 2 == 0 else 0
    if variety and split == "train" and family == "image_count":
        vary_count_picture(ctx, variety)
    answer, caption = maker(rng, ctx)
    if split == "outside" and medium != "video":
        ext2, args = (OUTSIDE_PICTURES if medium == "image" else OUTSIDE_SOUNDS)[index % (3 if medium == "image" else 2)]
        rel2 = rel[:-len(ext)] + ("letterbox.png" if ext2 == "png" else ext2)
        media.transcode(ctx.path, os.path.join(out, rel2), args)
        rel = rel2
    question = rng.choice(F.QUESTIONS[family])
    caption_question = rng.choice(F.CAPTION_QUESTIONS["audio" if medium == "audio" else medium])
    sid = "%s-%s-%05d" % (split, family, index)
    inst = {"id": sid, medium: rel, "family": family, "answer": answer,
            "conversations": conversation(question, answer, medium)}
    cap = {"id": sid + "-caption", medium: rel, "family": caption_family, "answer": caption,
           "conversations": conversation(caption_question, caption, medium)}
    return inst, cap


# Samples per worker task: one ffmpeg call writes a chunk's pictures. MAKE_DATASET_CHUNK=1 writes
# each picture with its own call (the output is the same; the tests compare the two).
CHUNK = max(1, int(os.environ.get("MAKE_DATASET_CHUNK", "50")))


def make_chunk(task):
    """Consecutive samples of one family and split (make_one each); their pictures are written
    together at the end (media.collect_pngs), except the outside split's, which are transcoded
    as soon as they exist."""
    out, size, split, split_seed, family, start, stop, variety = task
    tasks = [(out, size, split, split_seed, family, i, variety) for i in range(start, stop)]
    if split == "outside":
        return [make_one(t) for t in tasks]
    with media.collect_pngs():
        return [make_one(t) for t in tasks]


def text_echo(split, split_seed, index):
    rng = sample_rng(split_seed, "text_echo", index)
    word = rng.choice(F.ECHO_WORDS)
    question = rng.choice(F.QUESTIONS["text_echo"]).format(w=word)
    return {"id": "%s-text_echo-%05d" % (split, index), "family": "text_echo", "answer": word,
            "conversations": conversation(question, word)}


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def progress(msg, final):
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + msg + ("\n" if final else ""))
    elif final:
        sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def check(out, records):
    """Every record names an existing medium and holds exactly one matching placeholder."""
    for r in records:
        media_keys = [k for k in PLACEHOLDER if k in r]
        human = r["conversations"][0]["value"]
        assert len(media_keys) <= 1, r["id"]
        for k in media_keys:
            assert os.path.isfile(os.path.join(out, r[k])), r["id"]
            assert human.startswith(PLACEHOLDER[k]) and human.count("<%s>" % k) == 1, r["id"]
        assert sum(human.count("<%s>" % k) for k in PLACEHOLDER) == len(media_keys), r["id"]
        assert r["answer"] == r["conversations"][1]["value"], r["id"]


def readme(args, fams_arg, counts):
    fams = fams_arg + ["text_echo"]
    caps = sorted({F.FAMILIES[f][2] for f in fams_arg})
    lines = ["# Synthetic Uni-MoE dataset", "",
             "Generated by `scripts/make-dataset` (see docs/DATASET.md in the unimoe repository).", "",
             "Command: `scripts/make-dataset --out OUT --seed %d --train %d --val %d --test %d --size %d%s`"
             % (args.seed, args.train, args.val, args.test, args.size,
                "" if args.families == ",".join(F.FAMILIES) else " --families " + args.families), "",
             "Seed %d; split seeds: train %d, val %d, test %d. Same command, same seed: byte-identical files."
             % (args.seed, args.seed + 0, args.seed + 1000, args.seed + 2000), "",
             "Pass this directory as `--media-dir`; media paths in the JSON Lines files are relative to it.", "",
             "## Files", "",
             "- `stage1_{split}.jsonl`: alignment captions, one per media file (families %s)." % ", ".join(caps),
             "- `stage2_{split}.jsonl`: per-modality instructions (the media families).",
             "- `stage3_{split}.jsonl`: the stage-2 samples plus text-only `text_echo` samples.",
             "- `media/{split}/{family}/NNNNN.{png,mp4,wav}`: %dx%d PNG pictures, %dx%d H.264 MP4 videos, "
             "16 kHz mono WAV audio." % (args.size, args.size, args.size, args.size), "",
             "## Samples per family and split", "",
             "| family | stage | " + " | ".join(SPLITS) + " |", "| --- | --- | " + " | ".join("---" for _ in SPLITS) + " |"]
    for fam in fams:
        stage = "3" if fam == "text_echo" else "2, 3"
        lines.append("| %s | %s | %s |" % (fam, stage, " | ".join(str(counts[s].get(fam, 0)) for s in SPLITS)))
    for fam in caps:
        lines.append("| %s | 1 | %s |" % (fam, " | ".join(str(counts[s].get(fam, 0)) for s in SPLITS)))
    lines.append("| **files** | | %s |" % " | ".join(
        "stage1 %d, stage2 %d, stage3 %d" % (counts[s]["@1"], counts[s]["@2"], counts[s]["@3"]) for s in SPLITS))
    lines.append("")
    return "\n".join(lines)


# The bundled samples (samples/ in the repository, asked about by scripts/demo): one medium per
# modality from a seed no split uses, named as the demo and the tests expect, with the right answers.
SAMPLES = (("picture.png", "image_color", ("picture.answer", "picture.shape")),
           ("clip.mp4", "video_direction", ("clip.answer", "clip.colour")),
           ("tone.wav", "audio_pitch", ("tone.answer",)),
           ("speech.wav", "speech_digit", ("speech.answer",)))


def write_samples(out, size, seed):
    os.makedirs(out, exist_ok=True)
    split_seed = seed + SPLIT_SEED_OFFSET["samples"]
    for name, family, answer_files in SAMPLES:
        rng = sample_rng(split_seed, family, 0)
        ctx = Ctx(out, name, size, split_seed, family, 0)
        answer, caption = F.FAMILIES[family][3](rng, ctx)
        # the other facts the caption states: a picture's shape ("yellow triangle"), a clip's
        # colour ("red circle leftwards")
        words = [answer] + {"image_color": caption.split()[1:2], "video_direction": caption.split()[0:1]}.get(family, [])
        for file, word in zip(answer_files, words):
            with open(os.path.join(out, file), "w", encoding="utf-8", newline="\n") as f:
                f.write(word + "\n")
        sys.stderr.write("make-dataset: %s (%s): %s\n" % (name, family, " / ".join(words)))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="make-dataset", description=__doc__)
    ap.add_argument("--out", help="output directory (its media/, stage*.jsonl and README.md are replaced)")
    ap.add_argument("--samples", metavar="DIR",
                    help="write the bundled demo samples (picture.png, clip.mp4, tone.wav, speech.wav and their "
                         "*.answer files) into DIR instead of a data set")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--train", type=int, default=60, help="samples per family in the train split")
    ap.add_argument("--val", type=int, default=10, help="samples per family in the val split")
    ap.add_argument("--test", type=int, default=20, help="samples per family in the test split")
    ap.add_argument("--outside", type=int, default=0,
                    help="samples per family of the outside split (outside_test.jsonl): other sizes and formats")
    ap.add_argument("--count-variety", type=float, default=0.0, metavar="F",
                    help="share of the training split's counting pictures drawn non-square (the model pads "
                         "them) or with shapes 0.6-1x the usual size (default 0)")
    ap.add_argument("--size", type=int, default=64, help="picture and video side in pixels (even)")
    ap.add_argument("--families", default=",".join(F.FAMILIES),
                    help="comma-separated media families to generate (default: all); FAMILY:N makes N "
                         "training samples of that family instead of --train")
    ap.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1),
                    help="worker processes (default: CPU count, at most 8); the output does not depend on it")
    args = ap.parse_args(argv)
    if not 0 <= args.count_variety <= 1:
        ap.error("--count-variety must lie between 0 and 1")
    if args.size < 16 or args.size % 2:
        ap.error("--size must be an even number >= 16 (H.264 yuv420p needs even sides)")
    if args.samples:
        write_samples(os.path.abspath(args.samples), args.size, args.seed)
        return 0
    if not args.out:
        ap.error("--out DIR is required (or --samples DIR)")
    per_family = {}   # FAMILY:N -> N training samples of that family instead of --train
    fams = []
    for item in (f for f in args.families.split(",") if f):
        fam, _, count = item.partition(":")
        if count:
            if not count.isdigit():
                ap.error("--families: %r: the count after ':' must be a whole number" % item)
            per_family[fam] = int(count)
        fams.append(fam)
    for f in fams:
        if f not in F.FAMILIES:
            ap.error("unknown family %r (known: %s)" % (f, ", ".join(F.FAMILIES)))
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    # Replace only what this generator writes; anything else in OUT is left alone.
    shutil.rmtree(os.path.join(out, "media"), ignore_errors=True)
    for name in os.listdir(out):
        if ((name.startswith("stage") or name.startswith("outside")) and name.endswith(".jsonl")) or name == "README.md":
            os.remove(os.path.join(out, name))

    t_start = time.time()
    counts = {}
    pool = multiprocessing.Pool(args.jobs) if args.jobs > 1 else None
    try:
        for split in SPLITS + (("outside",) if args.outside else ()):
            n = getattr(args, split)
            split_seed = args.seed + SPLIT_SEED_OFFSET[split]
            inst, caps, c = [], [], {}
            for fam in fams:
                nf = per_family.get(fam, n) if split == "train" else n
                tasks = [(out, args.size, split, split_seed, fam, i, min(i + CHUNK, nf), args.count_variety)
                         for i in range(0, nf, CHUNK)]
                t0 = time.time()
                chunks = pool.imap(make_chunk, tasks) if pool else map(make_chunk, tasks)
                results = (r for chunk in chunks for r in chunk)
                for k, (a, b) in enumerate(results, 1):
                    inst.append(a)
                    caps.append(b)
                    c[fam] = c.get(fam, 0) + 1
                    c[b["family"]] = c.get(b["family"], 0) + 1
                    if k == nf or k % 10 == 0:
                        dt = max(time.time() - t0, 1e-6)
                        progress("make-dataset: %-5s %-16s %4d/%d  %.1f/s  ETA %.0f s"
                                 % (split, fam, k, nf, k / dt, (nf - k) * dt / k), k == nf)
            texts = [text_echo(split, split_seed, i) for i in range(n)]
            c["text_echo"] = len(texts)
            stage3 = inst + texts
            if split == "train":  # mixed order for training; val/test stay grouped by family
                for name, recs in (("stage1", caps), ("stage2", inst), ("stage3", stage3)):
                    random.Random("unimoe-dataset/%d/shuffle/%s" % (split_seed, name)).shuffle(recs)
            for recs in (caps, inst, stage3):
                check(out, recs)
            if split == "outside":  # an evaluation set only: the media questions
                write_jsonl(os.path.join(out, "outside_test.jsonl"), inst)
                counts[split] = c
                continue
            write_jsonl(os.path.join(out, "stage1_%s.jsonl" % split), caps)
            write_jsonl(os.path.join(out, "stage2_%s.jsonl" % split), inst)
            write_jsonl(os.path.join(out, "stage3_%s.jsonl" % split), stage3)
            c["@1"], c["@2"], c["@3"] = len(caps), len(inst), len(stage3)
            counts[split] = c
    finally:
        if pool:
            pool.close()
            pool.join()
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8", newline="\n") as f:
        f.write(readme(args, fams, counts))
    total = sum(counts[s]["@2"] for s in SPLITS)
    sys.stderr.write("make-dataset: %d media files, %s in %.1f s\n" % (
        total, ", ".join("%s %d/%d/%d" % (s, counts[s]["@1"], counts[s]["@2"], counts[s]["@3"]) for s in SPLITS),
        time.time() - t_start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
