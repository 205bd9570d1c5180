"""OpenGL enum values that gpu_seg's Python code passes to GL or compares with, defined once.

The values are those of the Khronos registry (``gl.xml``). EGL's own constants live in
:mod:`gpu_seg.gl.egl.bindings`; shaders and moderngl need none of these.
"""

from __future__ import annotations

__all__ = [
    "GL_BUFFER",
    "GL_BUFFER_MAPPED",
    "GL_BUFFER_SIZE",
    "GL_CONTEXT_FLAGS",
    "GL_CONTEXT_FLAG_ROBUST_ACCESS_BIT",
    "GL_CONTEXT_LOST",
    "GL_COPY_READ_BUFFER",
    "GL_EXTENSIONS",
    "GL_GUILTY_CONTEXT_RESET",
    "GL_INNOCENT_CONTEXT_RESET",
    "GL_INVALID_ENUM",
    "GL_INVALID_FRAMEBUFFER_OPERATION",
    "GL_INVALID_OPERATION",
    "GL_INVALID_VALUE",
    "GL_LOSE_CONTEXT_ON_RESET",
    "GL_MAJOR_VERSION",
    "GL_MINOR_VERSION",
    "GL_NO_ERROR",
    "GL_NO_RESET_NOTIFICATION",
    "GL_NUM_EXTENSIONS",
    "GL_OUT_OF_MEMORY",
    "GL_RESET_NOTIFICATION_STRATEGY",
    "GL_STATIC_DRAW",
    "GL_UNKNOWN_CONTEXT_RESET",
    "gl_enum_name",
]

# glGetError
GL_NO_ERROR = 0
GL_INVALID_ENUM = 0x0500
GL_INVALID_VALUE = 0x0501
GL_INVALID_OPERATION = 0x0502
GL_OUT_OF_MEMORY = 0x0505
GL_INVALID_FRAMEBUFFER_OPERATION = 0x0506
GL_CONTEXT_LOST = 0x0507

# Robustness (GL 4.5 / KHR_robustness): glGetGraphicsResetStatus and the context's strategy
GL_GUILTY_CONTEXT_RESET = 0x8253
GL_INNOCENT_CONTEXT_RESET = 0x8254
GL_UNKNOWN_CONTEXT_RESET = 0x8255
GL_RESET_NOTIFICATION_STRATEGY = 0x8256
GL_LOSE_CONTEXT_ON_RESET = 0x8252
GL_NO_RESET_NOTIFICATION = 0x8261
GL_CONTEXT_FLAGS = 0x821E
GL_CONTEXT_FLAG_ROBUST_ACCESS_BIT = 0x0004

# Versions and extensions
GL_MAJOR_VERSION = 0x821B
GL_MINOR_VERSION = 0x821C
GL_NUM_EXTENSIONS = 0x821D
GL_EXTENSIONS = 0x1F03

# Buffers and object labels (the session's identity sentinel)
GL_BUFFER = 0x82E0  # the glObjectLabel namespace of buffer objects
GL_COPY_READ_BUFFER = 0x8F36  # also the enum of its binding query
GL_BUFFER_SIZE = 0x8764
GL_BUFFER_MAPPED = 0x88BC
GL_STATIC_DRAW = 0x88E4

_NAMES = {
    GL_NO_ERROR: "GL_NO_ERROR",
    GL_INVALID_ENUM: "GL_INVALID_ENUM",
    GL_INVALID_VALUE: "GL_INVALID_VALUE",
    GL_INVALID_OPERATION: "GL_INVALID_OPERATION",
    GL_OUT_OF_MEMORY: "GL_OUT_OF_MEMORY",
    GL_INVALID_FRAMEBUFFER_OPERATION: "GL_INVALID_FRAMEBUFFER_OPERATION",
    GL_CONTEXT_LOST: "GL_CONTEXT_LOST",
    GL_GUILTY_CONTEXT_RESET: "GL_GUILTY_CONTEXT_RESET",
    GL_INNOCENT_CONTEXT_RESET: "GL_INNOCENT_CONTEXT_RESET",
    GL_UNKNOWN_CONTEXT_RESET: "GL_UNKNOWN_CONTEXT_RESET",
}


def gl_enum_name(value: int) -> str:
    """The name of a ``glGetError`` or ``glGetGraphicsResetStatus`` value, else ``"0x...."``."""
    return _NAMES.get(value, f"0x{value:04X}")
