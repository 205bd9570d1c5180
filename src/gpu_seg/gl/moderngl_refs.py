"""References that moderngl (5.11-5.13) takes and never gives back, and where gpu_seg gives them back.

Every moderngl context left about 38 KiB of Python objects behind for good, released or not, so
a process that makes a context per generation (a context loss, ``trim(release_context=True)``,
an idle release) grew by that much each time:

* ``load_gl_methods`` keeps a reference to every address the loader returns (about 700 ints):
  :class:`~gpu_seg.gl.egl.EGLLoader` returns the same int objects every time, so nothing grows.
* ``create_context`` keeps a second reference to every extension name it puts into
  ``Context.extensions`` (about 220 strings on llvmpipe): :func:`create_context` gives it back.
* ``create_context`` without a loader (the ``DefaultLoader`` or glcontext's) also gets a new int for
  every address: gpu_seg hands attached contexts :class:`~gpu_seg.gl.rawgl.CurrentContextLoader`,
  which returns the same int objects every time.
* ``Context.external_buffer`` takes a reference to its context that ``Buffer.release()`` never
  gives back: :class:`~gpu_seg.gl.rawgl.PersistentBuffer` gives it back.

A reference is given back only where it is seen taken (a moderngl that fixes the leak is left
alone), and never where reference counts cannot be trusted (a free-threaded build, where they
race, or an interpreter without ``sys.getrefcount``).
"""

from __future__ import annotations

import ctypes
import sys
import threading
from typing import Any

import moderngl

from .. import forks

__all__ = ["counts_reliable", "create_context", "give_back_extension_names"]

_default_lock = threading.Lock()
forks.renew_locks(sys.modules[__name__], "_default_lock")  # a forked child gets a new one


def counts_reliable() -> bool:
    """Whether ``sys.getrefcount`` tells how many references an object has (CPython with a GIL)."""
    return hasattr(sys, "getrefcount") and getattr(sys, "_is_gil_enabled", lambda: True)()


def create_context(**kwargs: Any) -> moderngl.Context:
    """``moderngl.create_context(**kwargs)``, without the references it leaks to extension names,
    and leaving moderngl's default context (``moderngl.get_context()``) as it was.

    moderngl makes every context it creates the process's default context: gpu_seg's headless
    contexts would replace the application's (and a dead generation's would stay it).
    """
    store = getattr(moderngl, "_store", None)
    with _default_lock:  # two processors' GL threads at once would restore each other's context
        default = getattr(store, "default_context", None)
        try:
            mgl = moderngl.create_context(**kwargs)
        finally:
            if store is not None and hasattr(store, "default_context"):
                store.default_context = default
    give_back_extension_names(mgl)
    return mgl


def give_back_extension_names(mgl: moderngl.Context) -> int:
    """Drop the reference moderngl's ``create_context`` leaks to each name in ``extensions``.

    Call it once, right after the context is made (before anything else can hold the names).

    Returns:
        How many references were given back (0 where none was seen leaked).
    """
    if not counts_reliable():
        return 0
    names = list(mgl.mglo.extensions)  # each name: the context's set, this list, (moderngl's leak)
    if not names:
        return 0
    controls = [names[0][:1] + names[0][1:]]  # an equal string, a new object, held the same way:
    held = set(controls)  # in a set and a list
    if controls[0] is names[0] or sys.getrefcount(names[0]) - sys.getrefcount(controls[0]) != 1:
        return 0
    given = 0
    for index in range(len(names)):
        if sys.getrefcount(names[index]) - sys.getrefcount(controls[0]) == 1:
            ctypes.pythonapi.Py_DecRef(ctypes.py_object(names[index]))
            given += 1
    held.clear()
    return given
