"""Deterministic test vectors for docs/protocol.md §11 (``docs/vectors.json``).

Every input is fixed: the private keys come from fixed 32-byte seeds, the
ephemeral X25519 key and the AES-GCM nonce of the envelope are fixed, and Ed25519
signatures are deterministic (RFC 8032), so ``generate()`` returns the same bytes
on every run and in every implementation. The lower-level functions are used on
purpose (``content_key``, ``seal_payload``, ``BatchSigner``): ``Sealer`` draws a
random nonce and ephemeral key, which a vector cannot have.

``python -m receipts.vectors > docs/vectors.json`` regenerates the file;
``tests/test_vectors.py`` fails if the output changes, so a change of the wire
format cannot go unnoticed.

In the JSON, a byte string is a lowercase hex string where the name says so
(digests, keys, wire bytes). Inside structured values (``input``, ``fields``,
``header`` …) a byte string is written ``{"$bin": "<hex>"}``, to tell it apart from
a text string.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from protocol import examples as ex
from protocol.calendar import WeekdayCalendar
from protocol.codec import Raw, decode, encode
from protocol.envelope import TAG_ENVELOPE, TAG_RECEIPT, EncryptionHeader, Envelope
from protocol.machine import TAG_EVENT, Case, event_digest, event_record
from protocol.wire import encode_envelope, encode_payload
from receipts.keys import key_id, raw_public
from receipts.materials import decrypt_chunks, encrypt_chunks
from receipts.sealing import COMMIT_TAG, PAYLOAD_TAG, content_key, seal_payload
from receipts.signing import ROOT_TAG, BatchSigner, merkle_root, root_statement

__all__ = ["NOW", "SEEDS", "generate", "render"]

#: 2026-11-23T09:30:00+08:00, a Monday: the window takes the application.
NOW = 1_795_397_400_000
#: Ten minutes later the clerk submits it and the envelope is sent.
SENT_AT = NOW + 600_000

CASE = "TB-410100-20261123-0001"
OTHER_CASE = "TB-410100-20261123-0002"
MESSAGE_ID = "410100-20261123-000001"

#: The fixed secrets. Never use these keys for anything but test vectors.
SEEDS: dict[str, bytes] = {
    "collecting_sign": bytes(range(32)),  # Ed25519 private key of 410100 (郑州)
    "collecting_encrypt": bytes(range(32, 64)),  # X25519 private key of 410100
    "handling_sign": bytes(range(64, 96)),  # Ed25519 private key of 370100 (济南)
    "handling_encrypt": bytes(range(96, 128)),  # X25519 private key of 370100
    "ephemeral": bytes(range(128, 160)),  # the sender's ephemeral X25519 private key
    "nonce": bytes(range(160, 172)),  # AES-GCM nonce of the envelope's payload
    "material_key": bytes(range(192, 224)),  # per-file key of the material
}

MATERIAL_CHUNK_SIZE = 1024
MATERIAL_SIZE = 2560  # two full chunks and a half one
_CHUNK_TAG = b"tongban/1 chunk\x00"


def _json(value: Any) -> Any:
    """A structured value for JSON: byte strings as ``{"$bin": hex}``."""
    if isinstance(value, Raw):
        return _json(decode(value.data))
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, dict):
        return {key: _json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json(item) for item in value]
    return value


def _keys() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, alg in (("collecting_sign", "ed25519"), ("collecting_encrypt", "x25519"),
                      ("handling_sign", "ed25519"), ("handling_encrypt", "x25519"),
                      ("ephemeral", "x25519")):
        private = _ed(name) if alg == "ed25519" else _x(name)
        public = raw_public(private)
        out[name] = {
            "private_seed": SEEDS[name].hex(),
            "public": public.hex(),
            "key_id": key_id(alg, public),
        }
    return out


def _ed(name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(SEEDS[name])


def _x(name: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(SEEDS[name])


def _canonical_map() -> dict[str, Any]:
    """Rule by rule: key order by UTF-8 bytes, shortest integers, str vs bin, nil dropped."""
    value = {
        "str": "办件",
        "int": [0, 127, 128, 255, 256, 65536, 4294967296, -1, -32, -33, -129],
        "ok": True,
        "bin": b"\x00\xff",
        "none": None,
        "a": {"b": "", "a": []},
        "\uff5a": 1,  # FULLWIDTH LATIN SMALL LETTER Z, UTF-8 ef bd 9a
        "\U00020000": 2,  # CJK Ext. B 𠀀, UTF-8 f0 a0 80 80: sorts after ｚ in UTF-8, before in UTF-16
    }
    canonical = encode(value)
    return {
        "input": _json(value),
        "canonical": canonical.hex(),
        "key_order": [key for key in sorted((k for k, v in value.items() if v is not None),
                                            key=str.encode)],
    }


def _receipts() -> tuple[list[Any], dict[str, Any]]:
    """Receipts 0 and 1 of the collecting side of CASE, and receipt 0 of OTHER_CASE."""
    sign_id = key_id("ed25519", raw_public(_ed("collecting_sign")))
    application = ex.application(NOW)
    case = Case(case=CASE, role="collecting", ours=ex.COLLECTING, theirs=ex.HANDLING,
                our_key=sign_id, calendar=WeekdayCalendar())
    collect = case.local("collect", application, NOW)
    submit = case.local("submit", application, SENT_AT)
    other = Case(case=OTHER_CASE, role="collecting", ours=ex.COLLECTING, theirs=ex.HANDLING,
                 our_key=sign_id, calendar=WeekdayCalendar())
    other_collect = other.local(
        "collect", ex.application(NOW + 1_000, window_no="ZZ-TB-20261123-0002"), NOW + 1_000
    )
    receipts = [step.receipt for step in (collect, submit, other_collect)]
    assert all(r is not None for r in receipts)
    records = {"collect": collect.event_record, "submit": submit.event_record}
    return receipts, records


def _event_vectors(records: dict[str, Any]) -> dict[str, Any]:
    collect = records["collect"]
    bare = event_record("archive", NOW, 7, None)
    return {
        "tag": TAG_EVENT.hex(),
        "collect": {
            "record": _json(collect),
            "digested_fields": "event, at, index, body",
            "canonical_sha256": hashlib.sha256(encode(collect)).hexdigest(),
            "digest": event_digest(collect).hex(),
        },
        "no_body": {
            "fields": bare,
            "canonical": encode(bare).hex(),
            "digest": event_digest(bare).hex(),
        },
    }


def _batch(receipts: list[Any]) -> tuple[list[Any], dict[str, Any]]:
    signer = BatchSigner(_ed("collecting_sign"), receipts[0].key)
    leaves = [r.digest for r in receipts]
    signatures = signer.sign(leaves)
    root = merkle_root(leaves)
    statement = root_statement(len(leaves), root)
    signed = [r.model_copy(update={"sig": s}) for r, s in zip(receipts, signatures, strict=True)]
    return signed, {
        "signer": receipts[0].key,
        "items": [f"{r.case} #{r.index} {r.kind}" for r in receipts],
        "leaves": [leaf.hex() for leaf in leaves],
        "nodes": {"h01": hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).hexdigest()},
        "root": root.hex(),
        "root_tag": ROOT_TAG.hex(),
        "root_statement": statement.hex(),
        "signature": signatures[0].sig.hex(),
        "paths": [[p.hex() for p in s.path] for s in signatures],
        "sig_fields": [_json(s.model_dump()) for s in signatures],
    }


def _receipt_vector(receipt: Any) -> dict[str, Any]:
    canonical = encode(receipt.signed_fields())
    return {
        "fields": _json(receipt.signed_fields()),
        "tag": TAG_RECEIPT.hex(),
        "canonical": canonical.hex(),
        "digest": receipt.digest.hex(),
    }


def _envelope(signed_receipts: list[Any]) -> dict[str, Any]:
    recipient = _x("handling_encrypt").public_key()
    recipient_public = recipient.public_bytes_raw()
    ephemeral = _x("ephemeral")
    epk = ephemeral.public_key().public_bytes_raw()
    enc = EncryptionHeader(to=key_id("x25519", recipient_public), epk=epk, nonce=SEEDS["nonce"])
    draft = Envelope(id=MESSAGE_ID, kind="application", sender=ex.COLLECTING,
                     recipient=ex.HANDLING, case=CASE, seq=1, sent_at=SENT_AT, enc=enc,
                     payload=b"")
    header = draft.header_fields()
    header_bytes = encode(header)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    key = content_key(shared, epk, recipient_public, header_bytes)
    plaintext = encode_payload(ex.application(NOW), signed_receipts[:2])
    payload = seal_payload(key, enc.nonce, plaintext)
    draft = draft.model_copy(update={"payload": payload})
    signer = BatchSigner(_ed("collecting_sign"), key_id("ed25519", raw_public(_ed("collecting_sign"))))
    (signature,) = signer.sign([draft.digest])
    envelope = draft.model_copy(update={"sig": signature})
    wire = encode_envelope(envelope)
    return {
        "header": _json(header),
        "header_canonical": header_bytes.hex(),
        "shared_secret": shared.hex(),
        "hkdf_salt": (epk + recipient_public).hex(),
        "hkdf_info": (PAYLOAD_TAG + header_bytes).hex(),
        "content_key": key.hex(),
        "commitment": hashlib.sha256(COMMIT_TAG + key).hexdigest(),
        "plaintext": plaintext.hex(),
        "plaintext_receipts": [f"{r.case} #{r.index} {r.kind}" for r in signed_receipts[:2]],
        "ciphertext": payload[32:].hex(),
        "payload": payload.hex(),
        "signed_canonical_sha256": hashlib.sha256(encode(envelope.signed_fields())).hexdigest(),
        "tag": TAG_ENVELOPE.hex(),
        "digest": envelope.digest.hex(),
        "sig_fields": _json(signature.model_dump()),
        "root_statement": root_statement(1, envelope.digest).hex(),
        "signature": signature.sig.hex(),
        "wire": wire.hex(),
        "wire_sha256": hashlib.sha256(wire).hexdigest(),
        "wire_length": len(wire),
    }


def _material() -> dict[str, Any]:
    key = SEEDS["material_key"]
    plaintext = bytes(i % 256 for i in range(MATERIAL_SIZE))
    chunks = list(encrypt_chunks(key, [plaintext], MATERIAL_CHUNK_SIZE))
    sha = hashlib.sha256(plaintext).digest()
    assert b"".join(decrypt_chunks(key, chunks, sha, len(plaintext), MATERIAL_CHUNK_SIZE)) == plaintext
    described = []
    for index, chunk in enumerate(chunks):
        final = index == len(chunks) - 1
        described.append({
            "index": index,
            "final": final,
            "plaintext_bytes": len(chunk) - 16,
            "nonce": (b"\x00" * 4 + struct.pack(">Q", index)).hex(),
            "aad": (_CHUNK_TAG + struct.pack(">QB", index, final)).hex(),
            "ciphertext": chunk.hex(),
            "ciphertext_sha256": hashlib.sha256(chunk).hexdigest(),
        })
    return {
        "key": key.hex(),
        "plaintext": "byte i = i mod 256, for i in 0..2559",
        "size": len(plaintext),
        "sha256": sha.hex(),
        "chunk_size": MATERIAL_CHUNK_SIZE,
        "chunks": described,
    }


def generate() -> dict[str, Any]:
    """Every vector of docs/protocol.md §11, as JSON-ready values."""
    receipts, records = _receipts()
    signed, batch = _batch(receipts)
    return {
        "format": "tongban-vectors/1",
        "note": "Fixed test keys: never use them for anything else.",
        "now": NOW,
        "sent_at": SENT_AT,
        "keys": _keys(),
        "canonical_map": _canonical_map(),
        "receipt": _receipt_vector(receipts[0]),
        "batch": batch,
        "envelope": _envelope(signed),
        "material": _material(),
        "event": _event_vectors(records),
    }


def render() -> str:
    """The exact text of docs/vectors.json."""
    return json.dumps(generate(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
