"""JSON in and out: one strict parser for everything that comes in, one encoder for what goes out.

Strict because Python's `json` accepts what is not JSON (RFC 8259) and the rest of the stack does
not: `NaN` and `Infinity` (which orjson, browsers and Starlette's responses refuse), `1e400`
(read as infinity), lone surrogates such as `"\\ud800"` (which no UTF-8 encoder writes), duplicate
keys (which parsers resolve differently) and nesting deep enough to exhaust the stack. Accepting any
of them once would store a record that later reads cannot answer. Request bodies are held to all
of that (`loads_request`); what rqflow itself stored is read back by `loads`, which refuses the
same values so that an old or hand-written record is reported as unreadable instead of breaking a
response for everyone.

Encoding: orjson, with the standard library where orjson refuses (integers beyond 64 bits), so the
result is always valid JSON and never loses a digit.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from itertools import chain
from typing import Any

import orjson

from app.defaults import MAX_DEPTH, MAX_INT_DIGITS
from app.errors import BadJSON

DECODE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, OverflowError, zlib.error)
"""What decoding a damaged stored record raises: bad JSON (BadJSON is a ValueError), dates, numbers,
base64, compressed data, a field missing or of the wrong shape."""

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
"""An escaped UTF-16 surrogate: a cheap test for whether a text needs the full surrogate check."""


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False, default=str).encode()


_LONG_DIGITS = re.compile(rb"[0-9]{19}")
"""A run of digits orjson may not read exactly (it reads integers past 64 bits as floats)."""


def loads(raw: bytes | str) -> Any:
    """A stored JSON document; BadJSON if it holds what strict JSON cannot (NaN, infinities, lone
    surrogates), so that it never reaches a response.

    orjson first (a worker reads three documents a task; the standard library with hooks took
    10 us each): it refuses the same values, so where it fails, or where a long run of digits
    could be an integer it would round, the strict parser decides and says why."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if not _LONG_DIGITS.search(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return _parse(raw, _STORED_DECODER)


def loads_request(raw: bytes | str) -> Any:
    """A request body, held to strict JSON: BadJSON for NaN, Infinity, numbers out of range (floats
    that overflow, integers longer than MAX_INT_DIGITS), lone surrogates, duplicate keys, or nesting
    deeper than MAX_DEPTH."""
    value = _parse(raw, _REQUEST_DECODER)
    if _too_deep(value, MAX_DEPTH):
        raise BadJSON(f"nested deeper than {MAX_DEPTH} levels of arrays and objects")
    return value


def _parse(raw: bytes | str, decoder: json.JSONDecoder) -> Any:
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
    except UnicodeDecodeError as error:
        raise BadJSON(f"not UTF-8 at byte {error.start}: {error.reason}") from None
    try:
        value = decoder.decode(text)
    except RecursionError:
        raise BadJSON(f"nested deeper than {MAX_DEPTH} levels of arrays and objects") from None
    except json.JSONDecodeError as error:
        raise BadJSON(f"{error.msg} at line {error.lineno} column {error.colno}") from None
    except ValueError as error:  # raised by the hooks, or int() past Python's digit limit
        raise BadJSON(str(error)) from None
    if _SURROGATE_ESCAPE.search(text):
        # Most such escapes are pairs (what `ensure_ascii` writes for an emoji); UTF-8 refuses
        # exactly the strings that hold an unpaired one.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise BadJSON("a string holds a lone UTF-16 surrogate (such as \\ud800), which is not text") from None
    return value


def _refuse_constant(name: str) -> Any:
    raise BadJSON(f"{name} is not a JSON number (RFC 8259)")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise BadJSON(f"the number {text[:40]} is too large for a 64-bit float")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise BadJSON(f"an integer has more than {MAX_INT_DIGITS} digits ({text[:20]}...)")
    return int(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadJSON(f"the key {key[:80]!r} appears more than once in one object")
            seen.add(key)
    return value


_STORED: dict[str, Any] = {"parse_constant": _refuse_constant, "parse_float": _finite}
_REQUEST: dict[str, Any] = {**_STORED, "parse_int": _bounded_int, "object_pairs_hook": _unique_keys}
# Made once: json.loads with hooks builds a decoder (and its scanner) for every document.
_STORED_DECODER = json.JSONDecoder(**_STORED)
_REQUEST_DECODER = json.JSONDecoder(**_REQUEST)


def _too_deep(value: Any, levels: int) -> bool:
    """Whether `value` nests arrays and objects more than `levels` deep (`value` is level 1).

    Level by level, each gathered by C-level iteration (a 10,000-task batch holds some 30,000
    arrays and objects; walking them one call each took 10 ms). What a parser made holds plain
    dicts and lists only."""
    level = [value]
    for _ in range(levels + 1):
        objects = list(filter(_is_object, level))
        arrays = list(filter(_is_array, level))
        if not objects and not arrays:
            return False
        level = [*chain.from_iterable(map(dict.values, objects)), *chain.from_iterable(arrays)]
    return True


def _is_object(value: Any) -> bool:
    return type(value) is dict


def _is_array(value: Any) -> bool:
    return type(value) is list


class JSONSerializer:
    """RQ's serializer interface (job data, results) on this module: what a job or result holds
    is read back as strictly as it was accepted."""

    @staticmethod
    def dumps(value: Any) -> bytes:
        return dumps(value)

    @staticmethod
    def loads(raw: bytes | str) -> Any:
        return loads(raw)


def text(value: bytes | str) -> str:
    """A Redis reply as text (clients may or may not decode replies)."""
    return value.decode() if isinstance(value, bytes) else value
