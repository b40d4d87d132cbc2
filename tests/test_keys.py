"""Node keys and the key registry.

Key files (written 0600, refused when readable, garbage, encrypted or of the wrong
type), recomputable key ids, key records, and the registry's validity windows:
rotation overlap, the newest usable encryption key, revocation and unknown keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from loopback import T0
from receipts_helpers import DAY, REGION
from receipts_helpers import remote_error as _remote_error

from protocol import examples as ex
from protocol.errors import LocalProtocolError, Reason, RemoteProtocolError
from receipts import (
    BatchSigner,
    KeyFileError,
    KeyRecord,
    KeyRegistry,
    NodeKeys,
    SignatureChecker,
    key_id,
)
from receipts.registry import records_from_public_json

# ------------------------------------------------------------------ key files


def _pem(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.write_bytes(data)
    path.chmod(mode)


@pytest.fixture(scope="module")
def rsa_pem() -> bytes:
    return _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))


def test_save_writes_private_files_0600(tmp_path: Path) -> None:
    keys = NodeKeys.generate(REGION)
    directory = tmp_path / "keys"
    keys.save(directory, valid_from=T0)
    for name in ("sign.pem", "encrypt.pem"):
        mode = stat.S_IMODE((directory / name).stat().st_mode)
        assert mode == 0o600, f"{name}: {mode:o}"
    public = json.loads((directory / "public.json").read_text())
    assert public["region"] == REGION
    assert public["valid_from"] == T0
    assert public["sign_key"] == keys.sign_key_id
    assert public["encrypt_key"] == keys.encrypt_key_id
    assert base64.b64decode(public["sign_public"]) == keys.sign_public
    records = records_from_public_json(public)
    assert {r.purpose for r in records} == {"sign", "encrypt"}
    assert all(r.region == REGION and r.valid_from == T0 for r in records)
    assert b"PRIVATE" not in (directory / "public.json").read_bytes()


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    first = NodeKeys.generate(REGION)
    first.save(tmp_path, valid_from=T0)
    before = (tmp_path / "sign.pem").read_bytes()
    with pytest.raises(KeyFileError, match="already exists") as info:
        NodeKeys.generate(REGION).save(tmp_path, valid_from=T0)
    assert str(tmp_path / "sign.pem") in str(info.value)
    assert (tmp_path / "sign.pem").read_bytes() == before
    assert NodeKeys.load(tmp_path, REGION).sign_key_id == first.sign_key_id


def test_load_round_trips(tmp_path: Path) -> None:
    keys = NodeKeys.generate(REGION)
    keys.save(tmp_path, valid_from=T0)
    loaded = NodeKeys.load(tmp_path, REGION)
    assert loaded.region == REGION
    assert loaded.sign_public == keys.sign_public
    assert loaded.encrypt_public == keys.encrypt_public
    assert (loaded.sign_key_id, loaded.encrypt_key_id) == (keys.sign_key_id, keys.encrypt_key_id)
    message = b"tongban"
    keys.signing.public_key().verify(loaded.signing.sign(message), message)
    peer = X25519PrivateKey.generate()
    assert loaded.encryption.exchange(peer.public_key()) == peer.exchange(
        keys.encryption.public_key())


def test_repr_shows_no_private_material() -> None:
    keys = NodeKeys.generate(REGION)
    raw = keys.signing.private_bytes_raw()
    text = repr(keys)
    assert keys.sign_key_id in text
    assert raw.hex() not in text
    assert base64.b64encode(raw).decode() not in text


def _saved(tmp_path: Path) -> Path:
    NodeKeys.generate(REGION).save(tmp_path, valid_from=T0)
    return tmp_path


@pytest.mark.parametrize("name", ["sign.pem", "encrypt.pem"])
def test_load_missing_file(tmp_path: Path, name: str) -> None:
    directory = _saved(tmp_path)
    (directory / name).unlink()
    with pytest.raises(KeyFileError, match="does not exist") as info:
        NodeKeys.load(directory, REGION)
    assert str(directory / name) in str(info.value)


def test_load_from_an_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError) as info:
        NodeKeys.load(tmp_path / "nowhere", REGION)
    assert str(tmp_path / "nowhere" / "sign.pem") in str(info.value)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601])
@pytest.mark.parametrize("name", ["sign.pem", "encrypt.pem"])
def test_load_refuses_readable_files(tmp_path: Path, name: str, mode: int) -> None:
    directory = _saved(tmp_path)
    (directory / name).chmod(mode)
    with pytest.raises(KeyFileError, match="chmod 600") as info:
        NodeKeys.load(directory, REGION)
    assert str(directory / name) in str(info.value)
    assert f"{mode:o}" in str(info.value)


def test_load_accepts_owner_read_only(tmp_path: Path) -> None:
    directory = _saved(tmp_path)
    for name in ("sign.pem", "encrypt.pem"):
        (directory / name).chmod(0o400)
    assert NodeKeys.load(directory, REGION).region == REGION


@pytest.mark.parametrize(
    "content",
    [b"garbage", b"", b"\x00\xff" * 50,
     b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"],
)
@pytest.mark.parametrize("name", ["sign.pem", "encrypt.pem"])
def test_load_refuses_garbage(tmp_path: Path, name: str, content: bytes) -> None:
    directory = _saved(tmp_path)
    _write(directory / name, content)
    with pytest.raises(KeyFileError) as info:
        NodeKeys.load(directory, REGION)
    assert str(directory / name) in str(info.value)


def test_load_refuses_an_encrypted_pem(tmp_path: Path) -> None:
    directory = _saved(tmp_path)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    _write(directory / "sign.pem", pem)
    with pytest.raises(KeyFileError) as info:
        NodeKeys.load(directory, REGION)
    assert str(directory / "sign.pem") in str(info.value)


@pytest.mark.parametrize(
    ("name", "key", "expected"),
    [
        ("encrypt.pem", "rsa", "X25519"),
        ("encrypt.pem", "ed25519", "X25519"),
        ("sign.pem", "rsa", "Ed25519"),
        ("sign.pem", "x25519", "Ed25519"),
    ],
)
def test_load_refuses_the_wrong_key_type(
    tmp_path: Path, rsa_pem: bytes, name: str, key: str, expected: str
) -> None:
    directory = _saved(tmp_path)
    pem = {"rsa": rsa_pem, "ed25519": _pem(Ed25519PrivateKey.generate()),
           "x25519": _pem(X25519PrivateKey.generate())}[key]
    _write(directory / name, pem)
    with pytest.raises(KeyFileError, match=f"not an {expected} key") as info:
        NodeKeys.load(directory, REGION)
    assert str(directory / name) in str(info.value)


def test_key_ids_are_recomputable() -> None:
    keys = NodeKeys.generate(REGION)
    for alg, public, kid in (("ed25519", keys.sign_public, keys.sign_key_id),
                             ("x25519", keys.encrypt_public, keys.encrypt_key_id)):
        assert len(public) == 32
        assert kid == f"{alg}:{hashlib.sha256(public).hexdigest()[:16]}"
        assert key_id(alg, public) == kid
    assert keys.sign_public == keys.signing.public_key().public_bytes_raw()


# ------------------------------------------------------------------ registry


def test_key_record_checks_its_id() -> None:
    keys = NodeKeys.generate(REGION)
    with pytest.raises(ValueError, match="does not match"):
        KeyRecord(keys.sign_key_id, REGION, "sign", keys.encrypt_public, T0)
    with pytest.raises(ValueError, match="does not match"):
        KeyRecord(keys.sign_key_id, REGION, "encrypt", keys.sign_public, T0)
    record = KeyRecord(keys.sign_key_id, REGION, "sign", keys.sign_public, T0, T0 + DAY, T0 + 5)
    assert KeyRecord.from_wire(record.to_wire()) == record
    assert "valid_until" not in KeyRecord(keys.sign_key_id, REGION, "sign", keys.sign_public,
                                          T0).to_wire()


class _Rotation:
    """Old key valid until T, new key from T - overlap."""

    OVERLAP = 7 * DAY
    T = T0

    def __init__(self) -> None:
        self.old = NodeKeys.generate(REGION)
        self.new = NodeKeys.generate(REGION)
        self.registry = KeyRegistry()
        self.registry.add_node(self.old, valid_from=self.T - 365 * DAY, valid_until=self.T)
        self.registry.add_node(self.new, valid_from=self.T - self.OVERLAP)

    def verifies(self, keys: NodeKeys, at: int) -> bool:
        signer = BatchSigner(keys.signing, keys.sign_key_id)
        leaf = hashlib.sha256(b"leaf").digest()
        (signature,) = signer.sign([leaf])
        try:
            public = self.registry.signing_key(keys.sign_key_id, REGION, at)
        except RemoteProtocolError as exc:
            if exc.reason is not Reason.KEY_NOT_VALID:
                raise
            return False
        SignatureChecker().check(leaf, signature, public)
        return True


def test_rotation_overlap() -> None:
    r = _Rotation()
    cases = [
        (r.T - 365 * DAY - 1, False, False),
        (r.T - 365 * DAY, True, False),
        (r.T - r.OVERLAP - 1, True, False),
        (r.T - r.OVERLAP, True, True),
        (r.T - 1, True, True),
        (r.T, False, True),
        (r.T + 1000 * DAY, False, True),
    ]
    for at, old_ok, new_ok in cases:
        assert (r.verifies(r.old, at), r.verifies(r.new, at)) == (old_ok, new_ok), at - r.T


def test_encryption_key_is_the_newest_usable() -> None:
    r = _Rotation()
    assert r.registry.encryption_key(REGION, r.T - r.OVERLAP - 1)[0] == r.old.encrypt_key_id
    assert r.registry.encryption_key(REGION, r.T - 1)[0] == r.new.encrypt_key_id
    assert r.registry.encryption_key(REGION, r.T)[0] == r.new.encrypt_key_id
    # Our own send path: no usable key of the recipient is our problem, not the peer's.
    with pytest.raises(LocalProtocolError, check=lambda e: e.reason is Reason.NOT_A_MEMBER):
        r.registry.encryption_key(ex.COLLECTING, r.T)
    with pytest.raises(LocalProtocolError, check=lambda e: e.reason is Reason.NOT_A_MEMBER):
        r.registry.encryption_key(REGION, r.T - 400 * DAY)


def test_revocation() -> None:
    keys = NodeKeys.generate(REGION)
    registry = KeyRegistry()
    registry.add_node(keys, valid_from=T0 - 100 * DAY)
    kid = keys.sign_key_id
    revoked = T0
    before, after = revoked - DAY, revoked + DAY
    assert registry.signing_key(kid, REGION, before, now=before)  # warms the key cache
    registry.revoke(kid, revoked)
    # A message arriving now is refused whatever time it claims.
    for now in (revoked, after):
        with _remote_error(Reason.KEY_NOT_VALID):
            registry.signing_key(kid, REGION, before, now=now)
    # A receipt made before the revocation still verifies later (no ``now``).
    assert registry.signing_key(kid, REGION, before)
    assert registry.signing_key(kid, REGION, revoked - 1)
    assert registry.signing_key(kid, REGION, before, now=revoked - 1)
    for at in (revoked, after):
        with _remote_error(Reason.KEY_NOT_VALID):
            registry.signing_key(kid, REGION, at)
    assert registry.record(kid).revoked_at == revoked


def test_wrong_region_purpose_or_id_is_an_unknown_key() -> None:
    keys = NodeKeys.generate(REGION)
    registry = KeyRegistry()
    registry.add_node(keys, valid_from=T0 - DAY)
    with _remote_error(Reason.UNKNOWN_KEY):
        registry.signing_key(keys.sign_key_id, ex.COLLECTING, T0)
    with _remote_error(Reason.UNKNOWN_KEY):
        registry.signing_key(keys.encrypt_key_id, REGION, T0)
    with _remote_error(Reason.UNKNOWN_KEY):
        registry.signing_key("ed25519:0000000000000000", REGION, T0)
    with _remote_error(Reason.UNKNOWN_KEY):
        registry.revoke("ed25519:0000000000000000", T0)
    assert len(registry) == 2
