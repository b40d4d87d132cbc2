"""The catalog at a node: publish this region's entries, index every partner's.

Theory of operation
-------------------
At start the node imports its own 事项清单 (``config.catalog``), signs the entries
that are new or changed as one Merkle batch, indexes them locally and puts them in
the circle's catalog bucket. A changed entry needs a new version: the same version
with other content is refused, so an application pinned to a version always means
one text.

``follow`` watches the bucket. Each value is checked (decodes canonically, is the
entry its key names, signed by an active member's key) and indexed; anything else
is ignored and recorded as rejected, for operators to see. A deletion in the bucket
is not signed, so it withdraws nothing: withdrawal is a signed version with status
withdrawn. Values already indexed (a restart, a watch started again) are skipped
by the hash of their bytes, before any decoding.

Entries are indexed from their decoded maps (receipts.catalog); the full model is
validated when an entry is used (``entry``), once, and kept in a small cache.

After a key rotation (docs/protocol.md §13.1) our entries in the bucket are still
signed with the previous key, which a node stops accepting once the overlap ends:
a newcomer would ignore them. So whenever our signing key is not the one that
signed our values in the bucket (told by the key ring at the switch, and found by
the watch at every start), every version of those entries is signed again with
the current key and put again, the newest of each matter last.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from node.engine import MatterPolicy
from node.store import StoreError
from node.store.catalog import CatalogIndex, IndexRow
from node.transport import CATALOG_BUCKET, CatalogUpdate, Transport
from protocol import bodies as b
from protocol import examples as ex
from protocol.catalog import CatalogEntry, CatalogRecord, FormField, entry_digest
from protocol.codec import decode, raw_fields
from protocol.errors import ProtocolError, Reason, RemoteProtocolError
from protocol.fields import date_of
from receipts import Postmaster
from receipts.catalog import CheckedRecord, check_record, sign_entries
from routing.search import parse_query

__all__ = ["Catalog", "CatalogConflict"]

log = logging.getLogger("tongban.catalog")


class CatalogConflict(ValueError):
    """Entries that cannot be published as they are (a changed entry kept its version)."""


class Catalog:
    def __init__(self, region: str, index: CatalogIndex, transport: Transport,
                 postmaster: Postmaster, clock: Callable[[], int]) -> None:
        self.region = region
        self.index = index
        self.transport = transport
        self.postmaster = postmaster
        self.clock = clock
        self.caught_up = asyncio.Event()
        #: Whether this region publishes a catalog (then its matters and forms are enforced).
        self.own = index.has_region(region)
        self._publishing = asyncio.Lock()
        #: Called with the keys of entries just indexed (benchmarks, live pages).
        self.observers: list[Callable[[list[str]], None]] = []
        self._models: OrderedDict[tuple[str, str, int], CatalogEntry] = OrderedDict()
        self._writing: asyncio.Future[None] | None = None
        #: Whether an entry was refused for its key (then a new circle registry is a
        #: reason to read the bucket again).
        self.refused_for_keys = False
        self._lookups = True
        #: Our own bucket values: key -> the signing key of the newest one seen.
        self._own_signers: dict[str, str] = {}
        self._stale = asyncio.Event()  # our values need signing again (a key switch)
        postmaster.keys.observers.append(lambda _: self._stale.set())

    def __repr__(self) -> str:
        return f"<Catalog {self.region} {self.index.counts()}>"

    # ---------------------------------------------------------------- our own entries

    async def publish(self, entries: list[CatalogEntry]) -> list[CatalogEntry]:
        """Sign, publish and index the entries that are new; returns them. One publication
        at a time, so a version never goes out with two contents."""
        async with self._publishing:
            published = await self._publish(entries)
        self.own = self.own or bool(entries)
        return published

    async def _publish(self, entries: list[CatalogEntry]) -> list[CatalogEntry]:
        fresh, problems = [], []
        for entry in entries:
            if entry.region != self.region:
                problems.append(f"{entry.code}: 属于 {entry.region}，不是本地区 / belongs to "
                                f"{entry.region}, not to {self.region}")
                continue
            known = self.index.version_digest(entry.region, entry.code, entry.version)
            if known == entry_digest(entry):
                continue
            if known is not None:
                problems.append(f"{entry.code} 版本 {entry.version}: 内容已变但版本号未变 / "
                                f"changed without a new version")
                continue
            newest = max((v for v, _ in self.index.versions(entry.region, entry.code)), default=0)
            if newest > entry.version:
                problems.append(f"{entry.code}: 已有更新的版本 {newest} / version {newest} is "
                                f"newer than {entry.version}")
                continue
            fresh.append(entry)
        if problems:
            raise CatalogConflict("事项清单未发布 / the catalog was not published:\n  " +
                                  "\n  ".join(problems))
        if not fresh:
            return []
        records = sign_entries(self.postmaster.signer, fresh)
        # Into the bucket first: if that fails nothing is indexed, and trying again
        # publishes the same entries (indexed first, a retry would find them known).
        await self.transport.put_values(CATALOG_BUCKET, [(r.entry.key, r.canonical_bytes) for r in records])
        await self.index.add([_row(_checked(record)) for record in records], self.clock())
        log.info("published %d catalog entries of %s", len(records), self.region)
        return fresh

    # ---------------------------------------------------------------- the circle's entries

    async def follow(self) -> None:
        # A node with nothing indexed yet (a new member) need not look up every value it
        # receives; a value that comes twice is stored once anyway.
        self._lookups = not self.index.empty()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.transport.watch_bucket(CATALOG_BUCKET, self._take))
                tasks.create_task(self._sign_again_when_stale())
        finally:
            if self._writing is not None:  # a stopping node finishes its last write
                await asyncio.shield(self._writing)

    async def _take(self, updates: list[CatalogUpdate], caught_up: bool) -> None:
        now = self.clock()
        rows, keys = [], []
        for key, value in updates:
            region = key.split(".", 1)[0]
            if region == self.region and value is not None:
                self._note_own(key, value)
            if value is None:
                log.warning("catalog entry %s deleted in the bucket: ignored (not signed)", key)
                await asyncio.to_thread(self.index.reject, key, region, "unsigned deletion "
                                        "ignored / 未签名的删除，已忽略", now)
                continue
            if self._lookups and self.index.has_record(key, hashlib.sha256(value).digest()):
                continue
            try:
                checked = check_record(value, key, self.postmaster.registry,
                                       self.postmaster.checker, now)
                rows.append(_row(checked))
            except RemoteProtocolError as exc:
                if exc.reason in (Reason.UNKNOWN_KEY, Reason.KEY_NOT_VALID):
                    self.refused_for_keys = True  # may be good once the circle knows the key
                log.warning("catalog entry %s ignored: %s", key, exc)
                await asyncio.to_thread(self.index.reject, key, region,
                                        f"{exc.reason.code}: {exc.reason.zh} / {exc.reason.en} "
                                        f"{exc.detail}", now)
                continue
            keys.append(key)
        # Write this batch while the next one is checked (SQLite lets go of the GIL):
        # one write in flight at a time, all of them done before "caught up" is said.
        if self._writing is not None:
            await self._writing
            self._writing = None
        if rows:
            self._writing = asyncio.ensure_future(self._write(rows, keys, now))
        if caught_up and self._writing is not None:
            await self._writing
            self._writing = None
        if caught_up:
            self._lookups = True  # from now on, values may be ones we hold (a re-watch)
            if self._stale_keys():
                self._stale.set()
        if caught_up and not self.caught_up.is_set():
            log.info("catalog index of %s caught up with the circle", self.region)
            self.caught_up.set()

    async def _write(self, rows: list[IndexRow], keys: list[str], now: int) -> None:
        try:
            await self.index.add(rows, now)
        except StoreError as exc:  # find the row the database refuses; keep the others
            log.error("catalog batch not indexed (%s); trying its entries one by one", exc)
            for row in rows:
                try:
                    await self.index.add([row], now)
                except StoreError as one:
                    await asyncio.to_thread(self.index.reject, f"{row.region}.{row.code}",
                                            row.region, f"index: {one}", now)
        for observer in self.observers:
            observer(keys)

    # ---------------------------------------------------------------- after a key switch

    def _note_own(self, key: str, value: bytes) -> None:
        with contextlib.suppress(ProtocolError, KeyError, TypeError):  # refused below, then
            self._own_signers[key] = str(decode(raw_fields(value)["sig"])["key"])

    def _stale_keys(self) -> list[str]:
        current = self.postmaster.signer.key
        return sorted(k for k, signer in self._own_signers.items() if signer != current)

    async def _sign_again_when_stale(self) -> None:
        while True:
            await self._stale.wait()
            self._stale.clear()
            await self.caught_up.wait()  # all our values seen: we know which are stale
            try:
                await self.sign_again()
            except (ConnectionError, StoreError) as exc:
                log.warning("catalog not signed again yet (%s); trying again in a minute", exc)
                await asyncio.sleep(60)
                self._stale.set()

    async def sign_again(self) -> int:
        """Sign every version of our entries whose bucket value another (earlier) key
        signed with the current key, and put them again; returns how many."""
        async with self._publishing:
            stale = self._stale_keys()
            if not stale:
                return 0
            signer = self.postmaster.signer
            older: list[CatalogEntry] = []
            newest: list[CatalogEntry] = []
            for key in stale:
                code = key.split(".", 1)[1]
                versions = [v for v, _ in self.index.versions(self.region, code)]
                for version in versions:
                    data = self.index.record(self.region, code, version)
                    entry = None if data is None else self._model(key, self.region, data)
                    if entry is not None:
                        (newest if version == versions[-1] else older).append(entry)
            records = sign_entries(signer, older + newest)
            puts = [(r.entry.key, r.canonical_bytes) for r in records]
            # The newest version of each matter goes last: it is the key's value then.
            if older:
                await self.transport.put_values(CATALOG_BUCKET, puts[:len(older)])
            await self.transport.put_values(CATALOG_BUCKET, puts[len(older):])
            for key in stale:
                self._own_signers[key] = signer.key
        log.warning("catalog of %s signed again with %s: %d entries (%d versions)", self.region,
                    signer.key, len(stale), len(records))
        return len(records)

    # ---------------------------------------------------------------- use

    def entry(self, region: str, code: str, version: int | None = None) -> CatalogEntry | None:
        """An entry, validated: the given version, or else the one in force today (the
        newest if none is); ``None`` if unknown or unusable (then reported)."""
        if version is None:
            version = self.index.version_in_force(region, code, date_of(self.clock()).isoformat())
            if version is None:
                return None
        cache_key = (region, code, version)
        cached = self._models.get(cache_key)
        if cached is not None:
            self._models.move_to_end(cache_key)
            return cached
        data = self.index.record(region, code, version)
        entry = None if data is None else self._model(f"{region}.{code}", region, data)
        if entry is None:
            return None
        self._models[cache_key] = entry
        if len(self._models) > 2000:
            self._models.popitem(last=False)
        return entry

    def _model(self, key: str, region: str, data: bytes) -> CatalogEntry | None:
        """The full check an indexed record gets when it is used; failures are reported."""
        try:
            return CatalogRecord.model_validate(decode(data)).entry
        except (ProtocolError, ValueError) as exc:
            log.warning("catalog entry %s cannot be used: %s", key, exc)
            self.index.reject(key, region, f"unusable / 无法使用: {str(exc)[:300]}", self.clock())
            return None

    def entries_of(self, region: str) -> list[CatalogEntry]:
        """The newest version of each of a region's matters (withdrawn ones included)."""
        found = (self._model(f"{region}.?", region, data) for data in self.index.records_of(region))
        return [entry for entry in found if entry is not None]

    def search(self, query: str, *, regions: tuple[str, ...] = (), mode: str | None = None,
               matter_type: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        today = date_of(self.clock()).isoformat()
        return self.index.search(parse_query(query), today=today, regions=regions, mode=mode,
                                 matter_type=matter_type, limit=limit)

    async def wait_for_region(self, region: str, timeout: float) -> bool:
        """Wait until some entry of ``region`` is indexed here; False after ``timeout``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.index.has_region(region):
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def sample_application(self, handling: str, now: int, window_no: str,
                           code: str | None = None, version: int | None = None) -> b.Application:
        """A sample application (demo, ``tongban submit``) for matter ``code`` of
        ``handling`` (by default one it publishes for 异地代收代办), its form filled with
        plausible values; the protocol's example matter if that region's catalog is not
        known here."""
        application = ex.application(now, window_no=window_no, scans=False)
        if code is not None:
            entry = self.entry(handling, code, version)
        else:
            candidates = (self.entry(handling, hit["code"], hit["version"])
                          for hit in self.search("", regions=(handling,), mode="proxy", limit=50))
            entry = next((e for e in candidates
                          if e is not None and e.acceptance == "handling_decides"), None)
        if entry is None:
            return application
        form = tuple(b.FormValue(field=f.name, value=_sample_value(f, now)) for f in entry.form
                     if f.required or f.kind != "long_text")
        return application.model_copy(update={
            "matter": b.MatterRef(code=entry.code, version=entry.version, name=entry.name),
            "acceptance": "handling_decides", "form": form, "case_type": entry.case_type})

    def policy(self, application: b.Application) -> MatterPolicy:
        """How this region handles an application for one of its matters, under the
        version it pinned: who decides 受理 and the promised time limit. Refuses a matter
        or version we never published (``unknown_matter``) and a form that the entry's
        form does not accept (``invalid_field``, naming every field)."""
        if not self.own:
            return MatterPolicy()  # no catalog of our own: the defaults
        matter = application.matter
        entry = self.entry(self.region, matter.code, matter.version)
        if entry is None:
            raise RemoteProtocolError(Reason.UNKNOWN_MATTER, f"{matter.code} version {matter.version}")
        collected_on = date_of(application.window.received_at).isoformat()
        if entry.status == "withdrawn" or not entry.effective_on(collected_on):
            raise RemoteProtocolError(Reason.UNKNOWN_MATTER, f"{matter.code} version "
                                      f"{matter.version} was not in force on {collected_on}")
        try:
            entry.check_form({value.field: value.value for value in application.form})
        except ValueError as exc:
            raise RemoteProtocolError(Reason.INVALID_FIELD, f"申请表 / form: {exc}") from None
        return MatterPolicy(acceptance=entry.acceptance, promise_days=entry.promised_limit.days,
                            promise_unit=entry.promised_limit.unit)


def _sample_value(field: FormField, now: int) -> str:
    if field.kind == "choice":
        return str(field.choices[0])
    if field.kind == "number":
        return str(field.minimum if field.minimum is not None else 1)
    return {"date": date_of(now).isoformat(), "id_number": "11010519491231002X",
            "phone": "13812345678", "region": "410105", "yes_no": "是"}.get(field.kind, "示例")


def _checked(record: CatalogRecord) -> CheckedRecord:
    data = record.canonical_bytes
    return CheckedRecord(entry=decode(data)["entry"], digest=entry_digest(record.entry), record=data)


def _row(checked: CheckedRecord) -> IndexRow:
    entry = checked.entry
    try:
        materials = " ".join(str(m["name"]) for m in entry.get("materials", ()))
        text = " ".join(part for part in (entry["name"], materials, str(entry.get("conditions", "")))
                        if part)
        return IndexRow(region=entry["region"], code=entry["code"], version=entry["version"],
                        status=entry["status"], name=entry["name"], matter_type=entry["matter_type"],
                        modes=tuple(str(m) for m in entry["modes"]),
                        effective_from=entry["effective_from"], effective_to=entry.get("effective_to"),
                        digest=checked.digest, record=checked.record, text=text,
                        basic_code=entry["basic_code"], scope=entry["scope"])
    except (KeyError, TypeError) as exc:
        raise RemoteProtocolError(Reason.INVALID_FIELD, f"catalog entry: {exc}") from None
