"""The gpu_seg exception hierarchy.

Every error gpu_seg raises on purpose derives from :class:`GpuSegError`. Argument errors are
also :class:`ValueError` subclasses, so ``except ValueError`` keeps working for callers that do
not know gpu_seg.
"""

from __future__ import annotations

__all__ = [
    "CapacityError",
    "ClosedError",
    "ContextLostError",
    "ExpiredResultError",
    "ForkedProcessError",
    "GLError",
    "GLUnavailableError",
    "GpuSegError",
    "InputError",
    "ShaderBuildError",
]


class GpuSegError(Exception):
    """Base class of every exception raised by gpu_seg."""


class InputError(GpuSegError, ValueError):
    """An argument is invalid: wrong shape, dtype, size or option.

    ``argument`` names the offending argument (``"tensor"``, ``"output_size"``, ...).
    """

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")
        self.argument = argument
        self.message = message

    def __reduce__(self) -> tuple:  # pickled whole (Ray sends a worker's errors to the driver)
        return type(self), (self.argument, self.message), self.__dict__


class ClosedError(GpuSegError, RuntimeError):
    """The processor was used after :meth:`close`."""


class GLUnavailableError(GpuSegError, RuntimeError):
    """No usable OpenGL context could be created or attached."""


class ForkedProcessError(GLUnavailableError):
    """GL cannot be used in this process: it was forked after an ancestor loaded EGL.

    A GL driver's state does not survive ``fork``. CPU frames work in such a process; for GL in
    worker processes, use multiprocessing's ``"spawn"`` or ``"forkserver"`` start method. See
    :mod:`gpu_seg.forks`.
    """


class ContextLostError(GpuSegError, RuntimeError):
    """The GL context was lost and the frame could not be recomputed on the GPU.

    ``reason`` says how the loss was detected.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple:
        return type(self), (str(self), self.reason), self.__dict__


class GLError(GpuSegError, RuntimeError):
    """A GL call failed on a healthy context (for example ``GL_OUT_OF_MEMORY``): not a loss, so
    not recomputed elsewhere; with ``backend="gl"`` the frame raises it."""


class ShaderBuildError(GpuSegError, RuntimeError):
    """A shader failed to compile or link on a healthy context.

    ``log`` holds the driver's info log and ``source`` the line-numbered source.
    """

    def __init__(self, program: str, log: str, source: str = "") -> None:
        message = f"program {program!r} failed to build on a healthy context:\n{log}"
        if source:
            message += f"\n--- source ---\n{source}"
        super().__init__(message)
        self.program = program
        self.log = log
        self.source = source

    def __reduce__(self) -> tuple:
        return type(self), (self.program, self.log, self.source), self.__dict__


class ExpiredResultError(GpuSegError, RuntimeError):
    """A result that lends GPU or mapped memory was used after its lifetime ended.

    Zero-copy views, GPU-resident textures and pending (in-flight) frames each document when they
    end (released, superseded by a later frame, collected, or the processor closed). Using them
    afterwards raises this instead of returning data that may have been overwritten. A result
    whose context generation died raises :class:`ContextLostError` instead.
    """


class CapacityError(GpuSegError, RuntimeError):
    """A bounded pool is full: too many frames in flight, or too many zero-copy results still held.

    Collect pending frames (``PendingFrame.result()``) or release zero-copy results (and drop
    the arrays taken from them) first. The message says which limit was reached.
    """
