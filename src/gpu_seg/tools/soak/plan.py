"""What a soak run does besides frames: idle periods, output-size churn, the forced fallback."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["AUTO_RELEASE_GRACE_S", "IDLE_RELEASES", "ChurnSizes", "IdlePlan"]

#: How the processor lets go of its GL objects during an idle period:
#: ``trim``: ``pp.trim()``; ``trim-context``: ``pp.trim(release_context=True)``; ``auto``: the
#: processor's own ``idle_release_after``; ``auto-context``: the same with
#: ``idle_release_context=True``.
IDLE_RELEASES = ("trim", "trim-context", "auto", "auto-context")
#: Extra seconds an idle period waits for an automatic release that is late (a loaded machine).
AUTO_RELEASE_GRACE_S = 5.0


@dataclass(frozen=True)
class IdlePlan:
    """Every ``every`` soak frames the processor gets no frame for ``seconds``, and lets go of its
    GL objects by ``release`` (one of :data:`IDLE_RELEASES`).

    With an automatic release the processor is created with ``idle_release_after = seconds / 2``,
    so the release falls inside the idle period.
    """

    seconds: float
    every: int
    release: str = "auto-context"

    def __post_init__(self) -> None:
        if not (self.seconds > 0 and math.isfinite(self.seconds)):
            raise ValueError(f"idle seconds must be a positive number, got {self.seconds}")
        if self.every < 1:
            raise ValueError(f"idle_every must be at least 1, got {self.every}")
        if self.release not in IDLE_RELEASES:
            raise ValueError(f"idle release must be one of {', '.join(IDLE_RELEASES)}, got {self.release!r}")

    @property
    def automatic(self) -> bool:
        return self.release.startswith("auto")

    @property
    def releases_context(self) -> bool:
        return self.release.endswith("context")

    @property
    def release_after(self) -> float:
        """The processor's ``idle_release_after`` in the automatic modes."""
        return self.seconds / 2

    def processor_options(self) -> dict[str, Any]:
        """Keyword arguments of the processor for this plan."""
        if not self.automatic:
            return {}
        return {"idle_release_after": self.release_after, "idle_release_context": self.releases_context}

    def due(self, soak_frame: int) -> bool:
        """An idle period comes before soak frame ``soak_frame``."""
        return soak_frame > 0 and soak_frame % self.every == 0


class ChurnSizes:
    """Seeded random output sizes, each side between a quarter and twice the nominal size.

    The sizes come from a generator of their own (seeded by ``seed``), so the tensors of a churn
    run are those of the same run without churn.
    """

    MIN_FRACTION = 0.25
    MAX_FACTOR = 2

    def __init__(self, output_size: tuple[int, int], seed: int) -> None:
        width, height = output_size
        self.min_size = (
            max(1, math.ceil(width * self.MIN_FRACTION)),
            max(1, math.ceil(height * self.MIN_FRACTION)),
        )
        self.max_size = (width * self.MAX_FACTOR, height * self.MAX_FACTOR)
        self._rng = np.random.default_rng([seed & 0xFFFFFFFF, 0x636875726E])  # "churn"
        self.seen: set[tuple[int, int]] = set()

    def __call__(self) -> tuple[int, int]:
        size = (
            int(self._rng.integers(self.min_size[0], self.max_size[0] + 1)),
            int(self._rng.integers(self.min_size[1], self.max_size[1] + 1)),
        )
        self.seen.add(size)
        return size
