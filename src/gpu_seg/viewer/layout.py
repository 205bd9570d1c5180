"""Where the picture and the stats bar go in the viewer's window.

The window is the picture (the frame, scaled down to fit ``max_window`` if it is larger, aspect
kept) with the stats bar below it, as wide as the picture. Regions are in framebuffer pixels, GL
convention (``y`` counts from the bottom): the bar is ``(0, 0, width, bar_height)``, the picture
sits on top of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .compositor import Region
from .font import CELL_HEIGHT

__all__ = ["Layout", "plan_layout"]

#: Pictures at least this wide draw the stats bar's font at twice the size.
LARGE_TEXT_WIDTH = 800


@dataclass(frozen=True)
class Layout:
    """The picture's size in the window and the stats bar's font scale."""

    picture_size: tuple[int, int]
    text_scale: int

    @property
    def bar_height(self) -> int:
        return CELL_HEIGHT * self.text_scale

    @property
    def window_size(self) -> tuple[int, int]:
        width, height = self.picture_size
        return width, height + self.bar_height

    @property
    def picture_region(self) -> Region:
        return (0, self.bar_height, *self.picture_size)

    @property
    def bar_region(self) -> Region:
        return (0, 0, self.picture_size[0], self.bar_height)

    def fitted(self, framebuffer_size: tuple[int, int]) -> Layout:
        """The same layout on the framebuffer the window really got (high-DPI screens)."""
        width, height = framebuffer_size
        return Layout((max(1, width), max(1, height - self.bar_height)), self.text_scale)


def plan_layout(image_size: tuple[int, int], max_window: tuple[int, int]) -> Layout:
    """The layout for frames of ``image_size`` (width, height) in a window of at most ``max_window``."""
    width, height = image_size
    factor = min(1.0, max_window[0] / width, max_window[1] / height)
    picture = (max(1, round(width * factor)), max(1, round(height * factor)))
    return Layout(picture, 2 if picture[0] >= LARGE_TEXT_WIDTH else 1)
