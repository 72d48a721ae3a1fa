"""Resume tokens of the change feed: round trip, and every made-up or altered token refused."""

from __future__ import annotations

import pytest
from plexsync.catalog.changes import TokenCodec
from plexsync.common.errors import InvalidArgumentError


def test_round_trip() -> None:
    codec = TokenCodec(b"k" * 48)
    for seq in (0, 1, 12345, 2**62):
        token = codec.encode(seq)
        assert codec.decode(token) == seq


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t[:-1],
        lambda t: t + "A",
        lambda t: "c2" + t[2:],
        lambda t: t[:5] + ("B" if t[5] == "A" else "A") + t[6:],
    ],
)
def test_altered_tokens_are_invalid(mutate: object) -> None:
    codec = TokenCodec(b"k" * 48)
    token = codec.encode(77)
    with pytest.raises(InvalidArgumentError) as err:
        codec.decode(mutate(token))  # type: ignore[operator]
    assert err.value.violations[0].field == "resume_token"


def test_another_deployments_token_is_invalid() -> None:
    with pytest.raises(InvalidArgumentError):
        TokenCodec(b"a" * 48).decode(TokenCodec(b"b" * 48).encode(5))
