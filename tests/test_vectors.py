"""The test vectors of docs/protocol.md §11: current, and right by an independent reading.

1. ``receipts.vectors`` regenerates ``docs/vectors.json`` byte for byte, so a change
   of the wire format (encoding, digests, key derivation, signatures) fails here.
2. Each vector is checked again with plain ``hashlib``, ``msgpack`` and
   ``cryptography`` calls written from the specification, not with the project's
   helpers, the way an implementer in another language would check theirs.
3. The hex values the specification quotes in §11 are in the file.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "docs" / "vectors.json"
SPEC = ROOT / "docs" / "protocol.md"


@pytest.fixture(scope="module")
def v() -> dict[str, Any]:
    return json.loads(VECTORS.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


# ------------------------------------------------------------ an independent reading of §2 and §4


def from_json(value: Any) -> Any:
    """Undo the ``{"$bin": hex}`` convention of vectors.json."""
    if isinstance(value, dict):
        if set(value) == {"$bin"}:
            return bytes.fromhex(value["$bin"])
        return {key: from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_json(item) for item in value]
    return value


def sort_maps(value: Any) -> Any:
    """§2: keys ordered by their UTF-8 bytes, null fields left out."""
    if isinstance(value, dict):
        return {k: sort_maps(value[k]) for k in sorted(value, key=lambda k: k.encode())
                if value[k] is not None}
    if isinstance(value, list | tuple):
        return [sort_maps(item) for item in value]
    return value


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(sort_maps(value), use_bin_type=True)
    return packed


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


def leaf(tag: bytes, data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + tag + data).digest()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1, recursively, over leaf hashes."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node(mth(leaves[:k]), mth(leaves[k:]))


def path(leaves: list[bytes], m: int) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(m, D[n])."""
    if len(leaves) == 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if m < k:
        return [*path(leaves[:k], m), mth(leaves[k:])]
    return [*path(leaves[k:], m - k), mth(leaves[:k])]


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: list[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2: the root an audit path leads to."""
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        assert sn != 0
        if fn % 2 == 1 or fn == sn:
            r = node(p, r)
            while fn % 2 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    assert sn == 0
    return r


def statement(size: int, root: bytes) -> bytes:
    return b"tongban/1 root\x00" + size.to_bytes(8, "big") + root


def key_id(alg: str, public: bytes) -> str:
    return f"{alg}:{hashlib.sha256(public).hexdigest()[:16]}"


# ------------------------------------------------------------ 1. the file is current


def test_vectors_file_is_regenerated_byte_for_byte() -> None:
    from receipts.vectors import render

    assert VECTORS.read_text(encoding="utf-8") == render(), (
        "docs/vectors.json differs from what receipts.vectors generates: the wire format "
        "changed. If that is intended, regenerate it with "
        "`python -m receipts.vectors > docs/vectors.json` and update docs/protocol.md §11."
    )


# ------------------------------------------------------------ 2. independent checks


def test_keys_and_key_ids(v: dict[str, Any]) -> None:
    for name, entry in v["keys"].items():
        seed = bytes.fromhex(entry["private_seed"])
        if name.endswith("_sign"):
            public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
            assert entry["key_id"] == key_id("ed25519", public)
        else:
            public = X25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
            assert entry["key_id"] == key_id("x25519", public)
        assert entry["public"] == public.hex()


def test_canonical_map(v: dict[str, Any]) -> None:
    vector = v["canonical_map"]
    canonical = bytes.fromhex(vector["canonical"])
    assert pack(from_json(vector["input"])) == canonical
    assert list(unpack(canonical)) == vector["key_order"]
    # The order of UTF-8 bytes, which is not the order of UTF-16 code units.
    assert vector["key_order"][-2:] == ["\uff5a", "\U00020000"]
    assert sorted(vector["key_order"], key=lambda k: k.encode("utf-16-be"))[-1] == "\uff5a"
    # The shortest forms of §2.3, spelled out.
    for fragment in ("9b007fcc80ccffcd0100ce00010000cf0000000100000000ffe0d0dfd1ff7f",
                     "c40200ff", "a6e58a9ee4bbb6", "c3"):
        assert fragment in vector["canonical"]


def test_receipt_digest(v: dict[str, Any]) -> None:
    vector = v["receipt"]
    fields = from_json(vector["fields"])
    canonical = bytes.fromhex(vector["canonical"])
    assert bytes.fromhex(vector["tag"]) == b"tongban/1 receipt\x00"
    assert pack(fields) == canonical
    assert pack(unpack(canonical)) == canonical
    assert leaf(b"tongban/1 receipt\x00", canonical).hex() == vector["digest"]
    assert "prev" not in fields  # index 0
    assert "their" not in fields  # nothing seen from the other side yet
    assert fields["data"] == {"window_no": "ZZ-TB-20261123-0001",
                              "matter": "11370100MB28517409437010200200001", "version": 3}


def test_event_digests(v: dict[str, Any]) -> None:
    tag = b"tongban/1 event\x00"
    assert bytes.fromhex(v["event"]["tag"]) == tag
    record = from_json(v["event"]["collect"]["record"])
    assert set(record) == {"event", "at", "index", "body"}
    digested = pack(record)  # the whole record: event name, time, receipt index, body
    assert hashlib.sha256(digested).hexdigest() == v["event"]["collect"]["canonical_sha256"]
    assert leaf(tag, digested).hex() == v["event"]["collect"]["digest"]
    # The receipt of the collect event names it as its cause.
    assert from_json(v["receipt"]["fields"])["cause"].hex() == v["event"]["collect"]["digest"]
    bare = v["event"]["no_body"]
    assert bare["fields"] == {"event": "archive", "at": 1795397400000, "index": 7}
    assert pack(bare["fields"]).hex() == bare["canonical"]
    assert leaf(tag, bytes.fromhex(bare["canonical"])).hex() == bare["digest"]


def test_merkle_batch(v: dict[str, Any]) -> None:
    batch = v["batch"]
    leaves = [bytes.fromhex(h) for h in batch["leaves"]]
    assert batch["leaves"][0] == v["receipt"]["digest"]
    root = mth(leaves)
    assert root.hex() == batch["root"]
    assert node(leaves[0], leaves[1]).hex() == batch["nodes"]["h01"]
    assert root == node(node(leaves[0], leaves[1]), leaves[2])
    for index, proof_hex in enumerate(batch["paths"]):
        proof = [bytes.fromhex(h) for h in proof_hex]
        assert proof == path(leaves, index)
        assert verify_inclusion(leaves[index], index, len(leaves), proof) == root
        sig = from_json(batch["sig_fields"][index])
        assert (sig["size"], sig["index"], sig["path"]) == (3, index, proof)
    assert bytes.fromhex(batch["root_statement"]) == statement(3, root)
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(v["keys"]["collecting_sign"]["public"]))
    public.verify(bytes.fromhex(batch["signature"]), statement(3, root))  # raises if wrong
    # Ed25519 is deterministic (RFC 8032): the private key reproduces the very signature.
    seed = bytes.fromhex(v["keys"]["collecting_sign"]["private_seed"])
    private = Ed25519PrivateKey.from_private_bytes(seed)
    assert private.sign(statement(3, root)).hex() == batch["signature"]


def test_envelope_decrypts_and_verifies(v: dict[str, Any]) -> None:
    vector = v["envelope"]
    wire = bytes.fromhex(vector["wire"])
    assert len(wire) == vector["wire_length"]
    assert hashlib.sha256(wire).hexdigest() == vector["wire_sha256"]
    fields = unpack(wire)
    assert pack(fields) == wire  # the wire form is canonical
    sig = fields.pop("sig")
    signed = pack(fields)
    assert hashlib.sha256(signed).hexdigest() == vector["signed_canonical_sha256"]
    digest = leaf(b"tongban/1 envelope\x00", signed)
    assert digest.hex() == vector["digest"]

    # §4: a batch of one: the leaf is the root, the audit path is empty.
    assert (sig["size"], sig["index"], sig["path"]) == (1, 0, [])
    assert sig["key"] == v["keys"]["collecting_sign"]["key_id"]
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(v["keys"]["collecting_sign"]["public"]))
    public.verify(sig["sig"], statement(1, digest))
    assert statement(1, digest).hex() == vector["root_statement"]

    # §5: the recipient derives the content key from its private key and the header.
    payload = fields.pop("payload")
    header = pack(fields)
    assert header.hex() == vector["header_canonical"]
    assert pack(from_json(vector["header"])) == header
    enc = fields["enc"]
    assert enc["to"] == v["keys"]["handling_encrypt"]["key_id"]
    recipient = X25519PrivateKey.from_private_bytes(
        bytes.fromhex(v["keys"]["handling_encrypt"]["private_seed"]))
    recipient_public = recipient.public_key().public_bytes_raw()
    shared = recipient.exchange(X25519PublicKey.from_public_bytes(enc["epk"]))
    assert shared.hex() == vector["shared_secret"]
    ephemeral = X25519PrivateKey.from_private_bytes(bytes.fromhex(v["keys"]["ephemeral"]["private_seed"]))
    assert ephemeral.exchange(recipient.public_key()) == shared  # the sender's side of it
    info = b"tongban/1 payload\x00" + header
    assert info.hex() == vector["hkdf_info"]
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=enc["epk"] + recipient_public,
               info=info).derive(shared)
    assert key.hex() == vector["content_key"]
    assert payload.hex() == vector["payload"]
    assert payload[:32] == hashlib.sha256(b"tongban/1 key\x00" + key).digest()
    assert payload[32:].hex() == vector["ciphertext"]
    plaintext = AESGCM(key).decrypt(enc["nonce"], payload[32:], None)
    assert plaintext.hex() == vector["plaintext"]

    # The payload: the application and the sender's receipts 0 and 1, Merkle-signed.
    content = unpack(plaintext)
    assert pack(content) == plaintext
    assert set(content) == {"body", "receipts"}
    assert pack(content["body"]) == pack(from_json(v["event"]["collect"]["record"]["body"]))
    first, second = content["receipts"]
    assert pack({k: x for k, x in first.items() if k != "sig"}).hex() == v["receipt"]["canonical"]
    assert second["prev"] == bytes.fromhex(v["receipt"]["digest"])
    assert (second["index"], second["kind"]) == (1, "submitted")
    for index, receipt in enumerate((first, second)):
        unsigned = {k: x for k, x in receipt.items() if k != "sig"}
        receipt_leaf = leaf(b"tongban/1 receipt\x00", pack(unsigned))
        assert receipt_leaf.hex() == v["batch"]["leaves"][index]
        assert receipt["sig"] == from_json(v["batch"]["sig_fields"][index])
        root = verify_inclusion(receipt_leaf, index, receipt["sig"]["size"], receipt["sig"]["path"])
        public.verify(receipt["sig"]["sig"], statement(receipt["sig"]["size"], root))


def test_material_chunks(v: dict[str, Any]) -> None:
    vector = v["material"]
    key = bytes.fromhex(vector["key"])
    plaintext = b""
    for chunk in vector["chunks"]:
        index, final = chunk["index"], chunk["final"]
        nonce = bytes(4) + index.to_bytes(8, "big")
        aad = b"tongban/1 chunk\x00" + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")
        assert (nonce.hex(), aad.hex()) == (chunk["nonce"], chunk["aad"])
        ciphertext = bytes.fromhex(chunk["ciphertext"])
        assert hashlib.sha256(ciphertext).hexdigest() == chunk["ciphertext_sha256"]
        piece = AESGCM(key).decrypt(nonce, ciphertext, aad)
        assert len(piece) == chunk["plaintext_bytes"]
        assert len(piece) == vector["chunk_size"] or final
        plaintext += piece
    assert [c["final"] for c in vector["chunks"]] == [False, False, True]
    assert plaintext == bytes(i % 256 for i in range(2560))
    assert len(plaintext) == vector["size"]
    assert hashlib.sha256(plaintext).hexdigest() == vector["sha256"]


# ------------------------------------------------------------ the project reads the vectors too


def test_project_opens_the_envelope_and_verifies_a_bundle(v: dict[str, Any]) -> None:
    from protocol import examples as ex
    from receipts import KeyRegistry, NodeKeys, Postmaster, build_bundle, verify_bundle

    def node_keys(region: str, side: str) -> NodeKeys:
        sign = bytes.fromhex(v["keys"][f"{side}_sign"]["private_seed"])
        encrypt = bytes.fromhex(v["keys"][f"{side}_encrypt"]["private_seed"])
        return NodeKeys(region, Ed25519PrivateKey.from_private_bytes(sign),
                        X25519PrivateKey.from_private_bytes(encrypt))

    collecting, handling = node_keys(ex.COLLECTING, "collecting"), node_keys(ex.HANDLING, "handling")
    registry = KeyRegistry()
    for keys in (collecting, handling):
        registry.add_node(keys, valid_from=v["now"] - 86_400_000)
    opened = Postmaster(handling, registry).open(bytes.fromhex(v["envelope"]["wire"]), v["sent_at"])
    assert opened.body == ex.application(v["now"])
    assert opened.content_key.hex() == v["envelope"]["content_key"]
    assert [r.digest.hex() for r in opened.receipts] == v["batch"]["leaves"][:2]

    # The handling side's bundle after the first message: the collecting side's two
    # receipts are caused by its local events, re-derived from the body it sent.
    bundle = build_bundle(
        case=opened.envelope.case, made_by=ex.HANDLING, made_at=v["sent_at"],
        keys=registry.records(),
        envelopes=[(bytes.fromhex(v["envelope"]["wire"]), opened.content_key, opened.plaintext)],
        receipts=opened.receipts, events=[],
    )
    report = verify_bundle(bundle)
    assert report.chains == {ex.COLLECTING: 2}


# ------------------------------------------------------------ 3. the specification quotes the file


def test_hex_quoted_in_the_specification_is_in_the_vectors() -> None:
    text = SPEC.read_text(encoding="utf-8")
    start = text.index("\n## 11")
    section = text[start:text.index("\n## 12", start)]
    quoted = set(re.findall(r"(?<![0-9a-f])[0-9a-f]{16,}(?![0-9a-f])", section))
    assert len(quoted) >= 20, "§11 should quote the key values inline"
    vectors = VECTORS.read_text(encoding="utf-8")
    missing = sorted(h for h in quoted if h not in vectors)
    assert missing == [], f"§11 quotes hex that docs/vectors.json does not hold: {missing}"
