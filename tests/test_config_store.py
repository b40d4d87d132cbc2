"""Configuration loading and the SQLite store (schema versions, group commit)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from config import ConfigError, load_config, parse_config
from node.store import MIGRATIONS, Changes, Store, StoreError

EXAMPLES = Path(__file__).parent.parent / "config" / "examples"


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.toml")))
def test_example_configurations_load(name: str) -> None:
    config = load_config(EXAMPLES / name, environ={})
    assert config.data_dir.is_absolute()  # relative to the file
    assert {p.region for p in config.peers}
    assert config.region not in {p.region for p in config.peers}
    assert config.departments


def test_three_region_circle_is_consistent() -> None:
    configs = [load_config(p, environ={}) for p in EXAMPLES.glob("*.toml")]
    regions = {c.region for c in configs}
    assert len(regions) == 3
    for config in configs:
        assert {p.region for p in config.peers} == regions - {config.region}
    assert len({c.http.port for c in configs}) == 3


def test_environment_overrides_one_key() -> None:
    config = parse_config({"region": "370100", "name": "济南市", "data_dir": "d"}, base=Path("/x"),
                          environ={"TONGBAN_HTTP__PORT": "9000",
                                   "TONGBAN_NATS__URLS": '["nats://10.0.0.5:4222"]',
                                   "OTHER": "ignored"})
    assert config.http.port == 9000
    assert config.nats.urls == ["nats://10.0.0.5:4222"]
    assert config.data_dir == Path("/x/d")


def test_bad_values_name_key_value_and_rule() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"region": "3701", "name": "济南市", "data_dir": "d",
                      "http": {"port": 70000}, "retry": {"attempts": 0},
                      "departments": [{"kind": "fax", "name": "x"}]}, base=Path("."), environ={})
    message = str(caught.value)
    assert "配置有误" in message
    assert "region = '3701'" in message
    assert "pattern" in message
    assert "http.port = 70000" in message
    assert "less than or equal to 65535" in message
    assert "retry.attempts = 0" in message
    assert "'fax'" in message
    assert "'desk', 'webhook', 'nats'" in message


def test_unknown_keys_and_missing_ones_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"name": "济南市", "data_dir": "d", "htp": {}}, base=tmp_path, environ={})
    assert "region = (missing)" in str(caught.value)
    assert "htp" in str(caught.value)


def test_unreadable_configuration_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text('region = "370100\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


# ------------------------------------------------------------------ store


def test_a_new_database_is_migrated_to_the_latest_schema(tmp_path: Path) -> None:
    Store(tmp_path / "n.db")
    connection = sqlite3.connect(tmp_path / "n.db")
    assert connection.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"cases", "receipts", "envelopes", "outbox", "seen", "timers", "materials"} <= tables
    connection.close()


def test_an_older_database_is_migrated_forward(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "n.db", isolation_level=None)
    for statement in MIGRATIONS[0]:
        connection.execute(statement)
    connection.execute("PRAGMA user_version=1")
    connection.close()
    store = Store(tmp_path / "n.db")
    assert store.materials_in("local") == []  # the version 2 table exists now


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "n.db")
    connection.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    connection.close()
    with pytest.raises(StoreError, match="newer than this program"):
        Store(tmp_path / "n.db")


async def test_group_commit_serves_many_changes_with_few_transactions(tmp_path: Path) -> None:
    store = Store(tmp_path / "n.db")
    store.start()
    try:
        await asyncio.gather(*(store.commit(Changes(
            outbox=[(f"m{i:06d}", "tb.370100.in.application", b"w", i)],
            timers_set=[(f"c{i}", "notice", i)])) for i in range(2000)))
        assert store.commits == 2000
        assert store.batches < 200
        assert store.outbox_backlog() == 2000
        assert store.next_timer() == 0
        await store.commit(Changes(sent=[(5, "m000001")], timers_cancel=[("c0", "notice")]))
        assert store.outbox_backlog() == 1999
        assert store.next_timer() == 1
    finally:
        await store.close()


async def test_a_failing_change_does_not_sink_the_others(tmp_path: Path) -> None:
    store = Store(tmp_path / "n.db")
    store.start()
    try:
        bad = Changes(cases=[{"case_id": "x", "role": "collecting", "peer": "370100",
                              "state": None, "snapshot": {}, "at": 1, "matter": None,
                              "window_no": None}])  # state NOT NULL
        good = Changes(outbox=[("m1", "tb.370100.in.application", b"w", 1)])
        results = await asyncio.gather(store.commit(bad), store.commit(good),
                                       return_exceptions=True)
        assert isinstance(results[0], StoreError)
        assert results[1] is None
        assert store.outbox_backlog() == 1
        assert store.case_row("x") is None  # nothing half-written
    finally:
        await store.close()


async def test_snapshots_read_back_are_the_committed_ones(tmp_path: Path) -> None:
    store = Store(tmp_path / "n.db")
    store.snapshot_cache_size = 2
    store.start()

    def row(case_id: str, state: str | None, n: int) -> dict[str, object]:
        return {"case_id": case_id, "role": "collecting", "peer": "370100", "state": state,
                "snapshot": {"state": state, "our_index": n, "timers": {"notice": n}},
                "at": n, "matter": None, "window_no": None}

    try:
        await store.commit(Changes(cases=[row("a", "sent", 1), row("b", "sent", 2)]))
        read = store.case_snapshot("a")
        assert read == {"state": "sent", "our_index": 1, "timers": {"notice": 1}}
        assert read is not None
        read["state"] = "changed by the reader"  # a copy: the next read is unaffected
        assert store.case_snapshot("a") == {"state": "sent", "our_index": 1,
                                            "timers": {"notice": 1}}
        with pytest.raises(StoreError):  # not written, so not what a read returns
            await store.commit(Changes(cases=[row("a", None, 9)]))
        assert store.case_snapshot("a") == {"state": "sent", "our_index": 1,
                                            "timers": {"notice": 1}}
        await store.commit(Changes(cases=[row("c", "sent", 3)]))  # "a" leaves the cache
        assert len(store._snapshots) == 2
        fresh = Store(tmp_path / "n.db")  # what the disk holds, without any cache
        try:
            for case_id in "abc":
                assert store.case_snapshot(case_id) == fresh.case_snapshot(case_id)
        finally:
            await fresh.close()
    finally:
        await store.close()
