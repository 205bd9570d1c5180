"""A tiny bitmap font for the viewer's stats line, built in numpy at start (no font files).

Glyphs are 5 x 7 pixels in cells of :data:`CELL_WIDTH` x :data:`CELL_HEIGHT` (one blank column on
the right, one blank row above and below). Upper-case letters, digits and a little punctuation;
text is upper-cased, and any other character is drawn as ``?``.

The same atlas and the same lookup drive both the GL text pass (``viewer_text.frag.glsl``) and
:func:`render_text`, its numpy counterpart.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["CELL_HEIGHT", "CELL_WIDTH", "GLYPHS", "font_atlas", "glyph_indices", "render_text"]

CELL_WIDTH, CELL_HEIGHT = 6, 9
_GLYPH_WIDTH, _GLYPH_HEIGHT = 5, 7

#: Seven rows of five pixels per character, ``#`` = ink. Index 0 (space) fills unused text slots.
GLYPHS: dict[str, str] = {
    " ": "..... ..... ..... ..... ..... ..... .....",
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "##### ...#. ..#.. ...#. ....# #...# .###.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ...#. .##..",
    "A": ".###. #...# #...# ##### #...# #...# #...#",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "D": "###.. #..#. #...# #...# #...# #..#. ###..",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####",
    "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#",
    "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",
    "Z": "##### ....# ...#. ..#.. .#... #.... #####",
    ".": "..... ..... ..... ..... ..... .##.. .##..",
    ",": "..... ..... ..... ..... .##.. ..#.. .#...",
    ":": "..... .##.. .##.. ..... .##.. .##.. .....",
    "-": "..... ..... ..... ##### ..... ..... .....",
    "+": "..... ..#.. ..#.. ##### ..#.. ..#.. .....",
    "=": "..... ..... ##### ..... ##### ..... .....",
    "/": "..... ....# ...#. ..#.. .#... #.... .....",
    "%": "##... ##..# ...#. ..#.. .#... #..## ...##",
    "(": "...#. ..#.. .#... .#... .#... ..#.. ...#.",
    ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",
    "|": "..#.. ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "_": "..... ..... ..... ..... ..... ..... #####",
    "?": ".###. #...# ....# ...#. ..#.. ..... ..#..",
}
_INDEX = {char: index for index, char in enumerate(GLYPHS)}
_UNKNOWN = _INDEX["?"]


@functools.cache
def font_atlas() -> np.ndarray:
    """uint8 ``(CELL_HEIGHT, CELL_WIDTH * len(GLYPHS))``: glyph ``i`` in columns ``6i .. 6i+5``.

    255 = ink, 0 = blank; row 0 = top. Read-only (shared).
    """
    atlas = np.zeros((CELL_HEIGHT, CELL_WIDTH * len(GLYPHS)), np.uint8)
    for index, rows in enumerate(GLYPHS.values()):
        bits = np.array([[c == "#" for c in row] for row in rows.split()], bool)
        atlas[1 : 1 + _GLYPH_HEIGHT, CELL_WIDTH * index : CELL_WIDTH * index + _GLYPH_WIDTH] = bits * 255
    atlas.flags.writeable = False
    return atlas


def glyph_indices(text: str, length: int) -> np.ndarray:
    """uint8 ``(length,)``: the glyph index of each character of ``text`` upper-cased, padded with
    spaces (index 0) or cut to ``length``."""
    indices = np.zeros(length, np.uint8)
    for slot, char in enumerate(text.upper()[:length]):
        indices[slot] = _INDEX.get(char, _UNKNOWN)
    return indices


def render_text(indices: np.ndarray, width: int, scale: int) -> np.ndarray:
    """bool ``(CELL_HEIGHT * scale, width)``: where ink falls for the glyph ``indices`` drawn from
    column 0, each font pixel a ``scale`` x ``scale`` block; columns past the last slot are blank."""
    x = np.arange(width)
    y = np.arange(CELL_HEIGHT * scale)
    slot = x // (CELL_WIDTH * scale)
    inside = slot < len(indices)
    glyph = indices[np.minimum(slot, len(indices) - 1)].astype(np.intp)
    column = glyph * CELL_WIDTH + (x % (CELL_WIDTH * scale)) // scale
    ink = font_atlas()[(y // scale)[:, None], column[None, :]] > 0
    return ink & inside[None, :]
