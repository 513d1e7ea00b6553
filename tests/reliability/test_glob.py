"""store-options keys: Go ``path.Match`` in linear time (#19.7).

A key with many ``*`` made the backtracking regex exponential (28 stars: 53 s for any
command). The matcher now places each chunk leftmost, as Go does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from desync_core.config import glob_match

TOKENS = ["a", "b", "/", "?", "*", "**", "[ab]", "[^a/]", "[a-b]", "\\*", "\\a"]


def backtracking_reference(pattern: str) -> re.Pattern[str]:
    """The old translation (correct, but exponential on some inputs): used on small
    inputs for patterns whose classes cannot match '/', where Go agrees with it."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            end = pattern.index("]", i + 1)
            out.append(pattern[i:end + 1])
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=8).map("".join),
       st.text(alphabet="ab/*", max_size=10))
def test_glob_agrees_with_backtracking_matcher(pattern: str, name: str) -> None:
    expected = backtracking_reference(pattern).fullmatch(name) is not None
    assert glob_match(pattern, name) == expected, (pattern, name)


def test_many_stars_are_linear() -> None:
    # Each of these took the regex from seconds to hours (exponential backtracking).
    assert not glob_match("*" * 28 + "x", "a" * 60)
    assert not glob_match("a*" * 28 + "b", "a" * 300)
    assert not glob_match("*a" * 40 + "*b", "a" * 300 + "c")
    assert glob_match("*a" * 40 + "*b", "a" * 300 + "b")
    assert glob_match("https://" + "*" * 1000 + "/x", "https://host/x")


def test_go_specific_results() -> None:
    assert glob_match("a**b", "ab")
    assert not glob_match("**", "a/b")
    assert glob_match("[b-a]", "a") is False  # a reversed range is valid and empty
    assert glob_match("[^a]", "/")  # classes may match '/' (only ? and * may not)
    # Go places each chunk leftmost: '[^a]' takes the 'x', so the star would need
    # to cross '/' and the name does not match (a backtracking regex says it does).
    assert not glob_match("*[^a]*b", "x/yb")
    for malformed in ("[", "a\\", "[a", "[]", "[-a]"):
        assert not glob_match(malformed, malformed)


def test_many_star_key_in_the_config_file(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    key = "/" + "*" * 28 + "nomatch"
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"store-options": {key: {"uncompressed": True}}}))
    (tmp_path / "in").write_bytes(b"x" * 1000)
    result = cli("--config", cfg, "make", "-s", tmp_path / ("a" * 80), tmp_path / "x.caibx",
                 tmp_path / "in")
    assert result.code == 0, result.err
