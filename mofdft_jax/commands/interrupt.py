"""Ctrl-C for compute-only commands (``mofdft solve``, ``mofdft ks``): exit 130 at once, nothing
half-written.

Python runs a SIGINT handler only between bytecodes of the main thread, so a ``KeyboardInterrupt``
waits until a compiled XLA solve or a PySCF integral batch returns (measured: > 60 s), and one
raised inside a host callback of a running XLA loop can crash the process. Instead
:func:`exit_on_interrupt` asks Python's C-level signal handler to write to a socket
(``signal.set_wakeup_fd``, which it does whatever thread is busy), and a watcher thread that
blocks on that socket prints one line, deletes the temporary files of unfinished outputs and
ends the process with ``os._exit(130)`` (128 + SIGINT, the shell convention). The watcher needs
the GIL only for a moment, and XLA, PySCF (ctypes) and BLAS release it while they compute.

Output files are written through :func:`mofdft_jax.atomic_io.atomic_path` (a temporary file in
the same folder, renamed over the target when complete; the watcher deletes the temporaries being
written), so an interrupt leaves either no file or the previous one, never a truncated file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading

# imported here, not in the watcher: an import at signal time could wait on the import lock
from mofdft_jax.atomic_io import pending_temporaries

#: Exit status after Ctrl-C: 128 + SIGINT.
INTERRUPT_EXIT_STATUS = 128 + signal.SIGINT


def _watch(sock: socket.socket, message: str) -> None:
    """Block until the signal handler writes SIGINT's number, then clean up and exit. (Python
    writes the number of every signal that has a Python handler, e.g. SIGWINCH: those are
    skipped.)"""
    while True:
        try:
            data = sock.recv(1)
        except OSError:
            return
        if not data:  # the socket was closed: the command finished
            return
        if data[0] == signal.SIGINT:
            break
    try:
        os.write(2, f"\n{message}\n".encode())
    except OSError:
        pass
    for tmp in pending_temporaries():
        try:
            os.unlink(tmp)
        except OSError:
            pass
    os._exit(INTERRUPT_EXIT_STATUS)


@contextlib.contextmanager
def exit_on_interrupt(message: str = "interrupted (Ctrl-C): nothing written"):
    """Inside the block, SIGINT ends the process within milliseconds with status 130.

    Falls back to Python's default handling (a ``KeyboardInterrupt`` at the next bytecode) where
    it cannot be installed: outside the main thread, or where ``set_wakeup_fd`` is taken.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except (ValueError, OSError):
        reader.close()
        writer.close()
        yield
        return
    previous_handler = signal.getsignal(signal.SIGINT)
    # a Python-level handler must be installed for the C handler to run; it does nothing, the
    # watcher thread acts (the main thread may be inside XLA or PySCF for minutes)
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    watcher = threading.Thread(target=_watch, args=(reader, message), daemon=True,
                               name="mofdft-interrupt")
    watcher.start()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        signal.set_wakeup_fd(previous_fd)
        writer.close()
        with contextlib.suppress(OSError):
            reader.shutdown(socket.SHUT_RDWR)  # wakes the watcher: recv returns b""
        watcher.join(timeout=1.0)
        reader.close()
