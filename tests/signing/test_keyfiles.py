"""Loading key files: a mixed-up path gets an error that says what is wrong with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from signing.errors import KeyFileError
from signing.keyfiles import generate_key_pair, load_secret_key


def test_a_public_key_given_as_the_secret_key_is_named_as_such(tmp_path: Path) -> None:
    pub, key, made = generate_key_pair(tmp_path, "alice", passphrase=None)
    assert pub.stat().st_mode & 0o777 == 0o644  # readable by others, as a public key may be
    with pytest.raises(KeyFileError) as caught:
        load_secret_key(pub)
    message = str(caught.value)
    assert "is a public key" in message and "chmod" not in message, message
    assert load_secret_key(key).key_id == made.key_id  # the right file still loads


def test_a_secret_key_readable_by_others_is_still_refused(tmp_path: Path) -> None:
    _, key, _ = generate_key_pair(tmp_path, "bob", passphrase=None)
    key.chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        load_secret_key(key)
