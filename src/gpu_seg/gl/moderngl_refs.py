"""References that moderngl (5.11-5.13) takes and never gives back, and where gpu_seg gives them back.

Every moderngl context left about 38 KiB of Python objects behind for good, released or not, so
a process that makes a context per generation (a context loss, ``trim(release_context=True)``,
an idle release) grew by that much each time:

* ``load_gl_methods`` keeps a reference to every address the loader returns (about 700 ints):
  gpu_seg's loaders (:class:`~gpu_seg.gl.egl.EGLLoader`, :class:`~gpu_seg.gl.rawgl.CurrentContextLoader`)
  return the same int objects every time (:class:`SharedAddresses`), so nothing grows.
* ``create_context`` keeps a second reference to every extension name it puts into
  ``Context.extensions`` (about 220 strings on llvmpipe): :func:`create_context` gives it back.
* ``create_context`` without a loader (the ``DefaultLoader`` or glcontext's) also gets a new int for
  every address: gpu_seg hands attached contexts :class:`~gpu_seg.gl.rawgl.CurrentContextLoader`,
  which returns the same int objects every time.
* the addresses of a context's own guarded delete functions (:mod:`gpu_seg.gl.egl.deletes`) are
  new ints for each context, and ``load_gl_methods`` keeps a reference to each:
  :func:`give_back_addresses` gives it back.
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
import weakref
from collections.abc import Callable
from typing import Any

import moderngl

from .. import forks

__all__ = [
    "SharedAddresses",
    "counts_reliable",
    "create_context",
    "give_back_addresses",
    "give_back_extension_names",
]

#: The moderngl contexts gpu_seg made: never the application's default.
_made: weakref.WeakSet[moderngl.Context] = weakref.WeakSet()
#: Held to read or write moderngl's default, never across a driver call (a hung driver would
#: keep it held, and every later context creation of the process would wait for it).
_default_lock = threading.Lock()
forks.renew_locks(sys.modules[__name__], "_default_lock")  # a forked child gets a new one


def _no_context() -> None:
    return None


#: moderngl's default context as the application left it (a weak reference, or no context).
_application_default: Callable[[], moderngl.Context | None] = _no_context


class SharedAddresses:
    """GL function name -> address for a loader, the same int object every time (see the module
    docstring). Addresses from ``eglGetProcAddress`` / ``glXGetProcAddressARB`` do not depend on
    the context (EGL 1.5, section 3.10), so one instance serves every context of a kind. Bounded:
    moderngl asks for a fixed list of about 700 names; beyond ``KEPT`` names nothing is kept."""

    KEPT = 4096

    def __init__(self) -> None:
        self._addresses: dict[str, int] = {}

    def get(self, name: str, resolve: Callable[[str], int]) -> int:
        """The address of ``name``, from ``resolve`` the first time."""
        address = self._addresses.get(name)
        if address is None:
            address = resolve(name)
            if len(self._addresses) < self.KEPT:
                address = self._addresses.setdefault(name, address)
        return address


def counts_reliable() -> bool:
    """Whether ``sys.getrefcount`` tells how many references an object has (CPython with a GIL)."""
    return hasattr(sys, "getrefcount") and getattr(sys, "_is_gil_enabled", lambda: True)()


def create_context(**kwargs: Any) -> moderngl.Context:
    """``moderngl.create_context(**kwargs)``, without the references it leaks to extension names,
    and leaving moderngl's default context (``moderngl.get_context()``) to the application.

    moderngl makes every context it creates the process's default context: gpu_seg's headless
    contexts replaced the application's (and a dead generation's stayed it). The default is put
    back after each creation where it is one of gpu_seg's, so one the application sets meanwhile
    stays.
    """
    store = getattr(moderngl, "_store", None)
    if store is None or not hasattr(store, "default_context"):
        mgl = moderngl.create_context(**kwargs)
    else:
        _remember_application_default(store)
        mgl = moderngl.create_context(**kwargs)  # sets the default at its end, on success only
        _restore_application_default(store, mgl)
    give_back_extension_names(mgl)
    return mgl


def _remember_application_default(store: Any) -> None:
    global _application_default
    with _default_lock:
        current = store.default_context
        if current is None:
            _application_default = _no_context
        elif current not in _made:  # (one of gpu_seg's: another creation under way)
            _application_default = weakref.ref(current)


def _restore_application_default(store: Any, mgl: moderngl.Context) -> None:
    with _default_lock:
        _made.add(mgl)
        if store.default_context in _made:
            store.default_context = _application_default()


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
    given = _drop_leaked_references(names, controls)
    held.clear()
    return given


def give_back_addresses(addresses: list[int]) -> int:
    """Drop the reference moderngl's ``load_gl_methods`` leaks to each of ``addresses``, ints that a
    loader made for one context and handed out once each (it keeps only the value). Call it right
    after the context is made, with ``addresses`` their only other holder.

    Returns:
        How many references were given back (0 where none was seen leaked).
    """
    if not counts_reliable() or not addresses:
        return 0
    controls = [int(str(addresses[0]))]  # an equal int, a new object, held the same way
    if controls[0] is addresses[0]:
        return 0
    return _drop_leaked_references(addresses, controls)


def _drop_leaked_references(values: list, controls: list) -> int:
    """``Py_DecRef`` each of ``values`` that has exactly one reference more than ``controls[0]``
    (an equal object, new, held the same way as the values): the one moderngl leaked."""
    given = 0
    for index in range(len(values)):
        if sys.getrefcount(values[index]) - sys.getrefcount(controls[0]) == 1:
            ctypes.pythonapi.Py_DecRef(ctypes.py_object(values[index]))
            given += 1
    return given
