"""Read the ``metadata_props`` of an ONNX file without onnx or onnxruntime (standard library).

An ONNX file is one protobuf ``ModelProto``. Its top-level fields are walked in order and every
length-delimited field (the graph with its weights above all) is skipped with a seek, so reading
the metadata of a large model costs a few small reads and never a model load. Any reference
past the end of the file is refused: the file is truncated or not ONNX.
"""

from __future__ import annotations

import os
from typing import BinaryIO

_METADATA_PROPS = 14  # ModelProto.metadata_props: repeated StringStringEntryProto
_KEY, _VALUE = 1, 2  # StringStringEntryProto.key / .value


def _varint(f: BinaryIO) -> int | None:
    """The next varint, or None at a clean end of file."""
    result, shift = 0, 0
    while True:
        b = f.read(1)
        if not b:
            if shift:
                raise ValueError("file ends inside a varint")
            return None
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def _entry(data: bytes) -> tuple[str, str]:
    key = value = ""
    pos = 0
    while pos < len(data):
        tag, pos = _varint_bytes(data, pos)
        field, wire = tag >> 3, tag & 7
        if wire != 2:
            raise ValueError(f"unexpected wire type {wire} in a metadata entry")
        length, pos = _varint_bytes(data, pos)
        if pos + length > len(data):
            raise ValueError("metadata entry runs past its end")
        text = data[pos : pos + length].decode("utf-8")
        pos += length
        if field == _KEY:
            key = text
        elif field == _VALUE:
            value = text
    return key, value


def _varint_bytes(data: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError("metadata entry ends inside a varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX model file as a dict (``ValueError`` when the file is
    not a well-formed protobuf, e.g. truncated)."""
    size = os.path.getsize(path)
    props: dict[str, str] = {}
    with open(path, "rb") as f:
        while True:
            tag = _varint(f)
            if tag is None:
                break
            field, wire = tag >> 3, tag & 7
            if field == 0:
                raise ValueError("field number 0: not a protobuf message")
            if wire == 0:
                if _varint(f) is None:
                    raise ValueError("file ends inside a field")
            elif wire == 1:
                f.seek(8, os.SEEK_CUR)
            elif wire == 5:
                f.seek(4, os.SEEK_CUR)
            elif wire == 2:
                length = _varint(f)
                if length is None or f.tell() + length > size:
                    raise ValueError(f"field {field} runs past the end of the {size}-byte file")
                if field == _METADATA_PROPS:
                    try:
                        key, value = _entry(f.read(length))
                    except UnicodeDecodeError as e:
                        raise ValueError("metadata entry is not UTF-8 text") from e
                    props[key] = value
                else:
                    f.seek(length, os.SEEK_CUR)
            else:
                raise ValueError(f"wire type {wire} of field {field}: not an ONNX protobuf")
            if f.tell() > size:
                raise ValueError(f"field {field} runs past the end of the {size}-byte file")
    return props
