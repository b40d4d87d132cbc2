"""A node's keys: Ed25519 for signing, X25519 for receiving encrypted payloads.

Key ids are ``<alg>:<first 8 bytes of SHA-256 of the raw public key, hex>``, so
anyone holding the public key can recompute the id.

On disk a node's private keys are two PKCS#8 PEM files written with mode 0600
(``sign.pem``, ``encrypt.pem``) and ``public.json``, the record a partner region
needs (region, key ids, public keys, validity). Loading refuses files that other
users could read, because a leaked signing key forges receipts.

Rotation (docs/protocol.md §13.1): ``KeyRing`` holds every key pair of the node
that is still of use, each a ``NodeKeys``, in one key folder::

    keys/sign.pem, encrypt.pem, public.json   generation 1 ('tongban keys new')
    keys/next/                                 the prepared pair ('tongban keys rotate')
    keys/2/, keys/3/, ...                      later generations: next/ renamed once the
                                               circle registry lists its signing key
    keys/retired/<n>/                          a generation whose keys ended (plus a
                                               grace period): kept, never loaded again

The ring signs with the newest generation whose signing key the registry lists as
usable now (``update``), and opens messages encrypted to any encryption key it
holds, so a message sealed to the previous key during the overlap still opens.
Files are never overwritten: a pair is written into a fresh folder that is then
renamed into place (all or nothing), and a generation moves, it is not rewritten.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from receipts.errors import KeyFileError
from receipts.signing import BatchSigner

if TYPE_CHECKING:
    from receipts.registry import KeyRecord

__all__ = ["KeyRing", "NodeKeys", "key_id", "raw_public"]

SIGN_FILE = "sign.pem"
ENCRYPT_FILE = "encrypt.pem"
PUBLIC_FILE = "public.json"
NEXT_DIR = "next"
RETIRED_DIR = "retired"
DAY_MS = 86_400_000
#: How long a generation's private keys are kept after the registry ended them: a
#: message sealed to the old key just before the end may wait in the inbox a while
#: (a node that was down), and must still open.
KEEP_AFTER_MS = 7 * DAY_MS
#: A node starts signing with a newly approved key this long after the key became
#: valid: every partner has taken in the registry that lists it by then (a partner
#: that has not refuses the key as unknown, for good).
SETTLE_MS = 60_000


def raw_public(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(alg: str, public: bytes) -> str:
    return f"{alg}:{hashlib.sha256(public).digest()[:8].hex()}"


@dataclasses.dataclass(frozen=True)
class NodeKeys:
    region: str
    signing: Ed25519PrivateKey
    encryption: X25519PrivateKey

    @classmethod
    def generate(cls, region: str) -> NodeKeys:
        return cls(region, Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    # Cached: asked for on every case and letter (the dataclass is frozen, the keys too).
    @functools.cached_property
    def sign_public(self) -> bytes:
        return raw_public(self.signing)

    @functools.cached_property
    def encrypt_public(self) -> bytes:
        return raw_public(self.encryption)

    @functools.cached_property
    def sign_key_id(self) -> str:
        return key_id("ed25519", self.sign_public)

    @functools.cached_property
    def encrypt_key_id(self) -> str:
        return key_id("x25519", self.encrypt_public)

    def __repr__(self) -> str:  # never print private material
        return f"NodeKeys({self.region}, {self.sign_key_id}, {self.encrypt_key_id})"

    def public_record(self, valid_from: int, valid_until: int | None = None) -> dict[str, object]:
        return {
            "region": self.region,
            "sign_key": self.sign_key_id,
            "sign_public": base64.b64encode(self.sign_public).decode(),
            "encrypt_key": self.encrypt_key_id,
            "encrypt_public": base64.b64encode(self.encrypt_public).decode(),
            "valid_from": valid_from,
            "valid_until": valid_until,
        }

    def save(self, directory: Path, valid_from: int) -> None:
        """Write the key files; refuses to overwrite existing keys. All or nothing: a
        failure part way removes what this call wrote."""
        directory.mkdir(parents=True, exist_ok=True)
        for name in (SIGN_FILE, ENCRYPT_FILE, PUBLIC_FILE):
            if (directory / name).exists():  # all or nothing: never a half-replaced key set
                raise KeyFileError(_exists(directory / name))
        written: list[Path] = []
        try:
            for name, key in ((SIGN_FILE, self.signing), (ENCRYPT_FILE, self.encryption)):
                pem = key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                _write_new(directory / name, pem, 0o600, written)
            record = json.dumps(self.public_record(valid_from), indent=2) + "\n"
            _write_new(directory / PUBLIC_FILE, record.encode(), 0o644, written)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, directory: Path, region: str) -> NodeKeys:
        signing = _load_private(directory / SIGN_FILE)
        encryption = _load_private(directory / ENCRYPT_FILE)
        if not isinstance(signing, Ed25519PrivateKey):
            raise KeyFileError(f"{directory / SIGN_FILE} holds a {type(signing).__name__}, "
                               f"not an Ed25519 key (密钥类型错误)")
        if not isinstance(encryption, X25519PrivateKey):
            raise KeyFileError(f"{directory / ENCRYPT_FILE} holds a {type(encryption).__name__}, "
                               f"not an X25519 key (密钥类型错误)")
        return cls(region, signing, encryption)


def _load_private(path: Path) -> PrivateKeyTypes:
    try:
        info = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(
            f"{path} does not exist; create keys with 'tongban keys new' (密钥文件不存在)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"{path} cannot be read: {exc.strerror} (密钥文件无法读取)") from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path} can be read by other users (mode {stat.S_IMODE(info.st_mode):o}); "
            f"run 'chmod 600 {path}' (私钥文件权限过宽)"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PKCS#8 PEM key (密钥文件格式错误)") from exc
    return key


def _exists(path: Path) -> str:
    return f"{path} already exists; move it away first (密钥文件已存在，请先移走)"


def _write_new(path: Path, data: bytes, mode: int, written: list[Path]) -> None:
    """Create ``path`` (never replacing a file) with ``data``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyFileError(_exists(path)) from None
    written.append(path)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _region_of(directory: Path) -> str:
    path = directory / PUBLIC_FILE
    try:
        region = json.loads(path.read_text(encoding="utf-8"))["region"]
    except FileNotFoundError:
        raise KeyFileError(f"{path} does not exist; create keys with 'tongban keys new' "
                           f"(公钥文件不存在)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a public.json with a region: {exc} (公钥文件无效)") from exc
    if not isinstance(region, str):
        raise KeyFileError(f"{path}: region must be a string (公钥文件无效)")
    return region


class KeyRing:
    """The key pairs of one node over time: the one it signs with (``current``), the
    earlier ones still kept (their encryption keys still open messages), and the
    ``prepared`` next pair, waiting for the circle registry to list it.

    It reads like the current ``NodeKeys`` (``region``, ``signing``, ``sign_key_id``,
    ``encrypt_key_id`` ...), so code written for one pair keeps working. ``update``
    follows the registry: it switches to the newest pair the registry lets sign, and
    retires pairs whose keys ended. ``observers`` are called after a switch.
    """

    def __init__(self, region: str, generations: dict[int, NodeKeys], *,
                 prepared: NodeKeys | None = None, directory: Path | None = None,
                 last_generation: int = 0) -> None:
        if not generations:
            raise ValueError("a key ring needs at least one key pair")
        self.region = region
        self.directory = directory
        self._pairs = dict(sorted(generations.items()))  # generation -> pair, oldest first
        self._current = max(self._pairs)  # the newest one switched to (a registry listed it)
        self.prepared = prepared
        self._last = max(last_generation, self._current)  # numbers are never reused
        self._signers: dict[str, BatchSigner] = {}
        #: Called with the new current pair after a switch (the catalog signs anew).
        self.observers: list[Callable[[NodeKeys], None]] = []

    @classmethod
    def of(cls, keys: NodeKeys) -> KeyRing:
        """A ring of one pair, in memory only (tests, tools)."""
        return cls(keys.region, {1: keys})

    def __repr__(self) -> str:
        prepared = f" next={self.prepared.sign_key_id}" if self.prepared else ""
        return (f"<KeyRing {self.region} current={self._current}:{self.sign_key_id} "
                f"held={list(self._pairs)}{prepared}>")

    # ---------------------------------------------------------------- the current pair

    @property
    def current(self) -> NodeKeys:
        return self._pairs[self._current]

    @property
    def generation(self) -> int:
        return self._current

    @property
    def signing(self) -> Ed25519PrivateKey:
        return self.current.signing

    @property
    def encryption(self) -> X25519PrivateKey:
        return self.current.encryption

    @property
    def sign_public(self) -> bytes:
        return self.current.sign_public

    @property
    def encrypt_public(self) -> bytes:
        return self.current.encrypt_public

    @property
    def sign_key_id(self) -> str:
        return self.current.sign_key_id

    @property
    def encrypt_key_id(self) -> str:
        return self.current.encrypt_key_id

    @property
    def signer(self) -> BatchSigner:
        """The signer of the current signing key."""
        found = self.signer_for(self.sign_key_id)
        assert found is not None
        return found

    # ---------------------------------------------------------------- every held pair

    def held(self) -> list[NodeKeys]:
        """Every pair whose private keys this node holds: kept, current, prepared."""
        return [*self._pairs.values(), *([self.prepared] if self.prepared else [])]

    def signer_for(self, key: str) -> BatchSigner | None:
        """A signer of the held signing key ``key`` (a case begun under an earlier key,
        the prepared key signing its own join request); ``None`` if not held."""
        signer = self._signers.get(key)
        if signer is None:
            pair = next((p for p in self.held() if p.sign_key_id == key), None)
            if pair is None:
                return None
            signer = self._signers[key] = BatchSigner(pair.signing, key)
        return signer

    def decryption_key(self, key: str) -> X25519PrivateKey | None:
        """The private X25519 key named ``key`` (an envelope's ``enc.to``), if held."""
        return next((p.encryption for p in self.held() if p.encrypt_key_id == key), None)

    # ---------------------------------------------------------------- files

    @classmethod
    def load(cls, directory: Path, region: str) -> KeyRing:
        """Every pair in a key folder but the retired ones. Raises ``KeyFileError``."""
        retired = directory / RETIRED_DIR
        numbers = _generation_numbers(retired)
        generations: dict[int, NodeKeys] = {}
        if 1 in numbers:  # generation 1 lives in the folder itself, until it retires
            try:
                _finish_retiring_first(directory)
            except OSError as exc:
                raise KeyFileError(f"{directory}: generation 1 could not be moved to "
                                   f"{retired / '1'}: {exc.strerror} (密钥归档失败)") from exc
        elif (directory / SIGN_FILE).exists() or not _generation_numbers(directory):
            generations[1] = NodeKeys.load(directory, region)
        for number in sorted(_generation_numbers(directory)):
            generations[number] = NodeKeys.load(directory / str(number), region)
        if not generations:
            raise KeyFileError(f"{directory} holds no key pair that is not retired; create "
                               f"keys with 'tongban keys new' (没有可用的密钥)")
        prepared = cls._load_prepared(directory, region)
        return cls(region, generations, prepared=prepared, directory=directory,
                   last_generation=max(numbers | set(generations)))

    @staticmethod
    def _load_prepared(directory: Path, region: str) -> NodeKeys | None:
        folder = directory / NEXT_DIR
        return NodeKeys.load(folder, region) if folder.is_dir() else None

    def refresh(self) -> None:
        """Read the prepared pair again (``tongban keys rotate`` may have written it while
        the node runs)."""
        if self.directory is not None:
            self.prepared = self._load_prepared(self.directory, self.region)

    @staticmethod
    def prepare(directory: Path, valid_from: int) -> NodeKeys:
        """Generate the next pair into ``directory/next`` (``tongban keys rotate``): written
        in a fresh folder, then renamed into place, so it is there whole or not at all.
        Refuses when a prepared pair is waiting already."""
        region = _region_of(_newest_generation(directory))
        target = directory / NEXT_DIR
        if target.exists():
            raise KeyFileError(f"{target} already holds prepared keys, not yet in use; ask the "
                               f"convener to approve them, or move the folder away to start "
                               f"again (已有待启用的新密钥)")
        pair = NodeKeys.generate(region)
        partial = directory / f".{NEXT_DIR}-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            pair.save(partial, valid_from)
            os.rename(partial, target)  # fails if next/ appeared meanwhile (not empty)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            if target.exists():
                raise KeyFileError(_exists(target)) from exc
            raise
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return pair

    # ---------------------------------------------------------------- following the registry

    def update(self, records: Iterable[KeyRecord], now: int, *, keep: Collection[str] = (),
               keep_after_ms: int = KEEP_AFTER_MS, settle_ms: int = SETTLE_MS) -> list[str]:
        """Follow the registry's records of our keys, as of ``now``:

        * switch to the newest held pair whose signing key has been usable for
          ``settle_ms`` (the prepared one once the convener approved it: its folder
          becomes the next generation);
        * retire an earlier pair once both its keys ended ``keep_after_ms`` ago (not a
          pair with a key in ``keep``, e.g. the convener's anchor key).

        A registry that does not list our keys changes nothing. Returns what was done,
        for the log; a file that could not be moved is reported there and tried again
        at the next update.
        """
        ours = {r.key_id: r for r in records if r.region == self.region}
        if not ours:
            return []
        done: list[str] = []

        def usable(key: str) -> bool:
            record = ours.get(key)
            return (record is not None and record.usable_at(now)
                    and record.usable_at(now - settle_ms))

        switched = False
        if self.prepared is not None and usable(self.prepared.sign_key_id):
            done += self._promote()
            switched = True
        newest = max((g for g, p in self._pairs.items() if usable(p.sign_key_id)), default=None)
        if newest is not None and newest > self._current:
            self._current = newest
            switched = True
        if switched:
            done.append(f"{self.region} signs with {self.sign_key_id} from now on (generation "
                        f"{self._current}); earlier encryption keys still open messages")
        for generation, pair in list(self._pairs.items()):
            if generation >= self._current or {pair.sign_key_id, pair.encrypt_key_id} & set(keep):
                continue
            ends = [ours[k].valid_until if k in ours else None
                    for k in (pair.sign_key_id, pair.encrypt_key_id)]
            if all(end is not None and end + keep_after_ms <= now for end in ends):
                done += self._retire(generation)
        if switched:
            for observer in self.observers:
                observer(self.current)
        return done

    def _promote(self) -> list[str]:
        assert self.prepared is not None
        number = self._last + 1
        pair, self.prepared = self.prepared, None
        self._pairs[number] = pair
        self._current = self._last = number
        if self.directory is None:
            return []
        target = self.directory / str(number)
        try:
            if target.exists():
                raise FileExistsError(_exists(target))
            os.rename(self.directory / NEXT_DIR, target)
        except OSError as exc:  # in use all the same; the next start promotes it again
            return [f"{self.directory / NEXT_DIR} could not become {target}: {exc}"]
        return []

    def _retire(self, generation: int) -> list[str]:
        pair = self._pairs.pop(generation)
        self._signers.pop(pair.sign_key_id, None)
        note = (f"generation {generation} ({pair.sign_key_id}, {pair.encrypt_key_id}) retired: "
                f"its keys ended; receipts it signed still verify with the registry's public keys")
        if self.directory is None:
            return [note]
        retired = self.directory / RETIRED_DIR
        try:
            retired.mkdir(mode=0o700, exist_ok=True)
            if generation == 1:
                (retired / "1").mkdir(mode=0o700, exist_ok=True)
                _finish_retiring_first(self.directory)
            else:
                target = retired / str(generation)
                if target.exists():
                    raise FileExistsError(_exists(target))
                os.rename(self.directory / str(generation), target)
        except (OSError, KeyFileError) as exc:
            self._pairs[generation] = pair  # kept, and tried again at the next update
            self._pairs = dict(sorted(self._pairs.items()))
            return [f"generation {generation} could not be retired: {exc}"]
        return [note + f" (kept in {retired})"]


def _generation_numbers(directory: Path) -> set[int]:
    try:
        return {int(p.name) for p in directory.iterdir()
                if p.is_dir() and p.name.isascii() and p.name.isdigit()}
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise KeyFileError(f"{directory} cannot be read: {exc.strerror} (密钥目录无法读取)") from exc


def _newest_generation(directory: Path) -> Path:
    numbers = _generation_numbers(directory)
    return directory / str(max(numbers)) if numbers else directory


def _finish_retiring_first(directory: Path) -> None:
    """Move generation 1's files into retired/1 (again, if a move was interrupted)."""
    target = directory / RETIRED_DIR / "1"
    for name in (SIGN_FILE, ENCRYPT_FILE, PUBLIC_FILE):
        if not (directory / name).exists():
            continue
        if (target / name).exists():
            raise KeyFileError(f"{directory / name} and {target / name} both exist: generation 1 "
                               f"was retired; move one of them away (密钥文件重复)")
        os.rename(directory / name, target / name)
