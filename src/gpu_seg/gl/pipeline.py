"""The GL passes of one frame.

Data flow (see ``shaders/*.glsl`` for the maths, and :mod:`gpu_seg.reference` for the spec)::

    tensor (H, W, C) --upload--> tensor texture (TensorLayout, channel-interleaved, no transpose)
      category:   [cell_class.frag -> cell_uniform.frag -> category_fill.frag, then only unsure blocks:]
                  category.frag      raw logits -> align-corners lerp -> [sigmoid] -> argmax or
                                     one-class threshold -> R32UI (4 px)
      confidence: [softmax_stats.frag] -> [activate.frag] at tensor resolution (skipped for "none")
                  -> resize_rows.frag -> resize_columns.frag   OpenCV INTER_LINEAR, separable, up to 8
                  masks per pass (MRT), stored as float32, float16 bits or uint8 (encode.glsl)
    -> read back into the caller's arrays (only the outputs asked for)

    passes="compute" (:mod:`.compute`, GL 4.3): the same arithmetic as compute shaders writing
    storage buffers: category.comp (packed rows), resize_rows.comp -> resize_columns.comp (every
    float32 mask in one dispatch, planes back to back; float16/uint8 masks into R16UI/R8UI
    textures by image stores); read back as buffer ranges (or those textures). The softmax
    statistics and the activation run as compute shaders too (the same texel function, stored
    into the same textures as images)

The modules around this one: :mod:`.plan` (CPU-side planning: layouts, chunks, tables,
rectangles), :mod:`.compute` (the compute forms of the heavy passes), :mod:`.slots` (pooled GL
objects, built all at once), :mod:`.upload` and
:mod:`.readback` (how bytes cross to and from the GPU), :mod:`.programs` (the program cache).
Every GL object is created for one context generation and kept in bounded pools, so steady-state
frames allocate no GL objects. A new generation gets a new pipeline; the old one is either
released (healthy context) or abandoned (lost context: no GL calls on dead handles).

A frame, step by step (:meth:`GLPipeline.process` does all three)::

    ticket = pipeline.submit(frame)             # GL: upload, passes, start the readback
    pipeline.wait(ticket)                       # GL: the results are in host memory
    pipeline.collect(confidence_out, category_out, ticket)
        # "mapped": a host copy, no GL call (may run after the owner's health check)
        # "direct": GL reads straight into the arrays (pipeline.collect_needs_gl is True)
    # or, "mapped" only: confidence, category = pipeline.lend(ticket)   (views, no copy)

With ``"mapped"``, several frames may be submitted before the first is waited for (frames in
flight: each has its own buffer of the readback ring, see :mod:`.readback`).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable

import moderngl
import numpy as np

from ..errors import CapacityError, InputError
from ..frame import ConfidenceFormat, Frame
from ..types import Activation
from . import rawgl
from .compute import ComputePasses, compute_available
from .plan import (
    TEXTURE_FORMATS,
    ConfidencePlan,
    GLLimits,
    TensorLayout,
    align_corners_scale,
    block_ranges,
    quads,
    shared_columns,
    unsure_rectangles,
)
from .programs import ProgramCache, ProgramDefinition, bind_inputs
from .readback import DirectReadback, FrameReadout, ImageRead, MappedReadback, Purpose, Read, Readback
from .resident import GLSource, ResidentImages, run_resident
from .slots import (
    CategoryPart,
    CellsPart,
    ConfidencePart,
    ObjectBuilder,
    OutputKind,
    OutputPool,
    OutputSlot,
    Target,
    TensorPool,
    TensorSlot,
    write_resize_tables,
)
from .upload import DirectUpload, MappedUpload, Upload

__all__ = [
    "PASSES",
    "RELEASED_WITH_A_LOSS",
    "STRATEGIES",
    "GLLimits",
    "GLPipeline",
    "TensorLayout",
    "is_software_renderer",
]

#: The pooled GL objects (textures of results among them) released with a lost context generation,
#: held weakly: one an application kept past the loss is told from one it released itself.
RELEASED_WITH_A_LOSS: weakref.WeakSet[object] = weakref.WeakSet()

_VERTEX = "fullscreen.vert.glsl"
_ACTIVATION_CODE = {Activation.NONE: 0, Activation.SIGMOID: 1, Activation.SOFTMAX: 2}
#: Data-path strategies (readback and upload): see :mod:`.readback` and :mod:`.upload`.
STRATEGIES = ("direct", "mapped")
#: Forms of the heavy passes (resize, category): see :mod:`.compute`.
PASSES = ("fragment", "compute")
_SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "software rasterizer", "swiftshader", "lavapipe")


def is_software_renderer(renderer: str) -> bool:
    """Whether ``GL_RENDERER`` names a CPU rasterizer (Mesa llvmpipe/softpipe)."""
    name = renderer.lower()
    return any(word in name for word in _SOFTWARE_RENDERERS)


class GLPipeline:
    """Runs the passes of a frame on one context generation.

    The caller makes the context current and checks its health; the pipeline only issues GL
    calls. ``trim()`` frees the pooled objects and programs on a live context (the next frame
    recreates what it needs); ``release()`` frees everything; ``abandon()`` forgets everything
    without GL calls after a loss.

    Attributes:
        readback: ``"direct"`` or ``"mapped"`` (see :mod:`.readback`); chosen from the renderer
            (direct on llvmpipe, where it is fastest; mapped where ``GL_ARB_buffer_storage``
            exists on other renderers); may be set, takes effect at the next frame.
        upload: ``"direct"`` or ``"mapped"`` (see :mod:`.upload`), chosen and set likewise.
        passes: ``"fragment"`` or ``"compute"``: the form of the resize and category passes (see
            :mod:`.compute`; identical results). Chosen from the renderer: compute where GL 4.3
            compute shaders exist on a hardware GPU, fragment on software rasterisers (faster
            there, measured); may be set, takes effect at the next frame. Resident and CUDA frames
            (:meth:`submit_resident`) use them too (the textures they lend are filled from the
            storage buffers by compute shaders).
        category_shortcut: draw input cells whose class is certain as flat rectangles and
            interpolate only the other cells (exact; see ``shaders/cell_class.frag.glsl``). It
            costs a host round trip inside the frame, which pays on llvmpipe only: on by default
            there, off elsewhere. Used when the full pass would be expensive (``SHORTCUT_MIN_WORK``).
        last_category_strategy: what the last category pass did: ``("full", 1.0)`` or
            ``("cells", unsure fraction)``.
        objects_created: GL objects created for pooled slots so far (flat in steady state).
        last_resident_passes: which form the last resident frame ran (``ResidentImages.passes``:
            ``"compute"``, ``"fragment"``, ``"mixed"``, ``"none"``), None before the first.
        early_flush: ``glFlush`` after the upload and after the category pass, so a GPU starts on
            a frame while the host still issues its passes (off by default: a candidate, to be
            measured on a GPU with ``benchmarks/gpu_data_path.py``'s ``*-flush`` rows).
        stream_collect: owned frames into arrays of their own (mapped readback) are copied part by part
            as the GPU delivers them (:meth:`stream_into`; off by default: a candidate, measured
            by the ``gl-compute-stream`` row).
        parallel_upload: the mapped upload copies tensors of 1 MB or more into its buffer over a
            few threads (off by default: a candidate, measured by the ``gl-view-upload-threads``
            row; ``upload = "direct"`` is measured beside it by ``gl-view-upload-direct``).
        owned_views: owned frames (``process()`` without caller arrays, owned context, mapped
            readback) return writeable views of their readback buffer instead of copies, held
            like zero-copy views (the buffer is not reused while any array derived from them is
            alive); the readback buffers are then mapped for writing too. As with views, a held
            result keeps its buffer and the keeper context (not the context: a loss, a context
            release or ``close()`` ends that at once) until it goes. Off by default: a candidate,
            measured by the ``gl-compute-owned-views`` row; the setting belongs to the pipeline
            (a rebuilt generation starts without it, as with the other candidates).
    """

    #: Use the shortcut when output pixels x channel groups >= this many times the tensor's pixels.
    SHORTCUT_MIN_WORK = 16
    #: Above this fraction of unsure output pixels the plain full-screen pass is cheaper.
    SHORTCUT_MAX_UNSURE = 0.35
    #: Target size in output pixels (x, y) of the blocks of cells that are drawn as one rectangle.
    SHORTCUT_BLOCK = (16, 8)

    def __init__(
        self,
        ctx: moderngl.Context,
        programs: ProgramCache,
        max_texture_size: int | None = None,
        readback: str = "auto",
        passes: str = "auto",
        max_storage_block: int | None = None,
        max_images: int | None = None,
    ) -> None:
        self.ctx = ctx
        self.programs = programs
        self.limits = GLLimits.query(ctx)
        if max_texture_size is not None:  # tests force the wrapped tensor layout with a small limit
            self.limits = GLLimits(
                min(max_texture_size, self.limits.max_texture_size), self.limits.max_outputs_per_pass
            )
        self.renderer = str(ctx.info.get("GL_RENDERER", ""))
        software = is_software_renderer(self.renderer)
        # moderngl re-binds "the last bound framebuffer" when it creates one; if that one was
        # released meanwhile, the bind fails (GL_INVALID_OPERATION). Framebuffer 0 is always a
        # valid name, so frames end on it and nothing is released while one of ours is bound.
        self._idle = ctx.detect_framebuffer(0)
        self._tensors = TensorPool()
        self._outputs = OutputPool()
        self._gl = rawgl.gl_functions(ctx)
        self.compute_available = compute_available(ctx)
        self.passes = "compute" if self.compute_available and not software else "fragment"
        if passes != "auto":
            self._check_passes(passes)
            self.passes = passes
        default = "direct" if software or self._gl is None else "mapped"
        self.readback = self.upload = default
        if readback != "auto":
            self.readback = readback
        elif passes == "compute" and self._gl is not None:
            self.readback = "mapped"  # the compute passes asked for: only the mapped readback reads them
        self._readback: Readback = self._make_readback(self.readback)
        self._upload: Upload = self._make_upload(default)
        # max_storage_block, max_images: tests lower them to exercise split dispatches (and the
        # fragment fallback)
        self._compute = ComputePasses(ctx, programs, self._builder, max_storage_block, max_images)
        self.category_shortcut = software
        self.last_category_strategy: tuple[str, float] = ("full", 1.0)
        self.objects_created = 0
        self.last_resident_passes: str | None = None
        self.trims = 0  # see trim()
        #: Flush after the upload and after the category pass of a frame (see _flush_early). Off by
        #: default until measured on a GPU (``benchmarks/gpu_data_path.py`` rows ``*-flush``).
        self.early_flush = False
        #: Owned frames into arrays of their own, mapped readback: fence every few MB and copy each
        #: part as it arrives (:meth:`stream_into`) instead of all after one fence. Off by default
        #: until measured on a GPU (``benchmarks/gpu_data_path.py`` row ``gl-compute-stream``).
        self.stream_collect = False
        #: Copy large tensors into the mapped upload buffer over a few threads (a candidate, off
        #: until measured on a GPU: ``benchmarks/gpu_data_path.py`` row ``gl-view-upload-threads``).
        self.parallel_upload = False
        #: Owned frames as writeable views of their readback buffer (a candidate, off until measured
        #: on a GPU: ``benchmarks/gpu_data_path.py`` row ``gl-compute-owned-views``).
        self.owned_views = False
        #: Time each frame's GL work (upload, passes, the start of the readback) with one
        #: ``GL_TIME_ELAPSED`` query (one per generation, kept until the context goes); the result
        #: is ``last_gpu_ms`` after :meth:`wait`. Off by default.
        self.time_gpu = False
        self.last_gpu_ms: float | None = None
        self._timer: moderngl.Query | None = None
        self._timer_started = 0.0  # perf_counter() when the timed frame began
        #: Called with the GL objects about to be released (before any is deleted): the CUDA
        #: interop (:mod:`gpu_seg.cuda.interop`) unregisters the ones it registered.
        self.release_hooks: list[Callable[[list], None]] = []
        programs.on_evict(self._forget_program)

    # ----------------------------------------------------------------------------- frame
    def process(
        self, frame: Frame, confidence_out: np.ndarray | None, category_out: np.ndarray | None
    ) -> None:
        """Compute the frame's masks into the given arrays (``submit``, ``wait``, ``collect``).

        ``confidence_out``: ``(masks, height, width)`` of ``frame.confidence_format.dtype``,
        C-contiguous; ``category_out``: uint8 ``(height, width)``; each None exactly when the
        frame does not ask for it.
        """
        ticket = self.submit(frame)
        self.wait(ticket)
        self.collect(confidence_out, category_out, ticket)

    def submit(
        self, frame: Frame, purpose: Purpose = "sync", owner: object | None = None, stream: bool = False
    ) -> int:
        """Upload the tensor, run the passes and start reading the results back; returns a ticket.

        ``purpose`` (``"sync"``, ``"async"``: a frame in flight, ``"lend"``: results lent as views)
        and ``owner`` (an object whose garbage collection frees an uncollected frame's buffer)
        matter to the mapped readback's ring only. ``stream``: collect with :meth:`stream_into`
        (mapped readback). Raises CapacityError when the ring is full.
        """
        self._readback.check_capacity(purpose)
        if not self.time_gpu:
            return self._submit(frame, purpose, owner, stream)
        with self._start_timer():
            return self._submit(frame, purpose, owner, stream)

    def _submit(self, frame: Frame, purpose: Purpose, owner: object | None, stream: bool) -> int:
        layout = TensorLayout.for_tensor(*frame.tensor.shape, self.limits.max_texture_size)
        self._apply_strategies()
        slot = self._tensor_slot(layout)
        self._upload.threads = self.parallel_upload
        self._upload.upload(slot, frame.tensor)
        self._flush_early()
        confidence = frame.confidence_channels is not None
        fmt = frame.confidence_format if confidence else ConfidenceFormat.FLOAT32
        channels = None if not confidence or frame.all_channels else frame.confidence_channels
        output = self._output_slot(OutputKind(layout, fmt, channels), frame.width, frame.height)
        size = (frame.width, frame.height)
        self._check_passes(self.passes)
        # Compute passes write buffers, which only the mapped readback reads on every driver (the
        # NVIDIA driver refused to map them for the direct one: "cannot map the buffer").
        compute = self.passes == "compute" and self._readback.name == "mapped"
        # The category shortcut (llvmpipe's) lives in the fragment category pass.
        compute_category = compute and not self.category_shortcut
        category = None
        if frame.category:
            if compute_category and self._compute.fits_category(output):
                category = self._compute.category(slot, output, frame.activation, size)
            else:
                category = self._draw_category(slot, output, frame.activation, size)
            self._flush_early()
        planes: tuple[Read, ...] = ()
        if confidence:
            source = self._draw_activation(slot, frame.activation)
            if compute and self._compute.fits_confidence(output):
                planes = self._compute.confidence(slot, output, source, size)
            else:
                planes = self._draw_confidence(slot, output, source, size)
        self._idle.use()
        return self._readback.start(FrameReadout(planes, category, frame.width), purpose, owner, stream)

    def _flush_early(self) -> None:
        """``glFlush`` within a frame when :attr:`early_flush` is set: the GPU starts on the
        commands issued so far (the upload's transfer, the category pass) while the host issues
        the rest, instead of at the fence wait."""
        if self.early_flush and self._gl is not None:
            self._gl.glFlush()

    def submit_resident(
        self, frame: Frame, source: GLSource | None = None, lend_textures: bool = True
    ) -> ResidentImages:
        """Run the frame's passes and leave the results in textures (see :mod:`.resident`).

        ``source``: a GL-side tensor of this context, or None to upload ``frame.tensor``.
        ``lend_textures``: fill the textures a caller draws with (the R8UI category; for compute
        passes the confidence textures too, from the storage buffers); False when the caller copies
        the results itself (the CUDA path: from the buffers, or the fragment passes' textures). With
        ``passes == "compute"`` the compute passes run where :meth:`submit` would run them (float32
        masks, no category shortcut), whatever the readback. With ``time_gpu`` the GL work is timed
        like :meth:`submit` (``last_gpu_ms``, read at once: a wait).
        """
        if not self.time_gpu:
            images = run_resident(self, frame, source, lend_textures)
        else:
            with self._start_timer():
                images = run_resident(self, frame, source, lend_textures)
            self._read_timer()
        self.last_resident_passes = images.passes
        return images

    def wait(self, ticket: int | None = None) -> None:
        """Block until the submitted frame's results are in host memory (GL).

        ``ticket``: the frame (default: the last one submitted).
        """
        self._readback.wait(ticket)
        self._read_timer()

    def collect(
        self, confidence_out: np.ndarray | None, category_out: np.ndarray | None, ticket: int | None = None
    ) -> None:
        """Copy the submitted frame's results into the arrays (see :attr:`collect_needs_gl`)."""
        self._readback.collect(confidence_out, category_out, ticket)

    def stream_into(
        self, confidence_out: np.ndarray | None, category_out: np.ndarray | None, ticket: int | None = None
    ) -> None:
        """Wait for a frame submitted with ``stream=True`` and copy its results part by part as they
        arrive (GL: fence waits; the arrays are written before any health check, so only for
        arrays nobody sees before the frame is known good). See :meth:`MappedReadback.stream_into
        <gpu_seg.gl.readback.MappedReadback.stream_into>`."""
        if not isinstance(self._readback, MappedReadback):
            raise RuntimeError("stream_into() needs the mapped readback")
        self._readback.stream_into(confidence_out, category_out, ticket)
        self._read_timer()

    def _start_timer(self) -> moderngl.Query:
        """The generation's timer query (made on first use), its start time noted."""
        if self._timer is None:
            self._timer = self.ctx.query(time=True)
        self._timer_started = time.perf_counter()
        return self._timer

    def _read_timer(self) -> None:
        """``last_gpu_ms`` from the timer query (with :attr:`time_gpu`): None where the driver's
        answer cannot be the frame's GPU time, longer than the host's wall time since the query
        began (llvmpipe answers the first query of each context with garbage: 2**32 - 1 ns
        through moderngl's 32-bit read, which also saturates there)."""
        if not self.time_gpu or self._timer is None:
            return
        elapsed_ns = self._timer.elapsed
        wall_ns = (time.perf_counter() - self._timer_started) * 1e9
        plausible = elapsed_ns < 0xFFFFFFFF and elapsed_ns <= wall_ns * 1.01 + 50_000
        self.last_gpu_ms = elapsed_ns / 1e6 if plausible else None

    def lend(
        self, ticket: int | None = None, writeable: bool = False, anchor: object = None
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Read-only views of a waited-for frame's results in mapped memory (``"mapped"`` only);
        ``writeable`` ones for a frame submitted with :attr:`owned_views` on. ``anchor``: what
        keeps the memory mapped (the keeper context), kept alive as long as the views.

        The buffer is not reused while any array derived from them is alive (see :mod:`.readback`).
        """
        if not isinstance(self._readback, MappedReadback):
            raise RuntimeError("lend() needs the mapped readback")
        return self._readback.lend(ticket, writeable, anchor)

    def can_lend(self, purpose: Purpose) -> bool:
        """Whether a frame's results can be lent now for ``purpose`` (``"lend"``: views;
        ``"owned"``: an owned frame's writeable views): mapped readback, a buffer to spare."""
        if not self.lends or not isinstance(self._readback, MappedReadback):
            return False
        try:
            self._readback.check_capacity(purpose, collect_garbage=False)  # a question, asked every frame
        except CapacityError:
            return False
        return True

    def check_capacity(self, purpose: Purpose) -> None:
        """Raise CapacityError unless a frame of ``purpose`` can be submitted now."""
        self._readback.check_capacity(purpose)

    @property
    def lends(self) -> bool:
        """Whether the next frame's results can be lent as views and frames overlap ("mapped")."""
        return self.readback == "mapped" and self._gl is not None

    def lent_views(self) -> int:
        """Readback buffers held by lent views that are still referenced."""
        return self._readback.lent_views()

    @property
    def collect_needs_gl(self) -> bool:
        """Whether :meth:`collect` makes GL calls (``"direct"``) or only copies host memory (``"mapped"``)."""
        return self._readback.needs_gl

    def _apply_strategies(self) -> None:
        """Switch to the strategies named by ``readback`` and ``upload`` if they changed."""
        if self._readback.name != self.readback and not self._readback.lent_views():
            readback = self._make_readback(self.readback)
            self._idle.use()
            self._readback.release()
            self._readback = readback
            self.trims += 1  # frames in flight lost their buffers with the old strategy
        if isinstance(self._readback, MappedReadback):
            self._readback.writable = self.owned_views
        if self._upload.name != self.upload:
            upload = self._make_upload(self.upload)
            self._upload.release()
            self._upload = upload

    def _check_strategy(self, argument: str, name: str) -> None:
        if name not in STRATEGIES:
            raise InputError(argument, f"{name!r} is not one of {STRATEGIES}")
        if name == "mapped" and self._gl is None:
            raise InputError(argument, f"'mapped' needs GL_ARB_buffer_storage (renderer {self.renderer})")

    def _check_passes(self, name: str) -> None:
        if name not in PASSES:
            raise InputError("gl_passes", f"{name!r} is not one of {PASSES}")
        if name == "compute" and not self.compute_available:
            raise InputError(
                "gl_passes",
                f"'compute' needs GL 4.3 compute shaders ({self.renderer}, {self.ctx.version_code})",
            )

    def _make_readback(self, name: str) -> Readback:
        self._check_strategy("readback", name)
        return DirectReadback() if name == "direct" else MappedReadback(self.ctx, self._gl)

    def _make_upload(self, name: str) -> Upload:
        self._check_strategy("upload", name)
        return DirectUpload() if name == "direct" else MappedUpload(self.ctx, self._gl)

    # ----------------------------------------------------------------------------- passes
    def _draw(
        self,
        definition: ProgramDefinition,
        fbo: moderngl.Framebuffer,
        textures: dict,
        viewport: tuple[int, int] | None = None,
        **uniforms,
    ) -> None:
        """A full-screen pass (one triangle) into ``fbo``, over ``(0, 0, *viewport)`` or all of it."""
        program, vao = self.programs.vertex_array(definition)
        bind_inputs(program, textures, uniforms)
        fbo.viewport = (0, 0, *(viewport or fbo.size))
        fbo.use()
        vao.render(moderngl.TRIANGLES, vertices=3)

    # ----------------------------------------------------------------------------- category
    def _draw_category(
        self, slot: TensorSlot, output: OutputSlot, activation: Activation, size: tuple[int, int]
    ) -> ImageRead:
        layout = slot.layout
        width, height = size
        part = output.category or self._build_category(output)
        if part.size != size:
            part.blocks, part.size = None, size
        viewport = (quads(width), height)
        uniforms = {
            "u_scale_x": align_corners_scale(layout.width, width),
            "u_scale_y": align_corners_scale(layout.height, height),
            "u_width": width,
        }
        full = ProgramDefinition.of(
            _VERTEX,
            "category.frag.glsl",
            ACTIVATION=_ACTIVATION_CODE[activation],
            ONE_CLASS=layout.channels == 1,
            COLUMNS=shared_columns(layout.width, width),
            **layout.params(),
        )
        self.last_category_strategy = ("full", 1.0)
        drawn = False
        if self._use_category_shortcut(layout, activation, width, height):
            cells = self._draw_cell_classes(slot, activation)
            if part.blocks is None:
                part.blocks = block_ranges(layout, width, height, self.SHORTCUT_BLOCK)
            corners, unsure = unsure_rectangles(
                cells.host, part.blocks, width, height, self.SHORTCUT_MAX_UNSURE
            )
            if unsure <= self.SHORTCUT_MAX_UNSURE:
                self.last_category_strategy = ("cells", unsure)
                fill = ProgramDefinition.of(
                    _VERTEX, "category_fill.frag.glsl", TENSOR_W=layout.width, TENSOR_H=layout.height
                )
                self._draw(
                    fill, part.target.framebuffer, {"u_cells": cells.cells.texture}, viewport, **uniforms
                )
                if corners is not None:
                    self._draw_rectangles(full, part, corners, {"u_tensor": slot.texture}, uniforms, viewport)
                drawn = True
        if not drawn:
            self._draw(full, part.target.framebuffer, {"u_tensor": slot.texture}, viewport, **uniforms)
        exact = part.target.texture.size == viewport
        return ImageRead(
            part.target.texture, None if exact else part.target.framebuffer, 0, *viewport, "u4", 4
        )

    def _build_category(self, output: OutputSlot) -> CategoryPart:
        width, height = output.capacity
        with self._builder() as build:
            target = build.target((quads(width), height), 1, "u4")  # 4 pixels per R32UI texel
            rects = build.buffer(64 * 12 * 4)
        output.category = CategoryPart(target, rects)
        return output.category

    def _use_category_shortcut(
        self, layout: TensorLayout, activation: Activation, width: int, height: int
    ) -> bool:
        """Whether to try the cell shortcut (see ``shaders/cell_class.frag.glsl``).

        Its fixed cost (two passes at tensor resolution and a small readback) pays off when the
        full pass is expensive: many output pixels per input cell and several channel groups.
        """
        if not self.category_shortcut:
            return False
        if layout.channels > 1 and activation is Activation.SIGMOID:
            return False  # sigmoid saturation breaks the strict order the proof needs
        return width * height * layout.groups >= self.SHORTCUT_MIN_WORK * layout.width * layout.height

    def _draw_cell_classes(self, slot: TensorSlot, activation: Activation) -> CellsPart:
        """Per input cell: the class all its output pixels get, or -1; also read back to the CPU."""
        layout = slot.layout
        if slot.cells is None:
            size = (layout.width, layout.height)
            with self._builder() as build:
                # (class, lead, scale, 0) per texel; RGBA32F is renderable in every GL 3.3 context
                texels, cells = build.target(size, 4, "f4"), build.target(size, 1, "i4")
            slot.cells = CellsPart(texels, cells, np.empty((layout.height, layout.width), np.int32))
        part = slot.cells
        classes = ProgramDefinition.of(
            _VERTEX,
            "cell_class.frag.glsl",
            ACTIVATION=_ACTIVATION_CODE[activation],
            ONE_CLASS=layout.channels == 1,
            **layout.params(),
        )
        self._draw(classes, part.classes.framebuffer, {"u_tensor": slot.texture})
        cells = ProgramDefinition.of(
            _VERTEX, "cell_uniform.frag.glsl", TENSOR_W=layout.width, TENSOR_H=layout.height
        )
        self._draw(cells, part.cells.framebuffer, {"u_texels": part.classes.texture})
        part.cells.texture.read_into(part.host)
        return part

    def _draw_rectangles(
        self,
        definition: ProgramDefinition,
        part: CategoryPart,
        corners: np.ndarray,
        textures: dict,
        uniforms: dict,
        viewport: tuple[int, int],
    ) -> None:
        """Run ``definition``'s fragment shader over the rectangles (in texels of the target)."""
        if part.rects.size < corners.nbytes:
            part.rects.orphan(max(corners.nbytes, 2 * part.rects.size))  # same buffer, more storage
        part.rects.write(corners)
        rect_definition = ProgramDefinition("rectangles.vert.glsl", definition.fragment, definition.params)
        program = self.programs.get(rect_definition)
        if part.rects_vao is None or part.rects_vao.program is not program:
            if part.rects_vao is not None:
                part.rects_vao.release()
                part.rects_vao = None
            part.rects_vao = self.ctx.vertex_array(program, [(part.rects, "2f", "a_pixel")])
            self.objects_created += 1
        bind_inputs(program, textures, {**uniforms, "u_target_size": tuple(float(v) for v in viewport)})
        fbo = part.target.framebuffer
        fbo.viewport = (0, 0, *viewport)
        fbo.use()
        part.rects_vao.render(moderngl.TRIANGLES, vertices=6 * corners.shape[0])

    def _forget_program(self, program: moderngl.Program) -> None:
        """The program cache evicts ``program``: release the rectangle vertex arrays made for it."""
        for output in list(self._outputs.slots.values()):
            part = output.category
            if part is not None and part.rects_vao is not None and part.rects_vao.program is program:
                part.rects_vao.release()
                part.rects_vao = None

    # ----------------------------------------------------------------------------- confidence
    def _draw_activation(self, slot: TensorSlot, activation: Activation) -> moderngl.Texture:
        """Activated values at tensor resolution, in the tensor's layout (the tensor itself for none)."""
        if activation is Activation.NONE:
            return slot.texture
        layout = slot.layout
        if slot.activated is None:
            with self._builder() as build:
                activated = build.target((layout.line, layout.lines), layout.lanes)
            slot.activated = activated
        textures = {"u_tensor": slot.texture}
        if activation is Activation.SOFTMAX:
            if slot.stats is None:
                with self._builder() as build:
                    stats = build.target((layout.width, layout.height), 2)
                slot.stats = stats
            self._fill_texels("softmax_stats", slot.stats, {"u_tensor": slot.texture}, **layout.params())
            textures["u_stats"] = slot.stats.texture
        self._fill_texels(
            "activate", slot.activated, textures, ACTIVATION=_ACTIVATION_CODE[activation], **layout.params()
        )
        return slot.activated.texture

    def _fill_texels(self, shader: str, target: Target, textures: dict, **params: object) -> None:
        """A one-value-per-texel pass (``shaders/<shader>.glsl``) over all of ``target``: its compute
        form with ``passes == "compute"`` (no fragment pass: those are slow on Hopper), else its
        fragment form. The same function of the texel either way, so the same bits."""
        if self.passes == "compute":
            self._compute.fill_texels(shader, target.texture, textures, params)
        else:
            self._draw(
                ProgramDefinition.of(_VERTEX, f"{shader}.frag.glsl", **params), target.framebuffer, textures
            )

    def _build_confidence(self, output: OutputSlot) -> ConfidencePart:
        kind, (width, height) = output.kind, output.capacity
        layout = kind.layout
        plan = ConfidencePlan.build(layout, self.limits, kind.channels)
        dtype = TEXTURE_FORMATS[kind.format].texture_dtype
        with self._builder() as build:
            textures = tuple(build.texture((width, height), 1, dtype) for _ in range(plan.textures))
            framebuffers = tuple(
                build.framebuffer([textures[t] for t in step.targets]) for step in plan.passes
            )
            rows = build.target((width, layout.height * plan.chunk_groups), layout.lanes)
            lut_x, lut_y = build.lut(width), build.lut(height)
        output.confidence = ConfidencePart(plan, textures, framebuffers, rows, lut_x, lut_y)
        return output.confidence

    def _draw_confidence(
        self, slot: TensorSlot, output: OutputSlot, source: moderngl.Texture, size: tuple[int, int]
    ) -> tuple[ImageRead, ...]:
        """Separable OpenCV resize: rows first (per chunk of groups), then columns, up to 8 masks a pass."""
        layout = slot.layout
        width = size[0]
        part = output.confidence or self._build_confidence(output)
        write_resize_tables(part, layout, size)
        plan = part.plan
        output_format = TEXTURE_FORMATS[output.kind.format].output_format
        constants = plan.constant_offsets  # else one program with uniform offsets serves every pass
        chunk_done = -1
        for index, step in enumerate(plan.passes):
            if step.chunk_first != chunk_done:
                chunk_done = step.chunk_first
                groups = min(plan.chunk_groups, layout.groups - step.chunk_first)
                rows = ProgramDefinition.of(
                    _VERTEX, "resize_rows.frag.glsl", CHUNK_FIRST=step.chunk_first if constants else -1,
                    **layout.params(),
                )  # fmt: skip
                self._draw(
                    rows, part.rows.framebuffer, {"u_source": source, "u_taps": part.lut_x},
                    (width, layout.height * groups), u_chunk_first=step.chunk_first,
                )  # fmt: skip
            columns = ProgramDefinition.of(
                _VERTEX, "resize_columns.frag.glsl", TENSOR_H=layout.height, LANES=layout.lanes,
                FIRST_GROUP=step.local_first if constants else -1, PASS_OUTPUTS=len(step.channels),
                SELECT=step.select, OUTPUT_FORMAT=output_format,
            )  # fmt: skip
            uniforms = {"u_channel": step.channels} if step.select else {"u_first_group": step.local_first}
            self._draw(
                columns, part.framebuffers[index], {"u_rows": part.rows.texture, "u_taps": part.lut_y},
                size, **uniforms,
            )  # fmt: skip
        return tuple(self._plane(part, texture, size, output.exact(*size)) for texture in plan.sources)

    @staticmethod
    def _plane(part: ConfidencePart, texture: int, size: tuple[int, int], exact: bool) -> ImageRead:
        """How to read confidence texture ``texture``: whole, or the frame's viewport of its pass."""
        dtype = part.textures[texture].dtype
        itemsize = int(dtype[1])
        if exact:
            return ImageRead(part.textures[texture], None, 0, *size, dtype, itemsize)
        step, attachment = part.plan.attachment_of(texture)
        return ImageRead(part.textures[texture], part.framebuffers[step], attachment, *size, dtype, itemsize)

    # ----------------------------------------------------------------------------- pools
    def _builder(self) -> ObjectBuilder:
        return ObjectBuilder(self.ctx, self._count_created)

    def _count_created(self, count: int) -> None:
        self.objects_created += count

    def _release(self, objects: list) -> None:
        if objects:
            for hook in self.release_hooks:
                hook(objects)
            self._idle.use()
            for obj in objects:
                obj.release()

    def _tensor_slot(self, layout: TensorLayout) -> TensorSlot:
        slot = self._tensors.get(layout)
        if slot is not None:
            return slot
        with self._builder() as build:
            texture = build.texture((layout.line, layout.lines), layout.lanes)
        slot = TensorSlot(layout, texture, None)
        self._release(self._tensors.add(slot))
        return slot

    def _output_slot(self, kind: OutputKind, width: int, height: int) -> OutputSlot:
        slot, capacity = self._outputs.find(kind, width, height)
        self._release(self._outputs.release_idle())
        if slot is None:
            slot = OutputSlot(kind, capacity)
            self._release(self._outputs.add(slot))
        return slot

    def live_objects(self) -> int:
        """GL objects this pipeline holds (textures, framebuffers, buffers, vertex arrays, programs)."""
        count = self.programs.live_objects() + self._readback.objects() + self._upload.objects()
        count += int(self._timer is not None)
        return count + len(self._tensors.objects()) + len(self._outputs.objects())

    def trim(self) -> None:
        """Free pooled textures, framebuffers, buffers, vertex arrays and programs (context alive
        and current); the next frame recreates what it needs. Frames submitted before it can no
        longer be collected (``trims`` counts the trims: their owners recompute them)."""
        self.trims += 1
        self._idle.use()
        self._release(self._outputs.clear() + self._tensors.clear())
        self._readback.release()
        self._upload.release()
        self.programs.release()
        # The timer query (time_gpu) stays: moderngl 5.13 cannot delete a query, so it lives as
        # long as the context (one per generation, reused by every frame).

    def release(self) -> None:
        """Free every GL object (context alive and current) except readback buffers that lent
        views still reference (see :meth:`release_lent`)."""
        self.trim()

    def release_lent(self) -> None:
        """Free the readback buffers kept for lent views, once those are gone (context alive)."""
        if isinstance(self._readback, MappedReadback):
            self._readback.release_lent()

    def release_lost(self) -> None:
        """:meth:`release` for a lost generation, run with no context current (``GLSession.abandon``:
        the GL calls land in no-op stubs, only moderngl's host side goes). The release hooks are
        not called: the CUDA interop clears a lost generation's registrations itself."""
        self.release_hooks = [RELEASED_WITH_A_LOSS.update]  # textures of results included
        self.release()

    def abandon(self) -> None:
        """Forget every GL object without GL calls (the context is lost)."""
        self._outputs = OutputPool()
        self._tensors = TensorPool()
        self._readback.abandon()
        self._upload.abandon()
        self.programs.abandon()
        self._timer = None
