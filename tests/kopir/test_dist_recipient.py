"""``kopir list assign`` refuses a recipient it cannot read without repeating it: what was typed
may be a phone number, and a refusal goes to a terminal, a log or a cron mail."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kopir.distcmd import recipient_id
from kopir.output import CommandFailed
from tests.cli import kopir
from tests.kopir.test_cli_list import relay_config
from tests.relay.test_relay import KEY
from tests.relay.test_relay_cli import free_port

WRONG = "+7 701 234 56 789"  # one digit too many


def test_a_refused_number_is_named_by_position_not_repeated(tmp_path: Path) -> None:
    with pytest.raises(CommandFailed) as refused:
        recipient_id(WRONG, "KZ", 2)
    message = str(refused.value)
    assert message == (
        "recipient 2 is not tg:<id>, poster:<batch> or a phone number: "
        "not a valid phone number (wrong number of digits)"
    )
    assert recipient_id("8 701 234 56 78", "KZ") == "+77012345678"
    assert recipient_id("tg:42", "KZ") == "tg:42"

    config = tmp_path / "config.toml"
    relay_config(config, free_port(), free_port(), free_port(), {"main": KEY}, free_port())
    done = kopir("list", "assign", "tg:1", WRONG, "-c", config)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "recipient 2 is not" in done.stderr and "wrong number of digits" in done.stderr
    for part in ("701", "234", "789"):
        assert part not in done.stderr + done.stdout


written = st.text(st.sampled_from("0123456789 +()-.x"), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(text=written | st.text(max_size=70), position=st.integers(1, 9))
def test_fuzz_a_refusal_never_repeats_what_was_typed(text: str, position: int) -> None:
    try:
        recipient_id(text, "KZ", position)
    except CommandFailed as exc:
        message = str(exc)
        assert message.startswith(f"recipient {position} is not tg:<id>")
        # A country code (``+7``) may be named; no longer run of digits.
        assert not re.search(r"\d{4}", message), message
        if sum(c.isdigit() for c in text) >= 4:
            assert text.strip() not in message
