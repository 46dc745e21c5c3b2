"""Request bytes into helium.v1 messages; bytes that do not parse are refused naming the field.

The protobuf decoder says only that a message is corrupt. ``parse_message`` then walks the wire
format itself along the message's descriptor and reports the first field at fault: truncated
data, invalid UTF-8 in a string, nesting past the decoder's depth, a malformed tag.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from helium_trt.errors import InvalidWorkflowError

# upb's default recursion limit: a message nested deeper than this does not decode.
MAX_DEPTH = 100
# Fields the diagnosis reads before giving up naming one (it runs on the event loop).
MAX_FIELDS = 200_000
_VARINT, _FIXED64, _LENGTH, _START_GROUP, _END_GROUP, _FIXED32 = range(6)


class WireError(Exception):
    """Where (a field path) and why the bytes stop being a valid message."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def parse_message(data: bytes, message_class: type[Message], source: str = "") -> Message:
    """``message_class.FromString(data)``; raises InvalidWorkflowError naming the field at fault
    (and ``source``, where the bytes came from, e.g. "input 'request'" of a Triton model)."""
    try:
        return message_class.FromString(data)
    except DecodeError:
        pass
    what = f"{source} is not a valid" if source else "not a valid"
    name = message_class.DESCRIPTOR.full_name
    try:
        check_wire(memoryview(data), message_class.DESCRIPTOR, [MAX_FIELDS])
    except WireError as exc:
        raise InvalidWorkflowError(f"{what} {name}: {exc.reason}",
                                   field=_short(exc.path) or "(message)") from None
    raise InvalidWorkflowError(f"{what} {name} (the protobuf decoder refused it)",
                               field="(message)")


def check_wire(data: memoryview, descriptor: Descriptor, budget: list[int], path: str = "",
               depth: int = 0) -> None:
    """Raise WireError at the first problem in ``data`` read as ``descriptor``; returns quietly
    once ``budget[0]`` fields have been read."""
    if depth > MAX_DEPTH:
        raise WireError(path, f"messages nested more than {MAX_DEPTH} levels deep")
    counts: dict[int, int] = {}
    pos, end = 0, len(data)
    while pos < end and budget[0] > 0:
        budget[0] -= 1
        tag, pos = _varint(data, pos, path or "(message)", "a field tag")
        number, wire_type = tag >> 3, tag & 7
        field = descriptor.fields_by_number.get(number)
        index = counts.get(number, 0)
        counts[number] = index + 1
        here = _field_path(path, field, number, index)
        if number == 0 or wire_type in (_START_GROUP, _END_GROUP) or wire_type > _FIXED32:
            raise WireError(here, f"malformed tag (field number {number}, wire type {wire_type})")
        if wire_type == _VARINT:
            _, pos = _varint(data, pos, here, "a varint value")
        elif wire_type in (_FIXED64, _FIXED32):
            pos += 8 if wire_type == _FIXED64 else 4
            if pos > end:
                raise WireError(here, "truncated: a fixed-size value runs past the end")
        else:
            size, pos = _varint(data, pos, here, "a length")
            if pos + size > end:
                raise WireError(here, f"truncated: {size} bytes announced, {end - pos} left")
            _check_payload(data[pos:pos + size], field, here, depth, budget)
            pos += size


def _check_payload(payload: memoryview, field: FieldDescriptor | None, path: str, depth: int,
                   budget: list[int]) -> None:
    if field is None:
        return  # an unknown field is skipped by the decoder too
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        check_wire(payload, field.message_type, budget, path, depth + 1)
    elif field.type == FieldDescriptor.TYPE_STRING:
        try:
            str(payload, "utf-8")
        except UnicodeDecodeError as exc:
            raise WireError(path, f"invalid UTF-8 at byte {exc.start} of the string") from None


def _varint(data: bytes, pos: int, path: str, what: str) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise WireError(path, f"truncated: the data ends inside {what}")
        if shift >= 64:
            raise WireError(path, f"{what} is longer than 10 bytes")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _field_path(path: str, field: FieldDescriptor | None, number: int, index: int) -> str:
    name = field.name if field is not None else f"#{number}"
    if field is not None and _is_repeated(field):
        name += f"[{index}]"
    return f"{path}.{name}" if path else name


def _is_repeated(field: FieldDescriptor) -> bool:
    # NOTE: protobuf 7 dropped ``label`` for ``is_repeated``; older releases have only ``label``.
    found = getattr(field, "is_repeated", None)
    return found if found is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _short(path: str, keep: int = 4) -> str:
    """A deep path with its middle elided, so an error about nesting stays one short line."""
    parts = path.split(".")
    if len(parts) <= 2 * keep:
        return path
    return ".".join(parts[:keep]) + f".(... {len(parts) - 2 * keep} more ...)." + \
        ".".join(parts[-keep:])
