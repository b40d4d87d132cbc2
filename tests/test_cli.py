"""The ``tongban`` command line as a person uses it: real processes, exit codes, messages."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from loopback import T0, Pair

from protocol import examples as ex


def tongban(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_every_command_has_help() -> None:
    for command in ([], ["keys"], ["keys", "new"], ["verify"], ["node"], ["demo"], ["submit"],
                    ["status"], ["bench"], ["bench", "protocol"], ["bench", "e2e"],
                    ["bench", "catalog"], ["bench", "circle"], ["bench", "video"], ["accounts"],
                    ["accounts", "add"],
                    ["catalog"], ["catalog", "import"],
                    ["catalog", "publish"],
                    ["catalog", "export"], ["catalog", "search"], ["circle"], ["circle", "status"],
                    ["circle", "request-join"], ["circle", "approve"], ["circle", "refuse"],
                    ["circle", "suspend"], ["circle", "revoke"], ["circle", "reinstate"]):
        result = tongban(*command, "--help")
        assert result.returncode == 0, (command, result.stderr)
        assert "Usage:" in result.stdout


def test_keys_new_writes_private_keys_0600_and_refuses_to_overwrite(tmp_path: Path) -> None:
    result = tongban("keys", "new", "--region", "370100", "--out", str(tmp_path / "k"))
    assert result.returncode == 0, result.stderr
    assert "ed25519:" in result.stdout
    for name in ("sign.pem", "encrypt.pem"):
        assert stat.S_IMODE((tmp_path / "k" / name).stat().st_mode) == 0o600
    public = json.loads((tmp_path / "k" / "public.json").read_text())
    assert public["region"] == "370100"
    again = tongban("keys", "new", "--region", "370100", "--out", str(tmp_path / "k"))
    assert again.returncode == 2
    assert "already exists" in again.stderr
    assert "密钥文件已存在" in again.stderr


def test_keys_new_refuses_a_bad_region(tmp_path: Path) -> None:
    result = tongban("keys", "new", "--region", "3701", "--out", str(tmp_path / "k"))
    assert result.returncode == 2
    assert "GB/T 2260" in result.stderr
    assert not (tmp_path / "k").exists()


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    pair = Pair()
    case = "410100-20261123-000001"
    pair.collecting.local(case, "collect", ex.application(T0), T0)
    pair.collecting.local(case, "submit", ex.application(T0), T0 + 1)
    pair.pump(T0 + 2)
    pair.handling.local(case, "accept", ex.accept(T0 + 3), T0 + 3)
    pair.pump(T0 + 4)
    path = tmp_path / "case.tbb"
    path.write_bytes(pair.collecting.bundle(case))
    return path


def test_verify_a_genuine_bundle(bundle: Path) -> None:
    result = tongban("verify", str(bundle))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bundle verifies" in result.stdout
    report = json.loads(tongban("verify", "--json", str(bundle)).stdout)
    assert report["ok"] is True
    assert report["chains"] == {"410100": 4, "370100": 2}


def test_verify_names_the_first_broken_link(bundle: Path, tmp_path: Path) -> None:
    data = bytearray(bundle.read_bytes())
    data[len(data) // 3] ^= 0x01
    tampered = tmp_path / "tampered.tbb"
    tampered.write_bytes(bytes(data))
    result = tongban("verify", str(tampered))
    assert result.returncode == 1
    assert "first broken link:" in result.stdout
    report = json.loads(tongban("verify", "--json", str(tampered)).stdout)
    assert report["ok"] is False
    assert report["link"]


def test_verify_a_missing_file(tmp_path: Path) -> None:
    result = tongban("verify", str(tmp_path / "nope.tbb"))
    assert result.returncode == 2
    assert "无法读取" in result.stderr
    assert "cannot read" in result.stderr


def test_bench_protocol_reports_every_figure() -> None:
    result = tongban("bench", "protocol", "--seconds", "0.2", "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    for key in ("receipts_per_s", "envelopes_per_s", "raw_sign_per_s", "raw_verify_per_s"):
        assert figures[key] > 0


def test_bench_catalog_reports_every_figure() -> None:
    result = tongban("bench", "catalog", "--regions", "3", "--matters", "30", "--updates", "2",
                     "--json", timeout=110)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["entries"] == 90
    for key in ("sync_s", "search_p99_ms", "update_propagation_ms", "rss_mb"):
        assert figures[key] > 0, key
    assert "bench catalog: searching" in result.stderr  # progress, one line per phase


def test_bench_video_reports_every_figure() -> None:
    result = tongban("bench", "video", "--count", "50", "--json", timeout=110)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["samples"] == 50
    for value in (figures["seal_open_us"], figures["signals_per_s"], *figures["hop_ms"].values(),
                  *figures["setup_ms"].values()):
        assert value > 0


def test_bench_circle_reports_every_figure() -> None:
    result = tongban("bench", "circle", "--members", "12", "--matters", "20", "--workers", "1",
                     "--json", timeout=110)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert (figures["members"], figures["members_following"]) == (12, 10)
    for key in ("registry_verify_ms", "registry_update_verify_ms", "route_us", "route_load_ms",
                "join_propagation_ms"):
        assert figures[key] > 0, key
    assert "bench circle: routing" in result.stderr


@pytest.mark.timeout(120)
def test_demo_walks_one_application_and_stops() -> None:
    result = tongban("demo", "--once", "--base-port", "0", timeout=110)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "evidence bundle verifies" in result.stdout
    assert "outcome_received" in result.stdout
    for region in ("410100", "370100", "510100"):
        assert region in result.stdout


def test_node_with_a_bad_configuration(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('region = "37"\nname = "济南市"\ndata_dir = "d"\n[http]\nport = "x"\n',
                      encoding="utf-8")
    result = tongban("node", "--config", str(config))
    assert result.returncode == 2
    assert "region = '37'" in result.stderr
    assert "http.port = 'x'" in result.stderr
    missing = tongban("node", "--config", str(tmp_path / "none.toml"))
    assert missing.returncode == 2
    assert "config file not found" in missing.stderr
