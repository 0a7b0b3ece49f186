"""Converters' chatter stays off the console; edge-yolo's own log records do not."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import pytest

from edge_yolo.console import third_party_output


def chatter() -> None:
    os.write(1, b"native stdout line\n")  # what absl / TFLite write from C++
    os.write(2, b"I0000 native stderr line\n")
    print("python print from a converter")
    print("progress bar", file=sys.stderr)
    warnings.warn("a FutureWarning from a library", FutureWarning, stacklevel=1)
    logging.getLogger("edge_yolo.quant").warning("calibration: 300 asked for, 6 found")


def test_third_party_output_goes_to_a_log_and_ours_stays(capfd):
    with third_party_output():
        chatter()
    out, err = capfd.readouterr()
    assert "native" not in out + err and "python print" not in out and "FutureWarning" not in err
    assert "progress bar" not in err
    assert err.strip() == "WARNING edge_yolo.quant: calibration: 300 asked for, 6 found"
    print("after")  # the console is back
    assert capfd.readouterr().out == "after\n"


def test_verbose_shows_everything(capfd):
    with third_party_output(verbose=True), warnings.catch_warnings():
        warnings.simplefilter("always")
        chatter()
    out, err = capfd.readouterr()
    assert "native stdout line" in out and "I0000 native stderr line" in err


def test_a_failure_keeps_the_log_and_names_it(capfd):
    with pytest.raises(RuntimeError), third_party_output():
        os.write(2, b"converter: the real reason\n")
        raise RuntimeError("conversion failed")
    err = capfd.readouterr().err
    path = err.split("kept in ")[1].split(")")[0]
    try:
        assert "converter: the real reason" in Path(path).read_text()
    finally:
        os.unlink(path)


def test_a_handler_a_library_made_during_the_redirect_still_works_afterwards(capfd):
    """absl, imported by the converters inside the redirect, gives its handler the redirected
    stream; once that closes, a later record must reach the console, not a "Logging error"."""
    library = logging.getLogger("a_converter_library")
    try:
        with third_party_output():
            library.addHandler(logging.StreamHandler())  # its stream: sys.stderr right now
        library.warning("a record after the conversion")
        err = capfd.readouterr().err
        assert "Logging error" not in err and "a record after the conversion" in err
    finally:
        library.handlers.clear()
