"""The viewer's GL side: the picture (background blur, replacement or mask overlay) and the stats
bar, drawn in the window's own context.

The compositor takes the mask as a **texture** (R channel = probability). Today the viewer uploads
the segmenter's confidence mask into the compositor's own texture (:meth:`Compositor.upload_mask`);
a mask texture that already lives in this context (a GPU-resident segmenter output) can be passed
to :meth:`Compositor.draw` as it is. Every texture and framebuffer is made once per image size
(a new size replaces the old set), never per frame.

:mod:`.effects` is the numpy specification of what is drawn, and :mod:`.font` the font.
"""

from __future__ import annotations

from dataclasses import dataclass

import moderngl
import numpy as np

from ..errors import InputError
from ..gl.programs import ProgramCache, ProgramDefinition
from . import effects, font
from .effects import Effect

__all__ = ["MAX_BLUR_RADIUS", "Compositor", "Region"]

#: Largest blur radius (taps are uniforms: 2 * radius + 1 of them).
MAX_BLUR_RADIUS = 64
#: Characters the stats bar holds (more are cut).
BAR_CHARACTERS = 256

_VERTEX = "fullscreen.vert.glsl"
_ALONG_ROWS, _ALONG_COLUMNS = (1, 0), (0, 1)

#: ``(x, y, width, height)`` of a window area in pixels, GL convention (``y`` counts from the bottom).
Region = tuple[int, int, int, int]


@dataclass
class _ImageTargets:
    """What depends on the image size: uploads and the blur's float targets."""

    size: tuple[int, int]
    frame: moderngl.Texture
    mask: moderngl.Texture
    rows: moderngl.Texture
    rows_fbo: moderngl.Framebuffer
    blurred: moderngl.Texture
    blurred_fbo: moderngl.Framebuffer
    background: moderngl.Texture | None = None

    def objects(self) -> list:
        found = [self.frame, self.mask, self.rows_fbo, self.rows, self.blurred_fbo, self.blurred]
        return found + ([self.background] if self.background is not None else [])


class Compositor:
    """Draws the viewer's picture and stats bar into the framebuffer of the current context.

    Args:
        ctx: the window's moderngl context (current on this thread).
        blur_radius: taps each side of the Gaussian blur (``effects.gaussian_weights``).
        generation: a number for the window's context (program cache bookkeeping).
    """

    def __init__(self, ctx: moderngl.Context, blur_radius: int = 12, generation: int = 1) -> None:
        if not 0 <= blur_radius <= MAX_BLUR_RADIUS:
            raise ValueError(f"blur_radius must be in 0..{MAX_BLUR_RADIUS}, got {blur_radius}")
        self.ctx = ctx
        self.blur_radius = blur_radius
        glsl = 400 if ctx.version_code >= 400 else 330
        self._programs = ProgramCache(ctx, generation, glsl, lambda: None)
        self._blur = self._program("viewer_blur.frag.glsl", RADIUS=blur_radius)
        self._composite = self._program("viewer_composite.frag.glsl")
        self._text = self._program("viewer_text.frag.glsl", CELL_WIDTH=font.CELL_WIDTH)
        self._blur[0]["u_weights"].write(effects.gaussian_weights(blur_radius).tobytes())
        atlas = font.font_atlas()
        self._font = ctx.texture((atlas.shape[1], atlas.shape[0]), 1, atlas.tobytes(), dtype="f1")
        self._bar = ctx.texture((BAR_CHARACTERS, 1), 1, dtype="u1")
        for texture in (self._font, self._bar):
            texture.filter = (moderngl.NEAREST, moderngl.NEAREST)
        self._bar_text: str | None = None
        self._targets: _ImageTargets | None = None
        self._screenshot: moderngl.Framebuffer | None = None

    # ----------------------------------------------------------------------------- inputs
    def upload_frame(self, frame: np.ndarray) -> moderngl.Texture:
        """The frame (uint8 ``(H, W, 3)`` RGB, row 0 = top) in the compositor's frame texture."""
        targets = self._targets_for((frame.shape[1], frame.shape[0]))
        targets.frame.write(np.ascontiguousarray(frame), alignment=1)
        return targets.frame

    def upload_mask(self, mask: np.ndarray) -> moderngl.Texture:
        """A float ``(H, W)`` mask (row 0 = top) in the compositor's mask texture (R32F)."""
        targets = self._targets_for((mask.shape[1], mask.shape[0]))
        targets.mask.write(np.ascontiguousarray(mask, np.float32), alignment=1)
        return targets.mask

    def set_background(self, image: np.ndarray) -> None:
        """The replacement background, uint8 ``(H, W, 3)`` RGB at the frame's size (kept until the
        image size changes or another is set)."""
        targets = self._targets_for((image.shape[1], image.shape[0]))
        if targets.background is None:
            targets.background = self._image_texture(targets.size, 3, "f1")
        targets.background.write(np.ascontiguousarray(image), alignment=1)

    @property
    def has_background(self) -> bool:
        return self._targets is not None and self._targets.background is not None

    # ----------------------------------------------------------------------------- drawing
    def draw(
        self,
        frame: moderngl.Texture,
        mask: moderngl.Texture,
        effect: Effect,
        region: Region,
        mask_is_background: bool = False,
    ) -> None:
        """Draw the picture of ``frame`` and ``mask`` (textures of the image's size, row 0 = top)
        into ``region`` of the default framebuffer.

        ``mask`` holds the foreground probability in R, or with ``mask_is_background`` the
        background's (multi-class models: channel 0), used as ``1 - R``.
        """
        targets = self._targets_for(frame.size)
        self._prepare_state()
        background = None
        if effect is Effect.BLUR:
            background = self._draw_blur(targets, frame)
        elif effect is Effect.REPLACE:
            background = targets.background
            if background is None:
                raise ValueError("effect 'replace' needs set_background() first")
        program, vao = self._composite
        textures = {"u_frame": frame, "u_mask": mask, "u_background": background or frame}
        self._bind(program, textures)
        self._uniforms(
            program,
            u_mask_is_background=bool(mask_is_background),
            u_effect=effect.code,
            u_region=tuple(float(v) for v in region),
            u_tint=effects.OVERLAY_TINT,
            u_alpha=effects.OVERLAY_ALPHA,
        )
        self._render_into_screen(vao, region)

    def draw_bar(self, text: str, region: Region, scale: int) -> None:
        """Draw the stats bar (``text`` in the bitmap font, ``scale`` x ``scale`` per font pixel,
        from the region's top-left corner) into ``region`` of the default framebuffer."""
        if text != self._bar_text:
            self._bar.write(font.glyph_indices(text, BAR_CHARACTERS).tobytes())
            self._bar_text = text
        self._prepare_state()
        program, vao = self._text
        self._bind(program, {"u_text": self._bar, "u_font": self._font})
        self._uniforms(
            program,
            u_region=region,
            u_scale=int(scale),
            u_ink=effects.BAR_INK,
            u_paper=effects.BAR_BACKGROUND,
        )
        self._render_into_screen(vao, region)

    def read_screen(self, size: tuple[int, int]) -> np.ndarray:
        """uint8 ``(height, width, 3)`` RGB of the default framebuffer's ``(width, height)`` lower-left
        area, row 0 = top; call it before the buffers are swapped (it reads the back buffer).

        The pixels are copied (blit) into a framebuffer of the compositor's and read from there:
        moderngl's own read of the default framebuffer selects a read buffer that only framebuffer
        objects have (GL_INVALID_OPERATION in a core context). The copy target is kept for the next
        screenshot of the same size.
        """
        if self._screenshot is None or self._screenshot.size != tuple(size):
            self._release_screenshot()
            self._screenshot = self.ctx.framebuffer(color_attachments=[self.ctx.texture(size, 4, dtype="f1")])
        self.ctx.copy_framebuffer(self._screenshot, self.ctx.screen)
        data = self._screenshot.read(components=3, alignment=1)
        width, height = size
        return np.frombuffer(data, np.uint8).reshape(height, width, 3)[::-1].copy()

    # ----------------------------------------------------------------------------- lifetime
    def release(self) -> None:
        """Release every GL object (the context must be alive and current)."""
        self._release_targets()
        self._release_screenshot()
        for texture in (self._font, self._bar):
            texture.release()
        for _, vao in (self._blur, self._composite, self._text):
            vao.release()
        self._programs.release()

    def abandon(self) -> None:
        """Forget every GL object without GL calls (the context is gone)."""
        self._targets = self._screenshot = None
        self._programs.abandon()

    # ----------------------------------------------------------------------------- internals
    def _program(self, fragment: str, **params: object) -> tuple[moderngl.Program, moderngl.VertexArray]:
        program = self._programs.get(ProgramDefinition.of(_VERTEX, fragment, **params))
        return program, self.ctx.vertex_array(program, [])

    def _image_texture(self, size: tuple[int, int], components: int, dtype: str) -> moderngl.Texture:
        texture = self.ctx.texture(size, components, dtype=dtype)
        texture.repeat_x = texture.repeat_y = False  # clamp to edge when the picture is scaled
        return texture

    def _targets_for(self, size: tuple[int, int]) -> _ImageTargets:
        targets = self._targets
        if targets is not None and targets.size == tuple(size):
            return targets
        limit = int(self.ctx.info["GL_MAX_TEXTURE_SIZE"])
        if max(size) > limit:  # the frame is composited at its own size
            raise InputError(
                "input", f"a {size[0]}x{size[1]} frame is larger than the window's GL texture limit ({limit})"
            )
        self._release_targets()
        rows = self._image_texture(size, 4, "f4")
        blurred = self._image_texture(size, 4, "f4")
        self._targets = _ImageTargets(
            size=tuple(size),
            frame=self._image_texture(size, 3, "f1"),
            mask=self._image_texture(size, 1, "f4"),
            rows=rows,
            rows_fbo=self.ctx.framebuffer(color_attachments=[rows]),
            blurred=blurred,
            blurred_fbo=self.ctx.framebuffer(color_attachments=[blurred]),
        )
        return self._targets

    def _release_targets(self) -> None:
        if self._targets is not None:
            for obj in self._targets.objects():
                obj.release()
            self._targets = None

    def _release_screenshot(self) -> None:
        if self._screenshot is not None:
            for texture in self._screenshot.color_attachments:
                texture.release()
            self._screenshot.release()
            self._screenshot = None

    def _draw_blur(self, targets: _ImageTargets, frame: moderngl.Texture) -> moderngl.Texture:
        program, vao = self._blur
        for source, fbo, step in (
            (frame, targets.rows_fbo, _ALONG_ROWS),
            (targets.rows, targets.blurred_fbo, _ALONG_COLUMNS),
        ):
            self._bind(program, {"u_source": source})
            self._uniforms(program, u_step=step)
            fbo.use()
            vao.render(moderngl.TRIANGLES, vertices=3)
        return targets.blurred

    def _prepare_state(self) -> None:
        """The fixed-function state these passes assume, whatever the post-processor left."""
        self.ctx.disable(moderngl.BLEND | moderngl.DEPTH_TEST | moderngl.CULL_FACE)
        self.ctx.scissor = None

    def _render_into_screen(self, vao: moderngl.VertexArray, region: Region) -> None:
        self.ctx.screen.use()
        self.ctx.viewport = region
        vao.render(moderngl.TRIANGLES, vertices=3)

    @staticmethod
    def _bind(program: moderngl.Program, textures: dict[str, moderngl.Texture]) -> None:
        for unit, (name, texture) in enumerate(textures.items()):
            texture.use(location=unit)
            sampler = program.get(name, None)
            if sampler is not None:
                sampler.value = unit

    @staticmethod
    def _uniforms(program: moderngl.Program, **values: object) -> None:
        for name, value in values.items():
            member = program.get(name, None)
            if member is not None:  # the driver drops uniforms a shader does not use
                member.value = value
