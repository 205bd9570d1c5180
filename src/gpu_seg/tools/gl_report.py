"""What GL gpu_seg gets on this machine: the facts ``gpu-seg info`` prints and the bench records."""

from __future__ import annotations

from typing import Any

from ..gl import egl
from ..gl.session import OwnedSession

__all__ = ["describe_gl"]


def describe_gl(device_index: int | None = None) -> dict[str, Any]:
    """Facts about an owned EGL context made for the occasion (or why there is none).

    Returns ``egl`` (the EGL display's vendor, version, ...) and either ``error`` (why no context
    could be made) or the context's ``renderer``, ``vendor``, ``version``, ``version_code``,
    ``glsl_version``, ``robust_context``, ``reset_notification``, ``max_texture_size`` and sorted
    ``extensions``. The context is closed before returning.
    """
    report: dict[str, Any] = {"egl": egl.egl_info()}
    try:
        session = OwnedSession.create(generation=1, device_index=device_index)
    except Exception as exc:
        report["error"] = str(exc)
        return report
    try:
        info = session.info
        extensions = session.run(lambda: sorted(session.mgl.extensions))
        report.update(
            renderer=info.renderer,
            vendor=info.vendor,
            version=info.version,
            version_code=info.version_code,
            glsl_version=info.glsl_version,
            robust_context=info.robust,
            reset_notification=info.reset_notification,
            max_texture_size=info.max_texture_size,
            extensions=extensions,
        )
    finally:
        session.close()
    return report
