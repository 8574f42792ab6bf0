"""Checkpoint texts (node.tlog._checkpoint): c2sp.org/tlog-checkpoint's example and every
line rule, and the round trip."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.tlog import EMPTY_ROOT, Checkpoint, CheckpointError, parse_checkpoint

ROOT = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
EXAMPLE = f"example.com/behind-the-sofa\n20852163\n{ROOT}\n"  # c2sp.org/tlog-checkpoint


def test_the_spec_example() -> None:
    checkpoint = parse_checkpoint(EXAMPLE)
    assert checkpoint == Checkpoint("example.com/behind-the-sofa", 20852163, base64.b64decode(ROOT))
    assert checkpoint.body() == EXAMPLE


def test_extension_lines_are_kept() -> None:
    text = EXAMPLE + "lots\nof lines\n"
    checkpoint = parse_checkpoint(text)
    assert checkpoint.extensions == ("lots", "of lines")
    assert checkpoint.body() == text


def test_the_empty_tree_and_the_largest_size() -> None:
    empty = base64.b64encode(EMPTY_ROOT).decode()
    assert parse_checkpoint(f"log\n0\n{empty}\n").size == 0
    assert parse_checkpoint(f"log\n{2**63 - 1}\n{ROOT}\n").size == 2**63 - 1


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (EXAMPLE[:-1], "ends with a newline"),
        ("example.com/log\n123\n", "origin, size and root"),
        (f"\n123\n{ROOT}\n", "origin line is empty"),
        (f"log\r\n123\n{ROOT}\n", "control character"),
        (f"log\n0123\n{ROOT}\n", "without leading zeros"),
        (f"log\n00\n{ROOT}\n", "without leading zeros"),
        (f"log\n-34\n{ROOT}\n", "without leading zeros"),
        (f"log\n+34\n{ROOT}\n", "without leading zeros"),
        (f"log\n 34\n{ROOT}\n", "without leading zeros"),
        (f"log\n\u0661\u0662\n{ROOT}\n", "without leading zeros"),  # Arabic-Indic digits
        (f"log\nbananas\n{ROOT}\n", "without leading zeros"),
        (f"log\n{2**63}\n{ROOT}\n", "not below 2\\*\\*63"),
        ("log\n123\nYmFuYW5hcw==\n", "32 bytes, not 7"),  # transparency-dev/formats' "bananas"
        ("log\n123\nThisIsn'tBase64\n", "not base64"),
        (f"log\n123\n{ROOT[:-2]}J=\n", "not canonical"),  # a trailing bit set
        (f"log\n123\n{ROOT}\n\n", "extension line is empty"),
        (f"log\n123\n{ROOT}\next\n\n", "extension line is empty"),
    ],
)
def test_refusals(text: str, problem: str) -> None:
    with pytest.raises(CheckpointError, match=problem):
        parse_checkpoint(text)


@pytest.mark.parametrize(
    "fields",
    [
        ("", 1, EMPTY_ROOT, ()),
        ("a\nb", 1, EMPTY_ROOT, ()),
        ("log", -1, EMPTY_ROOT, ()),
        ("log", 2**63, EMPTY_ROOT, ()),
        ("log", 1, EMPTY_ROOT[:31], ()),
        ("log", 1, EMPTY_ROOT, ("",)),
        ("log", 1, EMPTY_ROOT, ("two\nlines",)),
    ],
)
def test_a_checkpoint_that_could_not_be_written_is_refused(
    fields: tuple[str, int, bytes, tuple[str, ...]],
) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint(*fields)


line_st = st.text(st.characters(blacklist_categories=["Cc", "Cs"]), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(
    origin=line_st,
    size=st.integers(0, 2**63 - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(line_st, max_size=3),
)
def test_round_trip(origin: str, size: int, root: bytes, extensions: list[str]) -> None:
    checkpoint = Checkpoint(origin, size, root, tuple(extensions))
    assert parse_checkpoint(checkpoint.body()) == checkpoint
