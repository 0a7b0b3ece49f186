"""The project's error base and error text shared by every layer (standard library only)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

#: True while a command-line command runs: messages then name options as flags
_ON_CLI = contextvars.ContextVar("edge_yolo_on_cli", default=False)


class EdgeYoloError(Exception):
    """Base of every error a user can cause and fix: a bad argument, file, dataset, bundle or
    option. Its message names what is wrong (and the file); the CLI prints it as one line."""


class UsageError(EdgeYoloError, ValueError):
    """A command-line argument that cannot work, found before any work starts."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (native libraries append long traces), or
    its type name when it has no message."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__


def refuse_unknown_keys(
    given: object, known: object, where: str, error: type[Exception] = ValueError
) -> None:
    """Raise ``error`` naming every key of ``given`` that is not in ``known`` (a recipe, a
    profile or metadata written by hand must not silently drop a misspelt key)."""
    known_set = set(known)  # type: ignore[call-overload]
    unknown = sorted(set(given) - known_set)  # type: ignore[call-overload]
    if unknown:
        raise error(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; known keys: "
            f"{', '.join(sorted(known_set))}"
        )


@contextlib.contextmanager
def command_line() -> Iterator[None]:
    """While this is active, :func:`option` spells options as command-line flags."""
    token = _ON_CLI.set(True)
    try:
        yield
    finally:
        _ON_CLI.reset(token)


def option(name: str, value: object = None, flag: str | None = None) -> str:
    """An option as the user types it where the message is read: ``--max-drop 1.5`` from the
    command line, ``max_drop=1.5`` from Python (``name`` is the keyword). ``flag``: a flag that
    says its value itself (``--no-check-files`` for ``check_files=False``)."""
    if _ON_CLI.get():
        if flag:
            return flag
        flag = "--" + name.replace("_", "-")
        return flag if value is None else f"{flag} {value}"
    return name if value is None else f"{name}={value!r}"
