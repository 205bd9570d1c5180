"""Starting or joining Ray for a run, and Ray Data settings for its duration.

* No address: a local Ray is started for the run and shut down after it, reachable on the
  loopback interface only (its node address is 127.0.0.1, so its servers listen there; this needs
  ``ray`` not imported yet in the process, else Ray's own choice of address applies), without
  the dashboard, with a small object store (the workers write their files themselves; only
  manifest lines travel back).
* An address (``auto``, ``HOST:PORT``, ``ray://HOST:10001``): that cluster is joined, and left
  (not stopped) afterwards.
* Ray already initialised in this process (a user's own pipeline): it is used as it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

from ..errors import GpuSegError

__all__ = [
    "LOCAL_RAY_OPTIONS",
    "RayClusterError",
    "RayUnavailableError",
    "address_problem",
    "data_settings",
    "import_ray",
    "ray_session",
]

#: Options of the local Ray started when no address is given (``ray.init`` keywords).
LOCAL_RAY_OPTIONS: dict[str, Any] = {
    "include_dashboard": False,
    "object_store_memory": 256 * 1024 * 1024,
    "log_to_driver": False,
    "logging_level": logging.WARNING,
}
#: On Linux, Ray takes this to mean "a single machine": its node address becomes 127.0.0.1 and its
#: servers listen on the loopback interface only. Read when ray is first imported.
_LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


#: Ray Data loggers quieted during a run: the notice that its progress bars are off (the run
#: draws its own), and the line per finished execution. Their warnings about resources stay.
_QUIET_LOGGERS = {
    "ray.data._internal.progress": logging.ERROR,
    "ray.data._internal.execution.streaming_executor": logging.WARNING,
}


class RayUnavailableError(GpuSegError, ImportError):
    """Ray (with Ray Data) is not installed: ``pip install "gpu_seg[ray]"``."""


class RayClusterError(GpuSegError, ConnectionError):
    """The Ray cluster at the address given cannot be joined (a bad address, nobody answering,
    Ray Client not installed for a ``ray://`` address)."""


#: Seconds to wait for a TCP connection to a cluster's address before giving up on it.
CONNECT_TIMEOUT_S = 5.0


#: What a client sends first on an HTTP/2 connection (gRPC's transport): the connection preface and
#: an empty SETTINGS frame. A server answers with a SETTINGS frame of its own (RFC 9113, 3.4).
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_HTTP2_SETTINGS = 4
#: Set (to 1 or true) when a cluster's gRPC servers use TLS: they cannot be asked in plain text.
_RAY_TLS = "RAY_USE_TLS"


def address_problem(address: str, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why ``address`` names no reachable Ray cluster, or None: ``host:port`` or ``ray://host:port``
    must accept a TCP connection and answer as a gRPC server does (Ray's cluster and client servers
    both are) within ``timeout`` seconds each; ``ray.init`` would retry for good, also on an open port
    where something else listens (the dashboard's 8265 given for the cluster's 6379). ``auto`` and
    ``local`` are left to Ray, and so is the protocol of clusters whose gRPC uses TLS
    (``RAY_USE_TLS``). Needs no Ray."""
    if address in ("auto", "local") or ("://" in address and not address.startswith("ray://")):
        return None  # Ray's own, or another scheme's (anyscale://...): left to Ray
    target = address.removeprefix("ray://")
    host, colon, port = target.rpartition(":")
    host = host.strip("[]")  # an IPv6 address
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # as it is written
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"{address!r} is not a Ray address (host:port, ray://host:port, auto or local)"
    try:
        with socket.create_connection((host, int(port)), timeout) as connection:
            if os.environ.get(_RAY_TLS, "0").lower() in ("1", "true"):
                return None
            answer = _http2_answer(connection, timeout)
    except OSError as exc:
        return f"no Ray cluster answers at {where} ({exc.strerror or exc})"
    if answer is None:
        return f"{where} is open but not a Ray cluster: it gives no answer within {timeout:g} s"
    if len(answer) < 9 or answer[3] != _HTTP2_SETTINGS:
        return (
            f"{where} is open but not a Ray cluster: it does not speak gRPC "
            f"({_first_words(answer)}); a cluster's address is its head node's GCS port (6379 by default)"
        )
    return None


def _http2_answer(connection: socket.socket, timeout: float) -> bytes | None:
    """The first 9 bytes (an HTTP/2 frame header) a server sends after the client's preface, fewer
    if it hangs up first, None if it says nothing within ``timeout`` seconds."""
    connection.settimeout(timeout)
    answer = b""
    try:
        connection.sendall(_HTTP2_PREFACE)
        while len(answer) < 9:
            chunk = connection.recv(9 - len(answer))
            if not chunk:
                break
            answer += chunk
    except TimeoutError:
        return answer or None
    except OSError:  # reset by a server that does not like the preface
        pass
    return answer


def _first_words(answer: bytes) -> str:
    if not answer:
        return "it hung up"
    text = answer.decode("ascii", "replace")
    return f"it answered {text!r}" if text.isprintable() else f"it answered {answer!r}"


def import_ray(local: bool = False) -> ModuleType:
    """``ray``, with ``ray.data`` loaded; ``local``: keep a Ray started here on the loopback interface.

    Raises:
        RayUnavailableError: ray or ray.data cannot be imported.
    """
    if local and "ray" not in sys.modules:
        os.environ.setdefault(_LOOPBACK_ONLY, "0")
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RayUnavailableError(
            f'running on Ray needs ray[data]: pip install "gpu_seg[ray]" ({exc})'
        ) from exc
    return ray


@contextlib.contextmanager
def ray_session(address: str | None, options: Mapping[str, Any] | None = None) -> Iterator[ModuleType]:
    """Ray for the duration of a run (see the module notes); yields the ``ray`` module.

    Args:
        address: the cluster to join, or None for a local Ray.
        options: more ``ray.init`` keywords (for a local Ray, they override :data:`LOCAL_RAY_OPTIONS`).
    """
    ray = import_ray(local=address is None)
    if ray.is_initialized():
        yield ray
        return
    if address is not None:
        problem = address_problem(address)  # ray.init would retry for good
        if problem:
            raise RayClusterError(f"cannot join the Ray cluster at {address!r}: {problem}")
    original = signal.getsignal(signal.SIGTERM)  # ray.init replaces it: see _put_back_sigterm
    try:
        if address is None:
            ray.init(**{**LOCAL_RAY_OPTIONS, **(options or {})})
        else:
            try:
                ray.init(address=address, **{"log_to_driver": False, **(options or {})})
            except (ValueError, ConnectionError, TimeoutError, RuntimeError) as exc:
                raise RayClusterError(f"cannot join the Ray cluster at {address!r}: {exc}") from exc
    except BaseException:
        _put_back_sigterm(original)
        raise
    if callable(original):  # the application's own handler, for the run
        _put_back_sigterm(original)
    try:
        yield ray
    finally:
        ray.shutdown()
        _put_back_sigterm(original)  # whatever it was: Ray's exiting handler goes with Ray


def _put_back_sigterm(handler: Any) -> None:
    """Install ``handler`` for SIGTERM again. ``ray.init`` replaces it, in Python with a handler
    that exits at once and in C, where its core worker's crash handler dumps a stack and dies of the
    signal (unseen by ``signal.getsignal``, so the handler is installed again whatever Python says).
    An application's own Python handler (``gpu-seg``'s stops between frames and writes the
    manifest) is put back for the run; a default or ignored SIGTERM after ``ray.shutdown``. Main
    thread only: elsewhere signals cannot be handled anyway."""
    if handler is None:  # installed outside Python: nothing to put back
        return
    with contextlib.suppress(ValueError, TypeError):  # not the main thread
        signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def data_settings() -> Iterator[None]:
    """Ray Data settings of a run, restored afterwards: no Ray Data progress bars (the caller draws
    its own), and a failed block does not stop the run (its tasks are reported as failed)."""
    from ray.data import DataContext

    context = DataContext.get_current()
    wanted = {"enable_progress_bars": False, "max_errored_blocks": -1, "print_on_execution_start": False}
    saved = {name: getattr(context, name) for name in wanted if hasattr(context, name)}
    for name in saved:
        setattr(context, name, wanted[name])
    loggers = {logging.getLogger(name): level for name, level in _QUIET_LOGGERS.items()}
    levels = {logger: logger.level for logger in loggers}
    for logger, level in loggers.items():
        logger.setLevel(level)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        for logger, level in levels.items():
            logger.setLevel(level)
