"""``backend="auto"`` on a software rasteriser: GL or the fast CPU path, whichever is faster.

On llvmpipe, softpipe or SwiftShader the "GPU" is the same CPU cores, and the fast CPU path is
often faster than rasterising. For each frame configuration (tensor shape, output size,
activation, outputs, format, channels) the processor measures once: the configuration's 2nd frame
runs timed on GL, its 3rd timed on the CPU (both within the parity bar; the 1st warms both paths
up), and later frames take the faster. The two paths' sigmoid and softmax confidences differ in the
last bits (the GL ``exp`` is the driver's; up to about 2e-7): a configuration's first frames and
later ones may differ that much for the same tensor; category masks agree (but for saturated
multi-class sigmoid near ties: README, Semantics). The timed frames first wait, untimed, for the
fast path's warm-up (compiling after an install takes seconds): a CPU frame would wait for it
anyway, and a GL frame would share the cores with it.
Configurations seen fewer than three times (an application that changes the output size every
frame) stay on GL. At most :data:`CAPACITY` configurations are remembered
(least recently used first out). Hardware GPUs are never second-guessed.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Hashable

from .frame import Frame
from .gl.pipeline import is_software_renderer

__all__ = ["CAPACITY", "Route", "SpeedChoice", "frame_key", "is_software_renderer"]

#: Configurations remembered per processor.
CAPACITY = 32


def frame_key(frame: Frame) -> Hashable:
    """What makes two frames the same configuration for the speed choice."""
    return (
        frame.tensor.shape,
        frame.width,
        frame.height,
        frame.activation,
        frame.confidence_channels,
        frame.category,
        frame.confidence_format,
    )


class Route(enum.Enum):
    GL = "gl"
    CPU = "cpu"
    TIME_GL = "time-gl"  #: run on GL and report the time
    TIME_CPU = "time-cpu"  #: run on the CPU and report the time


class _Entry:
    __slots__ = ("cpu_seconds", "gl_seconds", "seen")

    def __init__(self) -> None:
        self.seen = 0
        self.gl_seconds: float | None = None
        self.cpu_seconds: float | None = None

    @property
    def decided(self) -> Route | None:
        if self.gl_seconds is None or self.cpu_seconds is None:
            return None
        return Route.CPU if self.cpu_seconds < self.gl_seconds else Route.GL


class SpeedChoice:
    """The per-configuration measurements and decisions of one processor (not thread-safe: the
    processor calls it under its lock)."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()

    def route(self, key: Hashable) -> Route:
        """Where the next frame of configuration ``key`` runs."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        entry.seen += 1
        decided = entry.decided
        if decided is not None:
            return decided
        if entry.seen == 2 or (entry.seen > 2 and entry.gl_seconds is None):
            return Route.TIME_GL
        if entry.seen >= 3:
            return Route.TIME_CPU
        return Route.GL

    def record(self, key: Hashable, route: Route, seconds: float) -> None:
        """The time a TIME_GL or TIME_CPU frame took."""
        entry = self._entries.get(key)
        if entry is None:
            return
        if route is Route.TIME_GL:
            entry.gl_seconds = seconds
        elif route is Route.TIME_CPU:
            entry.cpu_seconds = seconds

    def summary(self) -> dict[str, int]:
        """How many remembered configurations run on GL and on the CPU, and how many are undecided."""
        counts = {"gl": 0, "cpu": 0, "undecided": 0}
        for entry in self._entries.values():
            decided = entry.decided
            counts["undecided" if decided is None else decided.value] += 1
        return counts
