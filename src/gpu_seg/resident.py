"""GPU-resident results: GL tensors in, masks as GL textures out (``process_resident``).

Public names: :class:`GLTensor` (a tensor held by a GL buffer or texture) and
:class:`ResidentMasks` (the textures of one frame, lent like MediaPipe's ``MPMask``).

Lifetime (one *lease* per processor): a :class:`ResidentMasks` is valid until the next frame of
its processor (``process``, ``process_view``, ``submit``, ``process_resident``, ``process_cuda``),
its :meth:`~ResidentMasks.release`, or the processor's ``trim()``/``close()``; afterwards every access raises
:class:`~gpu_seg.errors.ExpiredResultError`. If the frame's context generation was lost, access
raises :class:`~gpu_seg.errors.ContextLostError` instead (compute the frame again). The textures are
the processor's pooled ones (no GL allocation per frame): never release or resize them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import moderngl
import numpy as np

from .errors import ContextLostError, ExpiredResultError, GLUnavailableError, InputError
from .frame import ConfidenceFormat, Frame
from .gl.pipeline import RELEASED_WITH_A_LOSS, TensorLayout
from .gl.resident import GLSource, ResidentImages, SourceLostError, names_an_object
from .gl.session import GLSession, released
from .inputs import parse_channels, parse_output_size, positive_int
from .supervisor import Generation, GLSupervisor, Verdict

if TYPE_CHECKING:
    from .postprocessor import SegmentationPostprocessor

__all__ = ["GLTensor", "Lease", "ResidentMasks"]

_TEXTURE_DTYPES = ("f4", "f2")


class GLTensor:
    """A float ``(H, W, C)`` model output held by a GL object, for ``process_resident``.

    Args:
        source: a ``moderngl.Buffer`` holding at least ``H * W * C`` float32 values in HWC order
            (channel-interleaved, row 0 = top: the bytes of ``tensor.tobytes()`` for a C-contiguous
            float32 numpy tensor), or a 2-D ``moderngl.Texture`` of ``(W, H)`` texels with ``C <= 4``
            float components (``"f4"`` or ``"f2"``), texel ``(x, y)`` = pixel ``(x, y)``, texture row
            0 = tensor row 0 (as ``Texture.write(tensor)`` lays it out).
        shape: ``(H, W, C)``, ``(H, W)`` (C = 1) or ``(1, H, W, C)``. Required for a buffer; for a
            texture it defaults to ``(height, width, components)`` and must match them.

    The object must belong to the processor's GL context: in attached mode a context of the
    application (pass ``context=ctx`` to the processor for a strict identity check); in owned mode
    create it through :meth:`SegmentationPostprocessor.run_gl <gpu_seg.SegmentationPostprocessor.run_gl>`.
    Objects of a generation that is gone raise :class:`~gpu_seg.errors.ContextLostError`.

    Raises:
        InputError: (argument ``"tensor"``) wrong object type, shape, texture format, a buffer
            smaller than the shape needs, or a released object; at the frame also a buffer
            re-specified smaller since, or a texture whose swizzle moves its channels.
        ContextLostError: (``SourceLostError``) an object released with its context generation
            (a result's texture kept past a loss, or past its owned context's release).
    """

    def __init__(
        self, source: moderngl.Buffer | moderngl.Texture, shape: Sequence[int] | None = None
    ) -> None:
        if isinstance(source, (moderngl.Buffer, moderngl.Texture)) and released(source):
            if _lost_with_its_generation(source):
                raise SourceLostError(
                    f"the {type(source).__name__} given belongs to a context that is gone (a lost context "
                    "generation, or one released by trim(release_context=True) or close()); upload the "
                    "tensor again",
                    reason="input from a dead generation",
                )
            raise InputError(
                "tensor",
                f"the {type(source).__name__} given was released (by the application, or by gpu_seg with "
                "the context generation it was lent from)",
            )
        if isinstance(source, moderngl.Buffer):
            if shape is None:
                raise InputError("tensor", "a GLTensor over a buffer needs its shape=(H, W, C)")
            height, width, channels = _parse_shape(shape)
            _check_buffer_size(source, (height, width, channels))
        elif isinstance(source, moderngl.Texture):
            height, width, channels = _check_texture(source, shape)
        else:
            raise InputError(
                "tensor",
                f"a GLTensor holds a moderngl.Buffer or moderngl.Texture, not {type(source).__name__}",
            )
        self.source = source
        self._shape = (height, width, channels)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(H, W, C)``, checked against the object (read-only)."""
        return self._shape

    @property
    def kind(self) -> str:
        """``"buffer"`` or ``"texture"``."""
        return "texture" if isinstance(self.source, moderngl.Texture) else "buffer"

    def __repr__(self) -> str:
        return f"<GLTensor {self.kind} glo={self.source.glo} shape={self.shape}>"


def _parse_shape(shape: object) -> tuple[int, int, int]:
    try:
        dims = tuple(shape)  # type: ignore[arg-type]
    except TypeError:
        raise InputError("tensor", f"shape {shape!r} is not a sequence of ints") from None
    if len(dims) == 4:
        if dims[0] != 1:
            raise InputError("tensor", f"batch size {dims[0]} in shape {dims}; only batch 1 is supported")
        dims = dims[1:]
    if len(dims) == 2:
        dims = (*dims, 1)
    if len(dims) != 3:
        raise InputError("tensor", f"shape {dims} is not (H, W), (H, W, C) or (1, H, W, C)")
    height, width, channels = (positive_int(d, "tensor") for d in dims)
    return height, width, channels


def _check_buffer_size(buffer: moderngl.Buffer, shape: tuple[int, int, int]) -> None:
    """A buffer too small for ``shape`` (when the GLTensor is made, and at each frame: the
    application may have re-specified the buffer since, e.g. ``Buffer.orphan(size)``)."""
    needed = int(np.prod(shape)) * 4
    if buffer.size < needed:
        raise InputError(
            "tensor", f"the buffer holds {buffer.size} bytes; float32 shape {shape} needs {needed}"
        )


def _check_texture(texture: moderngl.Texture, shape: object) -> tuple[int, int, int]:
    if texture.samples or texture.depth or texture.dtype not in _TEXTURE_DTYPES:
        raise InputError(
            "tensor",
            f"a GLTensor texture must be a float texture ({' or '.join(_TEXTURE_DTYPES)}, not multisampled, "
            f"not depth); got dtype {texture.dtype!r}, samples {texture.samples}, depth {texture.depth}",
        )
    expected = (texture.height, texture.width, texture.components)
    if shape is not None and _parse_shape(shape) != expected:
        raise InputError(
            "tensor",
            f"shape {tuple(shape)} does not match the texture: {texture.width}x{texture.height} texels of "  # type: ignore[arg-type]
            f"{texture.components} components is (H, W, C) = {expected}",
        )
    return expected


def _lost_with_its_generation(obj: moderngl.Buffer | moderngl.Texture) -> bool:
    """Whether a released object went with its context generation (a loss, or an owned context
    released), not on its own (``trim()``, the application)."""
    return obj in RELEASED_WITH_A_LOSS or released(getattr(obj, "ctx", None))


def device_frame(
    pp: SegmentationPostprocessor, shape: tuple[int, int, int], output_size: object, max_dim: int
) -> Frame:
    """The :class:`Frame` of a tensor on the GPU (GL or CUDA): its data stay there, so ``Frame.tensor``
    is a read-only zero-strided placeholder of the right shape (never computed on; such frames
    never go to the CPU)."""
    height, width, channels = shape
    out_width, out_height = parse_output_size(output_size, (height, width), max_dim)
    confidence = pp.output_confidence_masks
    frame = Frame(
        tensor=np.broadcast_to(np.zeros((), np.float32), (height, width, channels)),
        width=out_width,
        height=out_height,
        activation=pp.activation,
        confidence_channels=parse_channels(pp.confidence_channels, channels) if confidence else None,
        category=pp.output_category_mask,
        confidence_format=pp.confidence_format,
    )
    TensorLayout.check_fits(height, width, channels, max_dim, frame.softmax_statistics)  # else InputError
    return frame


def resolve_source(supervisor: GLSupervisor, generation: Generation, tensor: GLTensor) -> GLSource:
    """The :class:`GLSource` of ``tensor`` on ``generation``, checked without GL calls.

    Raises:
        InputError: released object, or an object of a context that is not the processor's.
        SourceLostError: an object of an earlier generation of this processor.
    """
    obj = tensor.source
    ctx = obj.ctx
    number = None if ctx is generation.session.mgl else supervisor.contexts.get(ctx)
    if released(obj) and number is None:
        if _lost_with_its_generation(obj):
            raise SourceLostError(
                f"the GLTensor's {tensor.kind} went with a context generation that is gone; upload the "
                "tensor again",
                reason="input from a dead generation",
            )
        raise InputError("tensor", f"the {tensor.kind} of this GLTensor was released")
    if isinstance(obj, moderngl.Buffer):
        _check_buffer_size(obj, tensor.shape)
    source = GLSource("texture" if tensor.kind == "texture" else "hwc", obj, *tensor.shape)
    if ctx is generation.session.mgl:
        return source
    if number is not None:
        raise SourceLostError(
            f"the GLTensor's {tensor.kind} belongs to context generation {number}, which is gone "
            f"(the current one is {generation.number}); upload the tensor again",
            reason="input from a dead generation",
        )
    if generation.session.owned:
        raise InputError(
            "tensor",
            "the GLTensor's object belongs to another GL context; an owned processor only takes objects "
            "created in its own context (see SegmentationPostprocessor.run_gl)",
        )
    if generation.session.strict_identity:
        raise InputError(
            "tensor",
            "the GLTensor's object belongs to another moderngl context than the one given to the processor "
            "(context=ctx); for objects of contexts that share with it, attach with context='current'",
        )
    return source  # attached to the current context through another moderngl wrapper: checked on GL


def _checked_on_gl(source: GLSource, generation: Generation) -> GLSource:
    if source.obj.ctx is not generation.session.mgl and not names_an_object(source):
        raise InputError(
            "tensor",
            f"the GLTensor's {source.kind} (name {source.obj.glo}) is not an object of the attached context",
        )
    if isinstance(source.obj, moderngl.Texture):
        channels = source.channels
        swizzle = source.obj.swizzle  # the texture's state: it would permute the channels the passes read
        if swizzle[:channels] != "RGBA"[:channels]:
            raise InputError(
                "tensor",
                f"the GLTensor's texture has swizzle {swizzle!r}, which would permute its channels; set "
                f"texture.swizzle = 'RGBA' (gpu_seg reads channels as stored)",
            )
    return source


class Lease:
    """The lifetime of one frame's lent GPU results (see the module docstring)."""

    __slots__ = ("ended", "generation", "session")

    def __init__(self, session: GLSession, generation: int) -> None:
        self.session = session
        self.generation = generation
        self.ended: str | None = None

    def check(self) -> None:
        """Raise if the results may no longer be used."""
        if self.session.lost:
            raise ContextLostError(
                f"these GPU-resident results belong to context generation {self.generation}, which was "
                "lost; compute the frame again",
                reason="results of a lost generation",
            )
        if self.ended is not None:
            raise ExpiredResultError(f"these GPU-resident results are no longer valid: {self.ended}")

    def end(self, why: str) -> None:
        if self.ended is None:
            self.ended = why

    @property
    def valid(self) -> bool:
        return self.ended is None and not self.session.lost


class ResidentMasks:
    """One frame's masks as GL textures of the processor's context, lent until the next frame.

    All textures are of exactly ``(width, height)`` texels, texel ``(x, y)`` = mask pixel
    ``(x, y)``, texture row 0 = mask row 0 (the top row of the image, as numpy rows; when drawing
    with GL's bottom-up texture coordinates, flip v). Use ``texelFetch`` (integer formats need it).

    Attributes (each access checks the lease: :class:`~gpu_seg.errors.ExpiredResultError` after
    the lifetime, :class:`~gpu_seg.errors.ContextLostError` if the generation was lost):
        confidence_textures: one single-component texture per mask, or None when not requested:
            R32F (``confidence_dtype`` float32), R16UI holding float16 bits (float16: sample with
            a ``usampler2D`` and ``unpackHalf2x16``) or R8UI (uint8).
        category_texture: R8UI class indices (``usampler2D``; one-class models 0 = foreground,
            255 = background), or None when not requested.
    """

    def __init__(
        self,
        pp: SegmentationPostprocessor,
        lease: Lease,
        images: ResidentImages,
        confidence_format: ConfidenceFormat,
    ) -> None:
        self._pp = pp
        self._lease = lease
        self._images = images
        self.width = images.width
        self.height = images.height
        self.confidence_format = confidence_format
        self.generation = lease.generation
        self.backend = "gl"

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return (self.width, self.height)

    @property
    def valid(self) -> bool:
        """Whether the textures may still be used (False once expired or found lost)."""
        return self._lease.valid

    @property
    def confidence_textures(self) -> tuple[moderngl.Texture, ...] | None:
        self._lease.check()
        return self._images.confidence or None

    @property
    def category_texture(self) -> moderngl.Texture | None:
        self._lease.check()
        return self._images.category

    def read_confidence(self) -> np.ndarray | None:
        """A host copy ``(masks, height, width)`` of the confidence dtype (for checks; a GPU sync)."""
        textures = self.confidence_textures
        if textures is None:
            return None
        dtype = self.confidence_format.dtype

        def read() -> np.ndarray:
            out = np.empty((len(textures), self.height, self.width), dtype)
            for plane, texture in zip(out, textures, strict=True):
                texture.read_into(plane, alignment=1)
            return out

        return self._pp._run_leased(self._lease, read)

    def read_category(self) -> np.ndarray | None:
        """A host copy ``(height, width)`` uint8 of the category mask (for checks; a GPU sync)."""
        texture = self.category_texture
        if texture is None:
            return None

        def read() -> np.ndarray:
            out = np.empty((self.height, self.width), np.uint8)
            texture.read_into(out, alignment=1)
            return out

        return self._pp._run_leased(self._lease, read)

    def release(self) -> None:
        """End the lease now (idempotent): the textures go back to the processor's pool."""
        self._lease.end("released")

    def __enter__(self) -> ResidentMasks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "valid" if self.valid else "ended"
        return f"<ResidentMasks {self.width}x{self.height} generation={self.generation} {state}>"


def process_resident(
    pp: SegmentationPostprocessor, tensor: object, output_size: object
) -> tuple[ResidentImages, Lease]:
    """The GL frame of ``SegmentationPostprocessor.process_resident``: its images and new lease."""
    supervisor = pp._supervisor
    if supervisor is None:
        raise GLUnavailableError("a processor created with backend='cpu' has no GL to keep results on")
    if isinstance(tensor, GLTensor):
        frame = device_frame(pp, tensor.shape, output_size, supervisor.max_texture_size or 1 << 14)
        gl_tensor: GLTensor | None = tensor
    else:
        frame = pp._frame(tensor, output_size, gl_only=True)
        gl_tensor = None
    return run_leased_frame(pp, functools.partial(_attempt, supervisor, frame, gl_tensor))


def _attempt(
    supervisor: GLSupervisor, frame: Frame, tensor: GLTensor | None, generation: Generation
) -> tuple[Generation, ResidentImages]:
    source = None if tensor is None else resolve_source(supervisor, generation, tensor)
    pipeline = generation.pipeline

    def work() -> ResidentImages:
        checked = None if source is None else _checked_on_gl(source, generation)
        return pipeline.submit_resident(frame, checked)

    return generation, generation.session.run(work)


def run_leased_frame(pp: SegmentationPostprocessor, work) -> tuple:
    """Run ``work(generation) -> (generation, payload)`` as a frame of ``pp`` that lends its results:
    ends the previous lease, retries across losses and backoff waits, returns ``(payload, lease)``."""
    supervisor = pp._supervisor
    assert supervisor is not None
    if pp._idle is not None:
        pp._idle.touch()
    while True:
        try:
            with pp._lock():
                pp._check_open()
                pp._end_lease("superseded by a later frame")
                verdict, delay, done = supervisor.run_resident(work)
                if verdict is Verdict.DONE:
                    generation, payload = done
                    lease = Lease(generation.session, generation.number)
                    pp._lease = lease
                    pp._frames += 1
                    pp._gl_frames += 1
        finally:
            pp._events.deliver()
        if verdict is Verdict.WAIT:
            time.sleep(delay)  # a deferred rebuild, without holding the lock
            continue
        return payload, lease
