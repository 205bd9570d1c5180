"""Processes made by ``os.fork()``: what gpu_seg's state becomes in the child.

A forked child has one thread (the one that called ``fork``) and a copy of everything else. Locks
that other threads held stay held, thread pools have no threads left, and a GL driver's state is a
copy whose threads are gone and whose device files are shared with the parent. Left alone, a
processor made before the fork hangs in the child on its first frame (multiprocessing's ``fork``
start method, gunicorn's ``--preload``, a plain ``os.fork()``). So gpu_seg does this:

* **Before the fork** (in the parent): wait for a warm-up of the fast CPU kernels still under way
  (numba's compiler lock would otherwise stay held in the child); see :func:`before_fork`.
* **In the child, at once** (``after_in_child`` hooks, one thread): every gpu_seg lock, thread
  pool and watch thread is made anew; every processor forgets its GL context generation without a
  GL or EGL call (:func:`track`, :func:`on_fork_in_child`); EGL objects made in the parent are
  never destroyed by the child (the parent still uses them).
* **GL in the child**: a process whose ancestor loaded EGL cannot use GL (the driver's state is not
  its own): making a context raises :class:`~gpu_seg.errors.ForkedProcessError`, a
  ``GLUnavailableError``. ``backend="auto"`` processors compute on the CPU instead (exact, with a
  ``FALLBACK`` event that says so); ``backend="gl"`` ones and GPU-only calls raise it. For GL in
  worker processes, start them with multiprocessing's ``"spawn"`` or ``"forkserver"`` method, or
  fork before anything uses GL.

Zero-copy views and owned-view results made in the parent stay readable in the child where the
driver's mapped memory is inherited (as on Mesa); whether it is on other drivers is theirs to say.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Protocol

from .errors import ForkedProcessError

__all__ = [
    "ForkAware",
    "before_fork",
    "check_egl_usable",
    "egl_inherited_from",
    "note_egl_loaded",
    "on_fork_in_child",
    "park",
    "pid",
    "renew_locks",
    "track",
]

log = logging.getLogger("gpu_seg")


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None:
        """Make this object's locks and threads anew; forget GL state. One thread, no GL calls."""


_pid = os.getpid()
_egl_pid: int | None = None  # the process whose EGL state this one has (None: none loaded yet)
#: id -> (weak reference, lock attributes and their factories): by identity, so that any object
#: can be tracked (hashable or not, whatever its ``__eq__``).
_tracked: dict[int, tuple[weakref.ref, dict[str, Callable[[], object]]]] = {}
_child_hooks: list[Callable[[], None]] = []
_before_hooks: list[tuple[Callable[[], object], Callable[[object], None]]] = []
_held: list[tuple[Callable[[object], None], object]] = []


def pid() -> int:
    """This process's id, kept up to date across forks (cheaper than ``os.getpid()``)."""
    return _pid


def note_egl_loaded() -> None:
    """Record that this process loaded libEGL (its children then cannot use GL)."""
    global _egl_pid
    if _egl_pid is None:
        _egl_pid = _pid


def _libegl_loaded() -> bool:
    """Whether any library loaded libEGL into this process (moderngl, an application's window...):
    its state would be inherited too. ``RTLD_NOLOAD`` loads nothing, it only looks."""
    names = [os.environ.get("GPU_SEG_LIBEGL") or "", "libEGL.so.1", "libEGL.so"]
    for name in filter(None, names):
        try:
            ctypes.CDLL(name, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
            return True
        except OSError:
            continue
    return False


def egl_inherited_from() -> int | None:
    """The id of the ancestor whose EGL state this process inherited, or None if it has none."""
    return _egl_pid if _egl_pid is not None and _egl_pid != _pid else None


def check_egl_usable() -> None:
    """Raise :class:`ForkedProcessError` if this process inherited EGL state through a fork."""
    parent = egl_inherited_from()
    if parent is not None:
        raise ForkedProcessError(
            f"GL cannot be used in process {_pid}: it was forked from process {parent} after EGL was "
            "loaded there (by gpu_seg or another library), and a GL driver's state does not survive a "
            "fork (its threads are gone, its device files are shared with the parent). CPU frames work here "
            "(backend='auto' or 'cpu'); for GL in worker processes use multiprocessing's 'spawn' or "
            "'forkserver' start method, or fork before anything uses GL."
        )


def park(obj: object) -> None:
    """Never free ``obj`` in this process, not even at exit. For a forked child's copies of the
    parent's objects whose destructors would use the parent's threads or driver state (a LiteRT
    interpreter's thread pool, CUDA objects): freeing them in the child crashes or hangs it."""
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))


def _entry(obj: object) -> dict[str, Callable[[], object]]:
    key = id(obj)
    entry = _tracked.get(key)
    if entry is None or entry[0]() is not obj:
        entry = (weakref.ref(obj, lambda _, key=key: _tracked.pop(key, None)), {})
        _tracked[key] = entry
    return entry[1]


def track(obj: ForkAware) -> None:
    """Call ``obj._after_fork_in_child()`` in every forked child while ``obj`` lives (after its
    locks of :func:`renew_locks` are new)."""
    _entry(obj)


def renew_locks(obj: object, *attributes: str, factory: Callable[[], object] = threading.Lock) -> None:
    """Give ``obj`` (an instance, or a module for its global locks) new locks (``factory()``) in
    these attributes in every forked child: another thread of the parent may have held them at the
    fork, and it does not exist there."""
    _entry(obj).update(dict.fromkeys(attributes, factory))


def on_fork_in_child(hook: Callable[[], None]) -> None:
    """Call ``hook()`` in every forked child (module state: locks, pools)."""
    _child_hooks.append(hook)


def before_fork(acquire: Callable[[], object], release: Callable[[object], None]) -> None:
    """Around every fork: ``acquire()`` in the parent before it, ``release(token)`` after it (in the
    parent; the child makes its state anew in its own hooks)."""
    _before_hooks.append((acquire, release))


def _before() -> None:
    global _egl_at_fork
    try:
        _egl_at_fork = _pid if _egl_pid == _pid or (_egl_pid is None and _libegl_loaded()) else None
    except Exception:  # never stop the fork itself; assume the worst
        _egl_at_fork = _pid
        log.exception("gpu_seg: looking for libEGL before a fork failed")
    for acquire, release in _before_hooks:
        try:
            _held.append((release, acquire()))
        except Exception:  # never stop the fork itself
            log.exception("gpu_seg: preparing for a fork failed")


def _after_in_parent() -> None:
    while _held:
        release, token = _held.pop()
        try:
            release(token)
        except Exception:
            log.exception("gpu_seg: resuming after a fork failed")


def _after_in_child() -> None:
    global _pid, _egl_pid
    _pid = os.getpid()
    if _egl_pid is None and _egl_at_fork is not None:
        _egl_pid = _egl_at_fork  # loaded there by another library: inherited all the same
    _held.clear()
    for hook in list(_child_hooks):
        _run_in_child(hook)
    for reference, locks in list(_tracked.values()):
        obj = reference()
        if obj is None:
            continue
        for attribute, factory in locks.items():
            _run_in_child(functools.partial(setattr, obj, attribute, factory()))
        if hasattr(obj, "_after_fork_in_child"):
            _run_in_child(obj._after_fork_in_child)


def _run_in_child(hook: Callable[[], None]) -> None:
    try:
        hook()
    except Exception:  # the child goes on; what failed is logged
        log.exception("gpu_seg: making state anew after a fork failed")


_egl_at_fork: int | None = None  # the parent's pid where EGL was loaded at the fork (see _before)
if hasattr(os, "register_at_fork"):  # POSIX
    # "before" callbacks run in reverse order of registration: registered after the thread pool
    # executor's own (which takes its global shutdown lock), gpu_seg's run first, while threads
    # they wait for (the fast CPU path's warm-up, which submits to a pool) can still finish.
    # Registered before it (an import order), the warm-up blocked on that lock and every fork
    # waited for it in vain (FORK_WARM_WAIT_S).
    import concurrent.futures.thread  # noqa: F401

    os.register_at_fork(before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child)
