"""Keeping converters' chatter off the console (standard library only).

TFLite, TensorFlow's absl logging, litert-torch, torchao and ai-edge-quantizer write progress
lines, C++ log lines and Python warnings straight to the process's stdout and stderr, some
from native code where no Python setting reaches. :func:`third_party_output` sends file
descriptors 1 and 2 to a log file while a conversion runs, and keeps edge-yolo's own log
records (the ``edge_yolo`` logger) on the console. A failure keeps the log and names it;
``--verbose`` on the CLI shows everything as it happens instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def third_party_output(verbose: bool = False) -> Iterator[None]:
    """While active, anything written to stdout/stderr (Python or native) goes to a temporary
    log; ``edge_yolo`` log records still reach the console's stderr. No-op when ``verbose``."""
    if verbose:
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    fd, log_path = tempfile.mkstemp(prefix="edge-yolo-converters-", suffix=".log")
    saved = {n: os.dup(n) for n in (1, 2)}
    console = os.fdopen(os.dup(saved[2]), "w", buffering=1, encoding="utf-8", errors="replace")
    handler = logging.StreamHandler(console)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    ours = logging.getLogger("edge_yolo")
    propagate = ours.propagate
    ours.addHandler(handler)
    ours.propagate = False
    # Python-level writes go there too, also where sys.stdout is not fd 1 (a notebook, pytest)
    log = os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace")
    ok = False  # True: nothing to keep (done, or a user error that says it all)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        with warnings.catch_warnings(), contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            warnings.simplefilter("ignore")
            yield
        ok = True
    except Exception as e:
        from .errors import EdgeYoloError

        ok = isinstance(e, EdgeYoloError)
        raise
    finally:
        _rebind_handlers(log, sys.__stderr__)
        log.close()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for n, copy in saved.items():
            os.dup2(copy, n)
            os.close(copy)
        os.close(fd)
        ours.removeHandler(handler)
        ours.propagate = propagate
        console.close()
        if ok or not os.path.getsize(log_path):
            os.unlink(log_path)
        else:
            print(f"(the converters' own output is kept in {log_path})", file=sys.stderr)


def _rebind_handlers(old: object, new: object) -> None:
    """A library imported during the redirect (absl, through the converters) may have given
    a logging handler the redirected stream, which is closed afterwards: its next record would
    end in "--- Logging error --- I/O operation on closed file". Point them at ``new``."""
    loggers = [logging.getLogger(), *(v for v in logging.root.manager.loggerDict.values()
                                      if isinstance(v, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is old:
                handler.setStream(new)
