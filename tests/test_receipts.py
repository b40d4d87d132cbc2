"""Merkle-batched signatures, payload sealing and materials.

Merkle trees checked against RFC 9162, batch signatures and the checker's cache,
tampered batch items, ephemeral-key reuse and per-message content keys when sealing,
tampered or low-order sealed payloads, and chunked material encryption (round trips,
bounded memory, tampering). Keys and the registry are in ``test_keys``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import tracemalloc
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from loopback import T0, Pair
from receipts_helpers import REGION
from receipts_helpers import remote_error as _remote_error

from protocol import examples as ex
from protocol.envelope import Envelope, Signature
from protocol.errors import Reason
from protocol.wire import encode_envelope
from receipts import (
    BatchSigner,
    Letter,
    NodeKeys,
    SignatureChecker,
    decrypt_chunks,
    encrypt_chunks,
    new_material_key,
)
from receipts.sealing import COMMIT_TAG, Opener, Sealer, open_payload, seal_payload
from receipts.signing import audit_path, merkle_root, root_from_path

# ------------------------------------------------------------------ Merkle trees


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _ref_root(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH, recursively, over leaf hashes."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return _h(b"\x01" + _ref_root(leaves[:k]) + _ref_root(leaves[k:]))


def _ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(m, D[n])."""
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*_ref_path(m, leaves[:k]), _ref_root(leaves[k:])]
    return [*_ref_path(m - k, leaves[k:]), _ref_root(leaves[:k])]


def _leaves(n: int, seed: int = 0) -> list[bytes]:
    return [_h(b"\x00" + f"{seed}/{i}".encode()) for i in range(n)]


def test_reference_tree_known_shape() -> None:
    d = _leaves(3)
    assert _ref_root(d) == _h(b"\x01" + _h(b"\x01" + d[0] + d[1]) + d[2])
    assert _ref_path(2, d) == [_h(b"\x01" + d[0] + d[1])]


def test_merkle_matches_rfc9162_for_sizes_1_to_70() -> None:
    keys = NodeKeys.generate(REGION)
    signer = BatchSigner(keys.signing, keys.sign_key_id)
    for n in range(1, 71):
        leaves = _leaves(n, seed=n)
        root = _ref_root(leaves)
        assert merkle_root(leaves) == root, n
        signatures = signer.sign(leaves)
        for m in range(n):
            path = _ref_path(m, leaves)
            assert audit_path(leaves, m) == path, (n, m)
            assert list(signatures[m].path) == path, (n, m)
            assert (signatures[m].size, signatures[m].index) == (n, m)
            assert root_from_path(leaves[m], m, n, path) == root, (n, m)
    assert signer.stats() == {"batches": 70, "items": 70 * 71 // 2}


def test_merkle_root_of_nothing() -> None:
    with pytest.raises(ValueError, match="no leaves"):
        merkle_root([])
    keys = NodeKeys.generate(REGION)
    assert BatchSigner(keys.signing, keys.sign_key_id).sign([]) == []


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 64, 70])
def test_root_from_path_rejects_malformed_proofs(n: int) -> None:
    leaves = _leaves(n, seed=100 + n)
    root = _ref_root(leaves)
    for m in range(n):
        path = _ref_path(m, leaves)
        for index in (n, n + 1, -1, -n):
            with pytest.raises(ValueError, match="outside"):
                root_from_path(leaves[m], index, n, path)
        with pytest.raises(ValueError, match="too long"):
            root_from_path(leaves[m], m, n, [*path, leaves[0]])
        if path:
            with pytest.raises(ValueError, match="too short"):
                root_from_path(leaves[m], m, n, path[:-1])
        with pytest.raises(ValueError, match="outside"):
            root_from_path(leaves[m], m, 0, path)
        # A wrong index never leads to the signed root. (A wrong size may: leaf 0 of
        # 65..128 leaves has the same path shape; the size in the signed statement
        # is what catches that, see test_tampered_batch_items_fail.)
        for index in range(n):
            if index != m:
                with contextlib.suppress(ValueError):
                    assert root_from_path(leaves[m], index, n, path) != root


def test_batch_signatures_verify_with_one_ed25519_check_per_batch() -> None:
    keys = NodeKeys.generate(REGION)
    signer = BatchSigner(keys.signing, keys.sign_key_id)
    public = keys.signing.public_key()
    checker = SignatureChecker()
    first, second = _leaves(37, seed=1), _leaves(5, seed=2)
    for batch in (first, second):
        for leaf, signature in zip(batch, signer.sign(batch), strict=True):
            assert signature.key == keys.sign_key_id
            checker.check(leaf, signature, public)
    assert checker.stats() == {"verifications": 2, "cache_hits": 40}
    assert signer.stats() == {"batches": 2, "items": 42}
    (single,) = signer.sign([first[0]])
    assert (single.size, single.index, single.path) == (1, 0, ())
    fresh = SignatureChecker()
    fresh.check(first[0], single, public)
    assert fresh.stats() == {"verifications": 1, "cache_hits": 0}


def test_checker_cache_is_bounded() -> None:
    keys = NodeKeys.generate(REGION)
    signer = BatchSigner(keys.signing, keys.sign_key_id)
    public = keys.signing.public_key()
    checker = SignatureChecker(capacity=2)
    batches = [(leaves, signer.sign(leaves)) for leaves in (_leaves(2, s) for s in range(3))]
    for leaves, signatures in batches:
        checker.check(leaves[0], signatures[0], public)
    checker.check(batches[0][0][1], batches[0][1][1], public)  # evicted: verified again
    checker.check(batches[2][0][1], batches[2][1][1], public)  # still cached
    assert checker.stats() == {"verifications": 4, "cache_hits": 1}


def _flip(data: bytes, position: int = 0) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1:]


@pytest.mark.parametrize("warm", [False, True])
def test_tampered_batch_items_fail(warm: bool) -> None:
    keys = NodeKeys.generate(REGION)
    signer = BatchSigner(keys.signing, keys.sign_key_id)
    public = keys.signing.public_key()
    leaves = _leaves(11, seed=3)
    signatures = signer.sign(leaves)
    checker = SignatureChecker()
    if warm:
        for leaf, signature in zip(leaves, signatures, strict=True):
            checker.check(leaf, signature, public)
    leaf, sig = leaves[6], signatures[6]
    other = NodeKeys.generate(REGION).signing.public_key()

    def fields(**update: object) -> Signature:
        return Signature.model_validate(sig.model_dump() | update)

    tampered = [
        (_flip(leaf, 31), sig),
        (leaves[5], sig),
        (leaf, fields(path=(_flip(sig.path[0]), *sig.path[1:]))),
        (leaf, fields(path=(*sig.path[:-1], _flip(sig.path[-1], 7)))),
        (leaf, fields(path=sig.path[:-1])),
        (leaf, fields(path=(*sig.path, leaf))),
        (leaf, fields(path=tuple(reversed(sig.path)))),
        (leaf, fields(sig=_flip(sig.sig, 5))),
        (leaf, fields(sig=_flip(sig.sig, 63))),
        (leaf, fields(size=12)),
        (leaf, fields(size=10)),
        (leaf, fields(size=16)),
        (leaf, fields(index=7)),
        (leaf, fields(index=11)),
        (leaf, fields(index=1 << 40)),
    ]
    for bad_leaf, bad_sig in tampered:
        with _remote_error(Reason.BAD_SIGNATURE):
            checker.check(bad_leaf, bad_sig, public)
    with _remote_error(Reason.BAD_SIGNATURE):
        checker.check(leaf, sig, other)
    checker.check(leaf, sig, public)  # the genuine item still verifies


# ------------------------------------------------------------------ sealing


def test_sealer_reuses_the_ephemeral_key_up_to_reuse_messages() -> None:
    recipient = X25519PrivateKey.generate()
    sealer = Sealer(reuse=3, ttl_ms=60_000)
    headers = [sealer.header("x25519:aaaaaaaaaaaaaaaa", recipient.public_key(), T0 + i)
               for i in range(7)]
    epks = [h.epk for h, _ in headers]
    assert epks[0] == epks[1] == epks[2]
    assert epks[3] == epks[4] == epks[5] != epks[0]
    assert epks[6] not in (epks[0], epks[3])
    assert len({h.nonce for h, _ in headers}) == 7
    opener = Opener(recipient)
    for header, shared in headers:
        assert header.to == "x25519:aaaaaaaaaaaaaaaa"
        assert recipient.exchange(_x25519_public(header.epk)) == shared
    assert opener.public == recipient.public_key().public_bytes_raw()


def _x25519_public(raw: bytes) -> X25519PublicKey:
    return X25519PublicKey.from_public_bytes(raw)


def test_sealer_rotates_after_ttl_and_per_recipient() -> None:
    a, c = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    sealer = Sealer(reuse=1000, ttl_ms=1000)
    first = sealer.header("x25519:aaaaaaaaaaaaaaaa", a.public_key(), T0)[0].epk
    assert sealer.header("x25519:aaaaaaaaaaaaaaaa", a.public_key(), T0 + 999)[0].epk == first
    other = sealer.header("x25519:cccccccccccccccc", c.public_key(), T0 + 999)[0].epk
    assert other != first
    rotated = sealer.header("x25519:aaaaaaaaaaaaaaaa", a.public_key(), T0 + 1000)[0].epk
    assert rotated != first
    assert sealer.header("x25519:aaaaaaaaaaaaaaaa", a.public_key(), T0 + 1500)[0].epk == rotated


def _letters(n: int, *, case: str = "ZZ-TB-20261120-0009") -> list[Letter]:
    body = ex.withdrawal(T0)
    return [Letter(id=f"410100-m{i:06d}", kind="withdrawal", recipient=ex.HANDLING, case=case,
                   seq=i + 1, sent_at=T0, body=body, receipts=()) for i in range(n)]


def test_each_message_gets_its_own_content_key() -> None:
    pair = Pair()
    sender, receiver = pair.collecting.postmaster, pair.handling.postmaster
    sealed = sender.seal(_letters(5))
    assert len({s.envelope.enc.epk for s in sealed}) == 1  # the ephemeral key is reused
    assert len({s.content_key for s in sealed}) == 5
    assert len({s.envelope.enc.nonce for s in sealed}) == 5
    assert len({s.envelope.sig.sig for s in sealed if s.envelope.sig}) == 1  # one batch
    for s in sealed:
        opened = receiver.open(s.wire, T0)
        assert opened.content_key == s.content_key
        assert opened.plaintext == s.plaintext
        assert open_payload(s.content_key, s.envelope.enc.nonce, s.envelope.payload) == s.plaintext
        assert s.envelope.payload[:32] == hashlib.sha256(COMMIT_TAG + s.content_key).digest()


def test_tampered_payloads_do_not_decrypt() -> None:
    key, nonce = os.urandom(32), os.urandom(12)
    payload = seal_payload(key, nonce, b"plaintext " * 10)
    assert open_payload(key, nonce, payload) == b"plaintext " * 10
    bad = [
        (key, nonce, _flip(payload, 0)),  # commitment
        (key, nonce, _flip(payload, 31)),
        (key, nonce, _flip(payload, 32)),  # ciphertext
        (key, nonce, _flip(payload, len(payload) - 1)),  # tag
        (key, nonce, payload[:-1]),
        (key, nonce, payload[:47]),
        (key, nonce, b""),
        (key, _flip(nonce), payload),
        (os.urandom(32), nonce, payload),
        (key[:16], nonce, payload),
    ]
    for k, n, p in bad:
        with _remote_error(Reason.DECRYPTION_FAILED):
            open_payload(k, n, p)


_LOW_ORDER = [
    "00" * 32,
    "01" + "00" * 31,
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ec" + "ff" * 30 + "7f",  # p - 1
    "ed" + "ff" * 30 + "7f",  # p
    "ee" + "ff" * 30 + "7f",  # p + 1
]


@pytest.mark.parametrize("epk", _LOW_ORDER)
def test_low_order_ephemeral_keys_fail_cleanly(epk: str) -> None:
    pair = Pair()
    sender, receiver = pair.collecting.postmaster, pair.handling.postmaster
    (sealed,) = sender.seal(_letters(1))
    fields = sealed.envelope.model_dump(exclude={"sig"})
    fields["enc"]["epk"] = bytes.fromhex(epk)
    forged = Envelope.model_validate(fields)
    keys = pair.collecting.keys
    (signature,) = BatchSigner(keys.signing, keys.sign_key_id).sign([forged.digest])
    wire = encode_envelope(Envelope.model_validate(fields | {"sig": signature}))
    with _remote_error(Reason.DECRYPTION_FAILED):
        receiver.open(wire, T0)
    # And directly at the opener: refused before the header is even looked at.
    opener = Opener(pair.handling.keys.encryption)
    with _remote_error(Reason.DECRYPTION_FAILED):
        opener.content_key(forged.enc, forged.header_bytes)
    assert receiver.open(sealed.wire, T0).plaintext == sealed.plaintext


# ------------------------------------------------------------------ materials

CHUNK = 1024


def _pieces(data: bytes, rng: random.Random) -> Iterator[bytes]:
    position = 0
    while position < len(data):
        size = rng.choice([0, 1, rng.randint(1, 3 * CHUNK)])
        yield data[position:position + size]
        position += size


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 5])
def test_material_round_trip(size: int) -> None:
    rng = random.Random(size)
    data = rng.randbytes(size)
    key = new_material_key()
    for _ in range(5):
        chunks = list(encrypt_chunks(key, _pieces(data, rng), CHUNK))
        assert len(chunks) == max(1, -(-size // CHUNK))
        assert all(len(c) == CHUNK + 16 for c in chunks[:-1])
        assert len(chunks[-1]) == ((size - 1) % CHUNK + 1 if size else 0) + 16
        plain = decrypt_chunks(key, iter(chunks), hashlib.sha256(data).digest(), size, CHUNK)
        assert b"".join(plain) == data


def test_material_of_200_mb_in_bounded_memory() -> None:
    # 200 MB, 1 MiB chunks, pieces of random sizes. The pieces are slices of a random
    # pool (allocated before tracing starts) rather than fresh os.urandom bytes, so the
    # same stream can be hashed first and then encrypted and decrypted lazily; this
    # runs in well under a second.
    mib = 1 << 20
    size = 200 * mib
    pool = memoryview(os.urandom(4 * mib))

    def pieces() -> Iterator[bytes]:
        rng = random.Random(200)
        left = size
        while left:
            n = min(left, rng.randint(1, mib))
            start = rng.randrange(len(pool) - n + 1)
            yield pool[start:start + n]  # type: ignore[misc]
            left -= n

    digest = hashlib.sha256()
    for piece in pieces():
        digest.update(piece)
    key = new_material_key()
    total = 0
    tracemalloc.start()
    try:
        for plain in decrypt_chunks(key, encrypt_chunks(key, pieces(), mib), digest.digest(),
                                    size, mib):
            assert len(plain) <= mib
            total += len(plain)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size
    assert peak < 8 * mib, f"peak {peak / mib:.1f} MiB"


def _material(size: int = 3 * CHUNK + 5) -> tuple[bytes, bytes, list[bytes]]:
    data = random.Random(size).randbytes(size)
    key = new_material_key()
    return key, data, list(encrypt_chunks(key, [data], CHUNK))


def _refused(key: bytes, chunks: list[bytes], data: bytes, *, sha: bytes | None = None,
             size: int | None = None) -> None:
    with _remote_error(Reason.DECRYPTION_FAILED):
        for _ in decrypt_chunks(key, iter(chunks), sha or hashlib.sha256(data).digest(),
                                len(data) if size is None else size, CHUNK):
            pass


def test_tampered_materials_are_refused() -> None:
    key, data, chunks = _material()
    assert len(chunks) == 4
    c0, c1, c2, c3 = chunks
    for bad in (
        [c0, c1, c2],  # truncated
        [c0],
        [],
        [c1, c0, c2, c3],  # reordered
        [c0, c2, c1, c3],
        [c0, c0, c1, c2, c3],  # duplicated
        [c0, c1, c1, c2, c3],
        [c0, c1, c2, c3, c3],  # extended after the final chunk
        [c0, c1, c2, c3, b""],
        [c0, c1, c2, c3, os.urandom(CHUNK + 16)],
        [c0, c1, c2, _flip(c3, 3)],
        [_flip(c0, CHUNK + 15), c1, c2, c3],
        [c0, c1, c2, c3[:-1]],
        [c0 + b"\x00", c1, c2, c3],
    ):
        _refused(key, bad, data)
    _refused(key, chunks, data, sha=bytes(32))
    _refused(key, chunks, data, size=len(data) - 1)
    _refused(key, chunks, data, size=len(data) + 1)
    _refused(new_material_key(), chunks, data)


def test_truncation_at_a_chunk_boundary_is_refused() -> None:
    key, data, chunks = _material(3 * CHUNK)
    assert len(chunks) == 3
    assert b"".join(decrypt_chunks(key, iter(chunks), hashlib.sha256(data).digest(),
                                   len(data), CHUNK)) == data
    _refused(key, chunks[:2], data[:2 * CHUNK])
    _refused(key, chunks[:1], data[:CHUNK])
    # The final chunk of an empty file cannot stand in for anything else.
    empty_key, _, (empty,) = _material(0)
    _refused(empty_key, [empty, empty], b"")
