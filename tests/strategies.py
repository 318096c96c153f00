"""Hypothesis strategies shared by the parser fuzz tests."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def mutated(draw: st.DrawFn, base: str, special: str | list[str] = "\n\r =+/0A-") -> str:
    """``base`` after 1-4 random edits: insert, delete, replace or duplicate a span.

    ``special`` are characters (or short strings) that matter to the format under test, drawn
    as often as arbitrary UTF-8 characters.
    """
    text = base
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "dup"]))
        char = draw(st.characters(codec="utf-8") | st.sampled_from(list(special)))
        if kind == "insert":
            text = text[:pos] + char + text[pos:]
        elif kind == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 8)) :]
        elif kind == "replace":
            text = text[:pos] + char + text[pos + 1 :]
        else:
            end = draw(st.integers(pos, len(text)))
            text = text[:end] + text[pos:end] + text[end:]
    return text
