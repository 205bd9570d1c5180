"""CPU-side planning of a GL frame: no GL calls here, only numbers and numpy.

* :class:`GLLimits`: what the driver allows (read once per context generation).
* :class:`TensorLayout`: how an ``(H, W, C)`` tensor lies in its texture.
* :class:`ConfidencePlan`: how the separable resize is split into row chunks and MRT passes.
* :data:`TEXTURE_FORMATS`: texture dtype and ``OUTPUT_FORMAT`` (``encode.glsl``) per confidence format.
* Resize lookup tables, the align-corners scale of the category pass, and the block/rectangle
  arithmetic of the category shortcut (:func:`block_ranges`, :func:`unsure_rectangles`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import moderngl
import numpy as np

from ..errors import InputError
from ..frame import ConfidenceFormat
from ..sampling import align_corners_taps, identity_taps, resize_taps

__all__ = [
    "TEXTURE_FORMATS",
    "BlockRanges",
    "ConfidencePass",
    "ConfidencePlan",
    "GLLimits",
    "TensorLayout",
    "TextureFormat",
    "align_corners_scale",
    "block_ranges",
    "quads",
    "resize_tables",
    "shared_columns",
    "unsure_rectangles",
]


@dataclass(frozen=True)
class GLLimits:
    """What the driver allows, read once per context generation."""

    max_texture_size: int
    max_outputs_per_pass: int

    @classmethod
    def query(cls, ctx: moderngl.Context) -> GLLimits:
        info = ctx.info
        viewport = info.get("GL_MAX_VIEWPORT_DIMS", (1 << 30, 1 << 30))
        size = min(int(info["GL_MAX_TEXTURE_SIZE"]), int(min(viewport)))
        outputs = min(
            8, int(info.get("GL_MAX_DRAW_BUFFERS", 8)), int(info.get("GL_MAX_COLOR_ATTACHMENTS", 8))
        )
        return cls(max_texture_size=size, max_outputs_per_pass=outputs)


@dataclass(frozen=True)
class TensorLayout:
    """How an ``(H, W, C)`` tensor lies in its texture (see ``shaders/tensor_layout.glsl``).

    ``lanes`` channels per texel (1, 2 or 4), ``groups = ceil(C / lanes)`` texels per pixel,
    pixels in row-major order on lines of ``line`` texels. Unwrapped, ``line = W * groups`` and
    the texture rows are the tensor rows, so a tensor whose C is 1, 2 or a multiple of 4 is
    uploaded straight from the caller's memory.
    """

    width: int
    height: int
    channels: int
    lanes: int
    groups: int
    line: int
    lines: int
    wrapped: bool

    @classmethod
    def for_tensor(cls, height: int, width: int, channels: int, max_texture_size: int) -> TensorLayout:
        lanes = channels if channels <= 2 else 4
        groups = math.ceil(channels / lanes)
        texels = width * groups
        if height > max_texture_size:
            raise InputError("tensor", f"height {height} exceeds the GL texture limit of {max_texture_size}")
        if texels <= max_texture_size:
            return cls(width, height, channels, lanes, groups, texels, height, False)
        line = (max_texture_size // groups) * groups
        lines = math.ceil(width * height * groups / line) if line else max_texture_size + 1
        if line == 0 or lines > max_texture_size:
            raise InputError(
                "tensor",
                f"shape ({height}, {width}, {channels}) does not fit in a GL texture "
                f"(limit {max_texture_size} x {max_texture_size} texels of {lanes} channels)",
            )
        return cls(width, height, channels, lanes, groups, line, lines, True)

    @classmethod
    def check_fits(
        cls, height: int, width: int, channels: int, max_texture_size: int, softmax_statistics: bool
    ) -> TensorLayout:
        """:meth:`for_tensor`, for the processors' validation with the context's real limit, and the
        width checked too where the frame needs the softmax statistics (softmax confidence masks):
        a texture at tensor resolution (``width x height``) whatever the layout of the tensor
        texture. (The pipeline tests force smaller limits to get wrapped layouts of wide tensors.)

        Raises:
            InputError: (argument ``"tensor"``) the tensor does not fit.
        """
        if softmax_statistics and width > max_texture_size:
            raise InputError(
                "tensor",
                f"width {width} exceeds the GL texture limit of {max_texture_size} (softmax confidence "
                "masks need a texture of the tensor's size)",
            )
        return cls.for_tensor(height, width, channels, max_texture_size)

    @property
    def padded(self) -> bool:
        """Whether uploading needs a staging copy (zero lanes or a wrapped tail)."""
        return self.wrapped or self.lanes * self.groups != self.channels

    @property
    def texels(self) -> int:
        """Texels of the tensor texture (``line * lines``)."""
        return self.line * self.lines

    def params(self) -> dict[str, object]:
        return {
            "TENSOR_W": self.width,
            "TENSOR_H": self.height,
            "CHANNELS": self.channels,
            "LANES": self.lanes,
            "GROUPS": self.groups,
            "LINE": self.line,
            "WRAPPED": self.wrapped,
        }

    def padded_view(self, staging: np.ndarray) -> np.ndarray:
        """The ``(H, W, C)`` part of a flat float32 staging array holding the whole texture."""
        pixels = staging[: self.height * self.width * self.groups * self.lanes]
        return pixels.reshape(self.height, self.width, self.groups * self.lanes)[..., : self.channels]


@dataclass(frozen=True)
class TextureFormat:
    """How masks of one :class:`~gpu_seg.frame.ConfidenceFormat` are stored in GL."""

    texture_dtype: str  # moderngl dtype of the R texture
    output_format: int  # OUTPUT_FORMAT of encode.glsl


#: Confidence formats: float16 is written as its bits (R16UI) and uint8 as R8UI, by encode.glsl.
TEXTURE_FORMATS: dict[ConfidenceFormat, TextureFormat] = {
    ConfidenceFormat.FLOAT32: TextureFormat("f4", 0),
    ConfidenceFormat.FLOAT16: TextureFormat("u2", 1),
    ConfidenceFormat.UINT8: TextureFormat("u1", 2),
}


@dataclass(frozen=True)
class ConfidencePass:
    """One vertical (MRT) pass: which rows chunk it reads and which channels it writes."""

    chunk_first: int  # first group of the horizontal-pass chunk this pass reads
    local_first: int  # its first group within that chunk (contiguous mode)
    channels: tuple[int, ...]  # the channels written, one per attachment
    targets: tuple[int, ...]  # the confidence textures they go to
    select: bool  # channels given one by one (u_channel) rather than as consecutive groups


@dataclass(frozen=True)
class ConfidencePlan:
    """How the separable resize is split into horizontal passes (chunks of groups) and MRT passes.

    The horizontal pass writes ``chunk_groups`` groups of tensor rows into one texture of
    ``height * chunk_groups`` rows; each vertical pass reads them and writes up to 8 channels.
    ``channels`` are the masks returned, in order (None: every channel); with a subset that fits
    one chunk only those are computed (``select``), otherwise every channel is computed and the
    subset read back.
    """

    chunk_groups: int
    passes: tuple[ConfidencePass, ...]
    textures: int  # confidence textures needed
    sources: tuple[int, ...]  # the texture read back for each returned mask, in order

    @classmethod
    def build(
        cls, layout: TensorLayout, limits: GLLimits, channels: tuple[int, ...] | None
    ) -> ConfidencePlan:
        per_pass = max(1, limits.max_outputs_per_pass // layout.lanes) * layout.lanes
        chunk = min(layout.groups, limits.max_texture_size // layout.height)
        pass_groups = per_pass // layout.lanes
        if chunk >= pass_groups:
            chunk -= chunk % pass_groups
        else:
            pass_groups, per_pass = chunk, chunk * layout.lanes
        if channels is not None and chunk == layout.groups:  # only the selected channels
            passes = tuple(
                ConfidencePass(
                    0, 0, channels[i : i + per_pass], tuple(range(i, min(len(channels), i + per_pass))), True
                )
                for i in range(0, len(channels), per_pass)
            )
            return cls(chunk, passes, len(channels), tuple(range(len(channels))))
        passes = []  # every channel, texture c for channel c
        for chunk_first in range(0, layout.groups, chunk):
            chunk_end = min(layout.groups, chunk_first + chunk)
            for first in range(chunk_first, chunk_end, pass_groups):
                written = tuple(
                    range(
                        first * layout.lanes,
                        min(layout.channels, min(chunk_end, first + pass_groups) * layout.lanes),
                    )
                )
                passes.append(ConfidencePass(chunk_first, first - chunk_first, written, written, False))
        sources = tuple(range(layout.channels)) if channels is None else channels
        return cls(chunk, tuple(passes), layout.channels, sources)

    #: Plans with at most this many passes get programs with compile-time offsets (a few percent
    #: faster on llvmpipe); longer ones share one program with uniform offsets, so that a frame
    #: never needs more programs than the program cache keeps.
    MAX_CONSTANT_PASSES = 8

    @property
    def constant_offsets(self) -> bool:
        """Whether the chunk and group offsets are compiled into the programs (one per pass)."""
        return len(self.passes) <= self.MAX_CONSTANT_PASSES

    def attachment_of(self, texture: int) -> tuple[int, int]:
        """``(pass index, attachment index)`` of the pass that writes confidence texture ``texture``."""
        for index, step in enumerate(self.passes):
            if texture in step.targets:
                return index, step.targets.index(texture)
        raise KeyError(texture)


def _lut(columns: list[np.ndarray]) -> np.ndarray:
    """Stack per-row/column values into an ``(n, 4)`` float32 lookup table (indices as floats)."""
    table = np.zeros((columns[0].shape[0], 4), np.float32)
    for i, column in enumerate(columns):
        table[:, i] = column
    return table


def resize_tables(layout: TensorLayout, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(x0, x1, w0, w1)`` per output column and ``(y0, y1, w0, w1)`` per output row.

    OpenCV ``INTER_LINEAR`` taps (half-pixel centres, :mod:`gpu_seg.sampling`); identity when the
    output size is the tensor size.
    """
    if (layout.width, layout.height) == (width, height):
        tx, ty = identity_taps(width), identity_taps(height)
    else:
        tx, ty = resize_taps(layout.width, width, "x"), resize_taps(layout.height, height, "y")
    return _lut([tx.i0, tx.i1, tx.w0, tx.w1]), _lut([ty.i0, ty.i1, ty.w0, ty.w1])


def align_corners_scale(in_size: int, out_size: int) -> float:
    """The float32 scale of :func:`gpu_seg.sampling.align_corners_taps`, as the shader gets it."""
    return 0.0 if out_size == 1 else float(np.float32(in_size - 1) / np.float32(out_size - 1))


def shared_columns(in_width: int, out_width: int) -> int:
    """Input columns 4 adjacent output pixels can touch (0: too many to share, fetch per pixel).

    The pixels span ``3 * scale`` input units, so their taps lie in ``floor(3 * scale) + 2``
    columns; one more covers float32 rounding of the positions.
    """
    span = math.floor(3 * align_corners_scale(in_width, out_width)) + 3
    return span if span <= 5 else 0


def quads(width: int) -> int:
    """Texels of a packed category row: 4 pixels each."""
    return -(-width // 4)


#: Per axis (x, then y): first cell of each block, and the output pixels ``[start, end)`` of each block.
BlockRanges = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def block_ranges(layout: TensorLayout, width: int, height: int, block_pixels: tuple[int, int]) -> BlockRanges:
    """Per axis: first cell of each block of cells, and the output pixels ``[start, end)`` of each block.

    Output pixel p belongs to the cell of its first align-corners tap; a block groups enough
    consecutive cells to span about ``block_pixels`` output pixels.
    """
    result = []
    for cells, out, target in (
        (layout.width, width, block_pixels[0]),
        (layout.height, height, block_pixels[1]),
    ):
        first_tap = align_corners_taps(cells, out).i0
        per_block = max(1, round(target * cells / out))
        starts = np.arange(0, cells, per_block)
        ends = np.minimum(starts + per_block, cells)
        ranges = np.stack(
            [np.searchsorted(first_tap, starts, "left"), np.searchsorted(first_tap, ends, "left")], -1
        )
        result.append((starts, ranges.astype(np.int64)))
    return result[0], result[1]


def max_rectangles(layout: TensorLayout) -> int:
    """An upper bound of the rectangles :func:`unsure_rectangles` returns (one per cell)."""
    return layout.width * layout.height


def unsure_rectangles(
    cells: np.ndarray, blocks: BlockRanges, width: int, height: int, max_fraction: float
) -> tuple[np.ndarray | None, float]:
    """Rectangles covering the output pixels of the unsure cells (class ``< 0`` in ``cells``).

    Cells are grouped into the blocks of :func:`block_ranges` and horizontally adjacent unsure
    blocks are merged: llvmpipe shades 4x4-pixel blocks and pays per triangle, so a few wide
    rectangles cost far less than many cell-sized ones. Coordinates are in texels of the packed
    category target (4 pixels wide) and rows.

    Returns:
        float32 ``(n, 12)`` corners (two triangles per rectangle), or None when there are none or
        they would cover more than ``max_fraction`` of the target; and the fraction covered.
    """
    (bx, xr), (by, yr) = blocks
    unsure = cells < 0
    merged = np.logical_or.reduceat(np.logical_or.reduceat(unsure, by, axis=0), bx, axis=1)
    row, start, end = _runs(merged)
    if not len(row):
        return None, 0.0
    x0, x1 = xr[start, 0] // 4, -(-xr[end - 1, 1] // 4)
    y0, y1 = yr[row, 0], yr[row, 1]
    covered = float(np.sum((x1 - x0) * (y1 - y0))) / (quads(width) * height)
    if covered > max_fraction:
        return None, covered
    x0, x1, y0, y1 = (a.astype(np.float32) for a in (x0, x1, y0, y1))
    corners = np.stack([x0, y0, x1, y0, x0, y1, x0, y1, x1, y0, x1, y1], axis=-1)
    return np.ascontiguousarray(corners, np.float32), covered


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, start and end (exclusive) of every horizontal run of True in a 2-D bool array."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    return rows, starts, ends
