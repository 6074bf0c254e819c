"""Node keys: encrypted keystores, passphrase files and prompts, and a key that never prints."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest
from eth_account import Account

from lpstream.errors import ConfigError
from payments.keys import (
    KeystoreError,
    NodeKey,
    create_keystore,
    load_key,
    read_passphrase,
)
from payments.pm import address_of, keccak256

FAST = 2**4  # scrypt N for tests; real keystores use DEFAULT_SCRYPT_N
KEY = keccak256(b"orchestrator key")


def test_a_keystore_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "node.json"
    address = create_keystore(path, "correct horse", private_key=KEY, scrypt_n=FAST)
    assert address == address_of(KEY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document["crypto"]["kdf"] == "scrypt"
    assert KEY.hex() not in path.read_text()
    private_key, loaded = load_key(path, "correct horse")
    assert (private_key, loaded) == (KEY, address)
    assert list(tmp_path.glob("keys/.*")) == []  # no temporary file left behind


def test_a_fresh_key_is_random(tmp_path: Path) -> None:
    a = create_keystore(tmp_path / "a.json", "pw", scrypt_n=FAST)
    b = create_keystore(tmp_path / "b.json", "pw", scrypt_n=FAST)
    assert a != b
    assert load_key(tmp_path / "a.json", "pw").address == a


def test_an_existing_keystore_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "node.json"
    create_keystore(path, "pw", private_key=KEY, scrypt_n=FAST)
    before = path.read_bytes()
    with pytest.raises(KeystoreError, match="already exists; not overwriting it"):
        create_keystore(path, "pw", scrypt_n=FAST)
    assert path.read_bytes() == before


def test_an_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="empty passphrase"):
        create_keystore(tmp_path / "node.json", "", scrypt_n=FAST)


def test_a_wrong_passphrase_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "node.json"
    create_keystore(path, "right", private_key=KEY, scrypt_n=FAST)
    with pytest.raises(ConfigError, match=f"^wrong passphrase for keystore {path}$"):
        load_key(path, "wrong")


def test_a_missing_or_malformed_keystore_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="does not exist"):
        load_key(tmp_path / "none.json", "pw")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(KeystoreError, match="is not JSON"):
        load_key(bad, "pw")
    bad.write_text('{"version": 3}')
    with pytest.raises(KeystoreError, match="is not an Ethereum JSON keystore"):
        load_key(bad, "pw")


def test_a_keystore_made_elsewhere_loads(tmp_path: Path) -> None:
    path = tmp_path / "geth.json"
    document = Account.encrypt(KEY, "pw", kdf="pbkdf2", iterations=16)
    path.write_text(json.dumps(document))
    assert load_key(path, "pw") == (KEY, address_of(KEY))


def test_a_keystore_naming_another_address_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.json"
    document = Account.encrypt(KEY, "pw", kdf="pbkdf2", iterations=16)
    document["address"] = "00" * 20
    path.write_text(json.dumps(document))
    with pytest.raises(KeystoreError, match="holds the key of"):
        load_key(path, "pw")


def test_the_key_never_shows_in_its_text_forms(caplog: pytest.LogCaptureFixture) -> None:
    key = NodeKey.from_private_key(KEY)
    secrets = (KEY.hex(), KEY.hex().upper(), repr(KEY), str(KEY), str(int.from_bytes(KEY)))
    caplog.set_level(logging.INFO)
    logging.getLogger("test").info("node key %s %r", key, key)
    texts = (repr(key), str(key), format(key), f"{key}", f"{key!r}", f"{key:>80}", caplog.text)
    for text in texts:
        assert key.address in text
        for secret in secrets:
            assert secret not in text
    assert key.private_key == KEY


def test_a_passphrase_file_loses_one_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "passphrase"
    for content, expected in (
        ("pw\n", "pw"),
        ("pw\n\n", "pw\n"),
        ("pw", "pw"),
        (" pw \r\n", " pw "),
    ):
        path.write_text(content, newline="")
        path.chmod(0o600)
        assert read_passphrase(path, prompt=False) == expected


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644])
def test_a_passphrase_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "passphrase"
    path.write_text("pw\n")
    path.chmod(mode)
    with pytest.raises(ConfigError, match=f"mode {mode:04o}.*chmod 600"):
        read_passphrase(path, prompt=True)


def test_a_missing_or_empty_passphrase_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_passphrase(tmp_path / "none", prompt=True)
    path = tmp_path / "passphrase"
    path.write_text("\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="is empty"):
        read_passphrase(path, prompt=True)


def test_the_passphrase_is_typed_when_prompting_is_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    typed = iter(["typed", "typed", "typed", "typed", "other"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(typed))
    assert read_passphrase(None, prompt=True) == "typed"
    assert read_passphrase(None, prompt=True, confirm=True) == "typed"
    with pytest.raises(ConfigError, match="differ"):
        read_passphrase(None, prompt=True, confirm=True)
    with pytest.raises(ConfigError, match="prompting is off"):
        read_passphrase(None, prompt=False)
