"""The strict JSON parser every request body goes through, and the reader of stored records."""

from __future__ import annotations

import pytest

from app import codec
from app.errors import BadJSON
from tests.support import nested_lists, same_json


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        (b'{"x": NaN}', "NaN"),
        (b'{"x": Infinity}', "Infinity"),
        (b'{"x": -Infinity}', "-Infinity"),
        (b'{"x": 1e400}', "too large"),
        (b'{"x": "\\ud800"}', "surrogate"),
        (b'{"x": "\\udc80 and more"}', "surrogate"),
        (b'{"x": 1, "x": 2}', "'x' appears more than once"),
        (b'{"a": {"k": [], "k": {}}}', "'k' appears more than once"),
        (b'{"x": ' + b"9" * 101 + b"}", "more than 100 digits"),
        (b'{"x": -' + b"9" * 5000 + b"}", "more than 100 digits"),
        (b"[" * 65 + b"]" * 65, "deeper than 64"),
        (b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}", "deeper than 64"),
        (b'[{"a":' * 32 + b"[1, {}]" + b"}]" * 32, "deeper than 64"),  # objects and arrays, 65 deep
        (b'{"a":' * 65 + b"1" + b"}" * 65, "deeper than 64"),
        (b'{"x": "\xed\xa0\x80"}', "not UTF-8"),
        (b'{"x": 1,}', "line 1 column 9"),
    ],
)
def test_what_is_not_strict_json_is_refused_and_named(raw: bytes, named: str) -> None:
    with pytest.raises(BadJSON, match=named.replace("(", r"\(")):
        codec.loads_request(raw)


def test_awkward_but_valid_json_reads_exactly() -> None:
    huge = "-1" + "0" * 99
    raw = (
        f'{{"huge": {huge}, "emoji": "\\ud83d\\ude00 é 日本", "max": 9223372036854775807, "min": -9223372036854775808,'
        ' "big": 1.7976931348623157e308, "tiny": 5e-324, "neg0": -0.0, "empty": {}, "none": [], "nul": "\\u0000"}'
    )
    parsed = codec.loads_request(raw.encode())
    expected = {
        "emoji": "😀 é 日本",
        "max": 2**63 - 1,
        "min": -(2**63),
        "huge": -(10**99),
        "big": 1.7976931348623157e308,
        "tiny": 5e-324,
        "neg0": -0.0,
        "empty": {},
        "none": [],
        "nul": "\x00",
    }
    assert same_json(parsed, expected)


def test_nesting_up_to_the_limit_is_accepted() -> None:
    assert codec.loads_request(b"[" * 64 + b"]" * 64) == nested_lists(64)
    assert codec.loads_request(b'[{"a":' * 31 + b"[1, {}]" + b"}]" * 31) is not None  # objects and arrays, 64 deep
    assert codec.loads_request(b'{"a":' * 64 + b"1" + b"}" * 64) is not None


def test_stored_records_are_read_as_strictly_but_without_the_request_limits() -> None:
    with pytest.raises(BadJSON, match="NaN"):
        codec.loads(b'{"x": NaN}')
    with pytest.raises(BadJSON, match="surrogate"):
        codec.loads(b'["\\ud800"]')
    # A handler's result may be deeper or larger than a request may; it was written by rqflow.
    assert codec.loads(b"[" * 100 + b"]" * 100) == nested_lists(100)
    assert codec.loads(b"[18446744073709551617]") == [2**64 + 1]


def test_encoding_never_loses_a_digit() -> None:
    value = {"n": 2**70 + 1, "s": "é"}  # not a power of two: a float of it would not compare equal
    assert codec.loads(codec.dumps(value)) == value
