#!/usr/bin/env python
"""Draw the bundled demo dataset (``data/demo``) with Pillow only.

The dataset is tiny (10 samples, 2 per category) and exists so the harness,
its loader and its tests can run end to end without downloading anything.
Every image is drawn procedurally from fixed coordinates: there is no
randomness, no font and no timestamp, so rerunning this script regenerates
byte-identical files (for a given Pillow/zlib build).

Usage::

    python scripts/make_demo_data.py [--out data/demo]

Image modes are deliberately mixed to exercise the loader: one RGBA source with
a transparent background, one grayscale ("L"), one palette ("P"), the rest RGB.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from PIL import Image, ImageDraw

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "data" / "demo"

# Everything is drawn at SS times the final size and downsampled with LANCZOS,
# which gives smooth (anti-aliased) edges and stays deterministic.
SS = 4


class Canvas:
    """A supersampled drawing surface that takes coordinates in final pixels."""

    def __init__(self, width: int, height: int, background, mode: str = "RGB"):
        self.size = (width, height)
        self.mode = mode
        self.img = Image.new(mode, (width * SS, height * SS), background)
        self.draw = ImageDraw.Draw(self.img)

    @staticmethod
    def _s(values):
        return [round(v * SS) for v in values]

    def rect(self, box, fill, outline=None, width=0):
        self.draw.rectangle(self._s(box), fill=fill, outline=outline, width=round(width * SS))

    def rrect(self, box, radius, fill, outline=None, width=0):
        self.draw.rounded_rectangle(
            self._s(box), radius=round(radius * SS), fill=fill, outline=outline, width=round(width * SS)
        )

    def ellipse(self, box, fill, outline=None, width=0):
        self.draw.ellipse(self._s(box), fill=fill, outline=outline, width=round(width * SS))

    def circle(self, cx, cy, r, fill, outline=None, width=0):
        self.ellipse((cx - r, cy - r, cx + r, cy + r), fill, outline, width)

    def poly(self, points, fill, outline=None, width=0):
        pts = [tuple(self._s(p)) for p in points]
        self.draw.polygon(pts, fill=fill, outline=outline, width=round(width * SS) if outline else 0)

    def line(self, points, fill, width=1):
        pts = [tuple(self._s(p)) for p in points]
        self.draw.line(pts, fill=fill, width=max(1, round(width * SS)), joint="curve")

    def arc(self, box, start, end, fill, width=1):
        self.draw.arc(self._s(box), start, end, fill=fill, width=max(1, round(width * SS)))

    def chord(self, box, start, end, fill):
        self.draw.chord(self._s(box), start, end, fill=fill)

    def finish(self) -> Image.Image:
        return self.img.resize(self.size, Image.Resampling.LANCZOS)


# --------------------------------------------------------------------------
# Scene pieces shared by a source image and its reference image.
# --------------------------------------------------------------------------

WALL = (236, 228, 212)
TABLE_TOP = (176, 122, 74)
TABLE_EDGE = (132, 86, 48)


def _kitchen_table(c: Canvas, w: int, h: int, top: int) -> None:
    c.rect((0, 0, w, top), WALL)
    c.rect((0, top, w, h), TABLE_TOP)
    c.rect((0, top, w, top + 3), TABLE_EDGE)
    for y in (top + 14, top + 27, top + 38):  # wood grain
        c.line([(6, y), (w * 0.45, y + 1), (w - 8, y - 1)], (160, 108, 64), 0.8)


def physics_ice_cube(puddle: bool = False) -> Image.Image:
    w, h = 192, 128
    c = Canvas(w, h, WALL)
    _kitchen_table(c, w, h, 80)
    if not puddle:
        # soft shadow, then an isometric cube: front, right side, top
        c.ellipse((70, 94, 134, 104), (150, 102, 60))
        c.poly([(78, 58), (112, 58), (112, 98), (78, 98)], (188, 224, 244), (86, 146, 186), 1)
        c.poly([(112, 58), (126, 48), (126, 88), (112, 98)], (150, 200, 232), (86, 146, 186), 1)
        c.poly([(78, 58), (92, 48), (126, 48), (112, 58)], (226, 244, 255), (86, 146, 186), 1)
        c.line([(83, 64), (83, 84)], (255, 255, 255), 2.2)  # glints
        c.line([(88, 63), (96, 63)], (255, 255, 255), 1.6)
        c.line([(117, 60), (117, 76)], (214, 236, 250), 1.4)
    else:
        # the cube is gone: a flat, irregular puddle of water where it stood
        c.ellipse((58, 92, 140, 110), (150, 186, 206))
        c.ellipse((100, 88, 150, 104), (150, 186, 206))
        c.ellipse((66, 95, 132, 107), (170, 206, 226))
        c.ellipse((76, 97, 100, 101), (236, 248, 255))  # reflection
        c.ellipse((112, 93, 130, 96), (236, 248, 255))
        c.ellipse((150, 104, 156, 107), (160, 196, 216))  # droplets
        c.ellipse((44, 100, 49, 103), (160, 196, 216))
    return c.finish()


def physics_candle() -> Image.Image:
    w, h = 104, 176
    c = Canvas(w, h, (40, 44, 66))
    c.circle(52, 46, 34, (58, 58, 74))  # glow
    c.circle(52, 46, 22, (80, 74, 80))
    c.rect((0, 154, w, h), (92, 66, 50))  # shelf
    c.ellipse((18, 146, 86, 160), (186, 186, 196), (120, 120, 134), 1)  # saucer
    c.rect((36, 62, 68, 152), (246, 238, 214))  # candle body
    c.rect((60, 62, 68, 152), (226, 214, 186))  # shaded side
    c.ellipse((36, 58, 68, 66), (252, 246, 228))  # top
    c.ellipse((34, 147, 70, 156), (236, 226, 198))  # base
    c.line([(52, 62), (52, 54)], (40, 30, 26), 1.5)  # wick
    c.ellipse((45, 26, 59, 56), (246, 140, 40))  # flame
    c.ellipse((48, 36, 56, 54), (255, 222, 90))
    c.ellipse((50, 44, 54, 53), (255, 250, 220))
    return c.finish()


def _house(c: Canvas, x: int, y: int, w: int, h: int, wall, roof, window, door=(120, 72, 44)) -> None:
    c.rect((x, y, x + w, y + h), wall, (90, 70, 60), 0.8)
    c.poly([(x - 6, y), (x + w / 2, y - h * 0.7), (x + w + 6, y)], roof, (90, 50, 40), 0.8)
    c.rect((x + w * 0.14, y + h * 0.25, x + w * 0.40, y + h * 0.55), window, (90, 70, 60), 0.8)
    c.rect((x + w * 0.58, y + h * 0.38, x + w * 0.82, y + h), door)


def environment_summer() -> Image.Image:
    w, h = 200, 120
    c = Canvas(w, h, (120, 186, 238))
    c.rect((0, 0, w, 30), (100, 170, 232))  # deeper blue high up
    for i in range(8):  # sun rays
        a = i * math.pi / 4
        c.line([(168 + 18 * math.cos(a), 24 + 18 * math.sin(a)), (168 + 25 * math.cos(a), 24 + 25 * math.sin(a))],
               (255, 214, 60), 2)
    c.circle(168, 24, 13, (255, 222, 70))
    c.ellipse((28, 14, 64, 28), (250, 250, 252))  # cloud
    c.ellipse((44, 8, 76, 26), (250, 250, 252))
    c.rect((0, 82, w, h), (104, 178, 72))  # grass
    c.ellipse((-20, 74, 90, 96), (116, 190, 80))
    c.rect((40, 56, 48, 90), (112, 74, 44))  # tree trunk
    c.circle(44, 50, 20, (54, 140, 58))
    c.circle(32, 58, 13, (62, 152, 64))
    c.circle(57, 58, 13, (62, 152, 64))
    _house(c, 112, 60, 44, 32, (244, 226, 190), (190, 60, 48), (170, 214, 240))
    c.poly([(140, 120), (150, 120), (145, 92), (142, 92)], (214, 196, 150))  # path
    for x in (84, 96, 176, 188):  # flowers
        c.circle(x, 104, 2.2, (250, 90, 120))
    return c.finish()


def environment_village(night: bool = False) -> Image.Image:
    w, h = 176, 112
    sky = (18, 26, 58) if night else (150, 204, 244)
    c = Canvas(w, h, sky)
    if night:
        for x, y in ((14, 10), (40, 22), (70, 8), (96, 28), (122, 12), (60, 40), (20, 44), (108, 46)):
            c.circle(x, y, 0.9, (240, 240, 210))
        c.circle(150, 20, 10, (240, 236, 200))  # crescent moon
        c.circle(155, 16, 9, sky)
        hill_far, hill, path, lamp_post = (28, 50, 48), (22, 44, 38), (58, 58, 62), (30, 30, 36)
        wall, roof, window = (70, 64, 70), (70, 36, 36), (255, 210, 90)
    else:
        c.circle(30, 22, 11, (255, 228, 90))  # sun
        hill_far, hill, path, lamp_post = (126, 188, 96), (98, 168, 70), (196, 184, 160), (60, 60, 66)
        wall, roof, window = (236, 220, 196), (150, 76, 54), (176, 214, 236)
    c.ellipse((-40, 58, 110, 110), hill_far)
    c.ellipse((60, 54, 230, 116), hill_far)
    c.rect((0, 80, w, h), hill)
    c.poly([(0, 100), (w, 92), (w, 104), (0, 112)], path)  # road
    _house(c, 44, 56, 40, 30, wall, roof, window)
    # street lamp
    c.rect((128, 44, 131, 96), lamp_post)
    c.line([(129.5, 46), (140, 46)], lamp_post, 2)
    if night:
        c.poly([(134, 50), (146, 50), (156, 98), (124, 98)], (60, 62, 60))  # light cone
        c.ellipse((124, 92, 158, 102), (120, 112, 70))
        c.ellipse((40, 84, 90, 92), (52, 66, 50))  # glow from windows
    c.poly([(135, 46), (145, 46), (147, 52), (133, 52)], (255, 226, 120) if night else (210, 210, 200),
           lamp_post, 0.8)
    return c.finish()


def social_smiley() -> Image.Image:
    """A smiling face on a fully transparent background (RGBA)."""
    w = h = 128
    c = Canvas(w, h, (0, 0, 0, 0), mode="RGBA")
    c.circle(64, 64, 54, (255, 210, 60, 255), (200, 140, 20, 255), 2)
    c.ellipse((42, 38, 54, 58), (50, 36, 30, 255))  # eyes
    c.ellipse((74, 38, 86, 58), (50, 36, 30, 255))
    c.circle(46, 44, 2.4, (255, 255, 255, 255))
    c.circle(78, 44, 2.4, (255, 255, 255, 255))
    c.arc((34, 40, 94, 96), 25, 155, (120, 40, 30, 255), 4)  # smile
    c.ellipse((26, 66, 40, 76), (250, 150, 110, 255))  # cheeks
    c.ellipse((88, 66, 102, 76), (250, 150, 110, 255))
    c.arc((38, 26, 58, 38), 200, 330, (120, 80, 20, 255), 2.5)  # relaxed eyebrows
    c.arc((70, 26, 90, 38), 210, 340, (120, 80, 20, 255), 2.5)
    return c.finish()


def social_cake() -> Image.Image:
    w, h = 160, 144
    c = Canvas(w, h, (232, 226, 240))
    c.rect((0, 104, w, h), (150, 110, 150))  # tablecloth
    c.line([(0, 104), (w, 104)], (120, 84, 120), 1.5)
    c.ellipse((18, 110, 142, 134), (250, 250, 252), (180, 180, 190), 1)  # plate
    c.rect((32, 64, 128, 118), (240, 190, 200))  # plain cake, pink icing
    c.ellipse((32, 108, 128, 126), (240, 190, 200))
    c.rect((32, 84, 128, 92), (200, 140, 100))  # sponge layer band
    c.ellipse((32, 54, 128, 74), (252, 220, 228), (222, 160, 172), 1)  # top
    return c.finish()


def causal_plant() -> Image.Image:
    w, h = 120, 160
    c = Canvas(w, h, (226, 234, 240))
    c.rect((14, 8, 106, 100), (196, 226, 246), (250, 250, 250), 4)  # window
    c.line([(60, 8), (60, 100)], (250, 250, 250), 3)
    c.rect((0, 128, w, h), (236, 236, 232))  # windowsill
    c.rect((0, 128, w, 132), (200, 200, 196))
    c.poly([(36, 98), (84, 98), (78, 132), (42, 132)], (198, 104, 62))  # pot
    c.rect((32, 94, 88, 102), (214, 120, 76))
    c.ellipse((36, 92, 84, 98), (92, 62, 40))  # moist soil
    c.line([(60, 95), (60, 44), (58, 28)], (62, 130, 52), 2.5)  # stem
    leaf = (70, 164, 64)
    c.poly([(60, 78), (38, 66), (30, 70), (42, 80)], leaf)
    c.poly([(60, 70), (82, 56), (92, 60), (80, 72)], leaf)
    c.poly([(60, 56), (42, 42), (34, 44), (44, 56)], leaf)
    c.poly([(60, 48), (76, 34), (84, 36), (74, 48)], leaf)
    c.ellipse((50, 16, 66, 32), leaf)
    return c.finish()


def causal_balloon() -> Image.Image:
    """A red balloon on a string, stored as a palette ("P") image."""
    w, h = 96, 160
    sky, cloud, string = (172, 214, 244), (240, 246, 252), (70, 70, 76)
    red, dark_red, knot, shine = (222, 34, 44), (160, 20, 30), (190, 26, 36), (250, 150, 150)
    c = Canvas(w, h, sky)
    c.ellipse((10, 130, 60, 146), cloud)  # faint cloud
    c.line([(48, 88), (44, 110), (52, 130), (46, 160)], string, 1.4)  # string
    c.ellipse((22, 16, 74, 84), red, dark_red, 1)  # balloon
    c.poly([(44, 82), (52, 82), (54, 90), (42, 90)], knot)  # knot
    c.ellipse((32, 28, 42, 44), shine)  # shine
    rgb = c.finish()
    # Map onto a fixed palette (the pure colours plus a few edge blends) so the thin
    # grey string keeps its colour instead of being merged into the red by an adaptive palette.
    base = [sky, cloud, string, red, dark_red, knot, shine]
    blends = [(a, b, t) for a, b in ((sky, red), (sky, dark_red), (sky, string), (cloud, string), (red, shine),
                                     (red, dark_red), (sky, cloud)) for t in (1 / 3, 2 / 3)]
    colours = base + [tuple(round(x + (y - x) * t) for x, y in zip(a, b)) for a, b, t in blends]
    pal = Image.new("P", (1, 1))
    pal.putpalette([v for col in colours for v in col])
    return rgb.quantize(palette=pal, dither=Image.Dither.NONE)


def referential_cups(middle_red: bool = False) -> Image.Image:
    """Three identical cups; grayscale source, RGB reference with the middle one red."""
    w, h = 180, 100
    c = Canvas(w, h, (236, 236, 236))
    c.rect((0, 76, w, h), (178, 178, 178))  # table
    c.line([(0, 76), (w, 76)], (130, 130, 130), 1.2)
    for i, x in enumerate((22, 76, 130)):
        body, rim, edge = (214, 214, 214), (236, 236, 236), (110, 110, 110)
        if middle_red and i == 1:
            body, rim, edge = (212, 40, 40), (236, 90, 90), (130, 20, 20)
        c.arc((x + 22, 44, x + 40, 64), 270, 90, edge, 4)  # handle
        c.ellipse((x - 4, 76, x + 32, 82), (150, 150, 150))  # shadow
        c.poly([(x, 38), (x + 28, 38), (x + 25, 80), (x + 3, 80)], body, edge, 1)
        c.ellipse((x, 34, x + 28, 42), rim, edge, 1)
        c.ellipse((x + 3, 36, x + 25, 41), (70, 58, 50))  # coffee inside
    img = c.finish()
    return img if middle_red else img.convert("L")


def referential_shapes() -> Image.Image:
    w, h = 200, 96
    c = Canvas(w, h, (250, 248, 242))
    c.circle(28, 48, 18, (220, 50, 50))  # red circle
    c.rect((60, 31, 94, 65), (44, 92, 210))  # blue square
    c.poly([(124, 30), (144, 66), (104, 66)], (40, 164, 70))  # green triangle
    c.circle(174, 48, 18, (44, 92, 210))  # blue circle
    return c.finish()


# --------------------------------------------------------------------------
# The manifest. Order: id, category, instruction, source, [reference_text], [reference_image].
# --------------------------------------------------------------------------

SAMPLES = [
    {
        "id": "physics_01",
        "description": "An ice cube sits on a table.",
        "rationale": "Ice left in the midday sun melts into water; the cube should not survive an hour.",
        "category": "physics",
        "instruction": "Show this ice cube after it has sat in the midday sun for an hour.",
        "draw": physics_ice_cube,
        "reference_text": "The ice cube has melted completely: no cube remains, only a flat puddle of water "
                          "on the table where it stood.",
        "reference_draw": lambda: physics_ice_cube(puddle=True),
    },
    {
        "id": "physics_02",
        "description": "A lit candle stands on a saucer.",
        "rationale": "A candle burning for hours gets shorter and drips wax.",
        "category": "physics",
        "instruction": "Show this candle after it has been burning for three hours.",
        "draw": physics_candle,
        "reference_text": "The candle is much shorter, with melted wax dripping down its sides and pooled on "
                          "the saucer; a flame still burns on the shorter wick.",
    },
    {
        "id": "environment_01",
        "description": "A house with a leafy tree and flowers on a sunny summer day.",
        "rationale": "Deep winter changes the whole scene: ground, roof, tree and sky, not the sky alone.",
        "category": "environment",
        "instruction": "Turn this sunny summer day into the middle of winter after a heavy snowfall.",
        "draw": environment_summer,
        "reference_text": "Thick snow covers the ground and the house roof, the tree is bare of leaves with snow "
                          "on its branches, the flowers are gone and the sky is pale and overcast; the house "
                          "and tree stay where they were.",
    },
    {
        "id": "environment_02",
        "description": "A village street with a house and a street lamp in daylight.",
        "rationale": "At night the sky is dark and the lights come on.",
        "category": "environment",
        "instruction": "Change the time of day to late at night.",
        "draw": environment_village,
        "reference_text": "The sky is dark with a moon and stars instead of the sun, the whole scene is dim, and "
                          "the house windows and the street lamp glow and light the ground; the layout is "
                          "unchanged.",
        "reference_draw": lambda: environment_village(night=True),
    },
    {
        "id": "social_01",
        "description": "A smiling yellow face.",
        "rationale": "Sadness shows in the mouth, the eyebrows and perhaps a tear, on the same face.",
        "category": "social",
        "instruction": "Make this face look as if it has just heard some very sad news.",
        "draw": social_smiley,
        "reference_text": "The same yellow face now looks sad: the mouth curves downward, the eyebrows slant up "
                          "at the inner ends and a tear may run down a cheek; the face keeps its shape, size "
                          "and colour.",
    },
    {
        "id": "social_02",
        "description": "A plain cake on a plate.",
        "rationale": "A fifth birthday cake usually carries five candles and festive decoration.",
        "category": "social",
        "instruction": "Decorate this cake for a child's fifth birthday party.",
        "draw": social_cake,
        # deliberately no reference: the judge must rely on the instruction alone
    },
    {
        "id": "causal_01",
        "description": "A potted plant on a window sill.",
        "rationale": "Without water the plant wilts and dries out; the pot and sill stay.",
        "category": "causal",
        "instruction": "This plant has not been watered for a month. Show how it looks now.",
        "draw": causal_plant,
        "reference_text": "The plant is wilted: its stem droops, the leaves hang down brown and shrivelled with "
                          "some fallen onto the sill, and the soil is dry and cracked; the pot, window and "
                          "sill are unchanged.",
    },
    {
        "id": "causal_02",
        "description": "A red balloon on a string against the sky.",
        "rationale": "A pricked balloon bursts: show the result, not the pin.",
        "category": "causal",
        "instruction": "Someone has just pricked this balloon with a pin. Show the result.",
        "draw": causal_balloon,
        "reference_text": "The balloon has burst: only a few torn scraps of red rubber remain at the end of the "
                          "string, with no round balloon left; the sky and string are unchanged.",
    },
    {
        "id": "referential_01",
        "description": "Three grey cups stand in a row.",
        "rationale": "Only the second cup from the left may change.",
        "category": "referential",
        "instruction": "Make the second cup from the left red.",
        "draw": referential_cups,
        "reference_text": "Only the middle cup is red; the left and right cups stay grey, and all three cups "
                          "keep their shape and position.",
        "reference_draw": lambda: referential_cups(middle_red=True),
    },
    {
        "id": "referential_02",
        "description": "Two circles, a square and a triangle in different colours.",
        "rationale": "The target is found by its colour matching the square's.",
        "category": "referential",
        "instruction": "Remove the circle that has the same colour as the square.",
        "draw": referential_shapes,
        "reference_text": "The blue circle on the right is gone and plain background shows in its place; the "
                          "red circle, the blue square and the green triangle are unchanged.",
    },
]

README = """\
# Demo dataset

A tiny bundled dataset (10 samples, 2 per category: physics, environment,
social, causal, referential) so the benchmark can run end to end offline, e.g.
as a smoke test. It is not meant to produce meaningful scores.

Everything here was drawn by `scripts/make_demo_data.py` (Pillow only, no
randomness); rerunning `python scripts/make_demo_data.py [--out data/demo]`
regenerates identical files. Image modes are mixed on purpose (RGB, one RGBA
with a transparent background, one grayscale "L", one palette "P") to exercise
the image loader.

`manifest.jsonl` holds one JSON object per line (and `re_edit.json` the same samples in RE-Edit's own file
format: the source image as base64 text, `subset` one of RE-Edit's five dimensions, a short description of
the source and the task's challenge):

- `id`: unique sample id, e.g. `physics_01`
- `category`: one of the categories above (selects the judge rubric)
- `instruction`: the edit instruction given to the editing model
- `source_image`: path of the image to edit, relative to the manifest
- `reference_text` (optional): a sentence describing what a correct edit shows
- `reference_image` (optional): path, relative to the manifest, of an image
  showing a correct result

License: same as the project.
"""


# The harness's categories as RE-Edit's subsets (its five reasoning dimensions).
RE_EDIT_SUBSETS = {"physics": "physical", "environment": "environmental", "social": "cultural", "causal": "causal",
                   "referential": "referential"}


def re_edit_records(out: Path) -> list[dict]:
    """The same samples in RE-Edit's own file format (a JSON list; the source image as base64 text; the id from
    the image path's stem), to try `--dataset_format re_edit --protocol re_edit` offline."""
    import base64

    return [{"original_image_path": f"images/{s['id']}.png", "subset": RE_EDIT_SUBSETS[s["category"]],
             "src_img_b64": base64.b64encode((out / "images" / f"{s['id']}.png").read_bytes()).decode("ascii"),
             "edit_instruction_en": s["instruction"], "original_description_en": s["description"],
             "rationale_short_en": s["rationale"]} for s in SAMPLES]


def save_png(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output directory (default: {DEFAULT_OUT.relative_to(REPO_ROOT)})")
    args = parser.parse_args(argv)
    out: Path = args.out
    (out / "images").mkdir(parents=True, exist_ok=True)

    lines = []
    for sample in SAMPLES:
        record = {
            "id": sample["id"],
            "category": sample["category"],
            "instruction": sample["instruction"],
            "source_image": f"images/{sample['id']}.png",
        }
        save_png(sample["draw"](), out / record["source_image"])
        if "reference_text" in sample:
            record["reference_text"] = sample["reference_text"]
        if "reference_draw" in sample:
            record["reference_image"] = f"images/{sample['id']}_ref.png"
            save_png(sample["reference_draw"](), out / record["reference_image"])
        lines.append(json.dumps(record, ensure_ascii=False))

    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "re_edit.json").write_text(json.dumps(re_edit_records(out), ensure_ascii=False, indent=1) + "\n",
                                      encoding="utf-8")
    (out / "README.md").write_text(README, encoding="utf-8")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {len(lines)} samples to {out} ({total / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
