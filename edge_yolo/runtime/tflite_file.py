"""Bounds-checked reads of a TFLite flatbuffer (standard library only).

tflite-runtime neither verifies a model on load (a cut-off file crashes the process) nor ships
the schema, so the runtime reads the tensor buffers' extents and the model-metadata entries
itself, refusing any reference past the end of the file. Not a full flatbuffer verifier
(ai-edge-litert runs one on load). Errors are ``ValueError`` with the reason.
"""

from __future__ import annotations

import struct


class TFLiteFile:
    """The few TFLite flatbuffer fields the runtime needs, every read bounds-checked."""

    # Field numbers in the TFLite schema (tensorflow/compiler/mlir/lite/schema/schema.fbs).
    MODEL_BUFFERS, MODEL_METADATA = 4, 6
    BUFFER_DATA, BUFFER_OFFSET, BUFFER_SIZE = 0, 1, 2
    METADATA_NAME, METADATA_BUFFER = 0, 1

    def __init__(self, data: bytes) -> None:
        self.data = data
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ValueError("no TFL3 file identifier: not a TFLite flatbuffer")
        self.root = self._read("<I", 0)

    def _read(self, fmt: str, pos: int) -> int:
        size, n = struct.calcsize(fmt), len(self.data)
        if pos < 0 or pos + size > n:
            raise ValueError(f"reference to byte {pos} past the end of the {n}-byte file")
        return struct.unpack_from(fmt, self.data, pos)[0]

    def _field(self, table: int, index: int) -> int | None:
        vtable = table - self._read("<i", table)
        slot = 4 + 2 * index
        if slot >= self._read("<H", vtable):
            return None
        offset = self._read("<H", vtable + slot)
        return table + offset if offset else None

    def _vector(self, pos: int | None) -> tuple[int, int]:
        """``(first element position, length)`` of the vector a field points to."""
        if pos is None:
            return 0, 0
        start = pos + self._read("<I", pos)
        length = self._read("<I", start)
        return start + 4, length

    def _tables(self, pos: int | None) -> list[int]:
        start, count = self._vector(pos)
        return [start + 4 * i + self._read("<I", start + 4 * i) for i in range(count)]

    def _bytes(self, begin: int, length: int, what: str) -> bytes:
        if begin + length > len(self.data):
            raise ValueError(
                f"{what} ends at byte {begin + length} of a {len(self.data)}-byte file"
            )
        return self.data[begin : begin + length]

    def buffer(self, index: int) -> bytes:
        """Contents of buffer ``index``: inline data, or offset/size past the flatbuffer."""
        buffers = self._tables(self._field(self.root, self.MODEL_BUFFERS))
        if not 0 <= index < len(buffers):
            raise ValueError(f"buffer {index} does not exist ({len(buffers)} buffers)")
        return self._buffer(buffers[index], index)

    def _buffer(self, table: int, index: int) -> bytes:
        begin, length = self._vector(self._field(table, self.BUFFER_DATA))
        if length:
            return self._bytes(begin, length, f"buffer {index}")
        offset_field = self._field(table, self.BUFFER_OFFSET)
        size_field = self._field(table, self.BUFFER_SIZE)
        if offset_field is None or size_field is None:
            return b""
        offset, size = self._read("<Q", offset_field), self._read("<Q", size_field)
        return self._bytes(offset, size, f"buffer {index}") if size else b""

    def check_buffers(self) -> None:
        """Every tensor buffer lies inside the file (what a cut-off copy breaks first)."""
        for i, table in enumerate(self._tables(self._field(self.root, self.MODEL_BUFFERS))):
            self._buffer(table, i)

    def metadata(self, name: str) -> bytes | None:
        """The model-metadata entry ``name`` (None when absent)."""
        for entry in self._tables(self._field(self.root, self.MODEL_METADATA)):
            begin, length = self._vector(self._field(entry, self.METADATA_NAME))
            if self._bytes(begin, length, "metadata name") == name.encode():
                index_field = self._field(entry, self.METADATA_BUFFER)
                return self.buffer(self._read("<I", index_field) if index_field else 0)
        return None


def read_metadata(data: bytes, name: str) -> bytes | None:
    """Check that ``data`` is TFLite with every tensor buffer inside the file, and return its
    model-metadata entry ``name`` (None when absent). ``ValueError`` says what is wrong."""
    model = TFLiteFile(data)
    model.check_buffers()
    return model.metadata(name)
