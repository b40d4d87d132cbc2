"""Materials (scans) from the collecting window to the handling region's reviewer.

Real processes: a 3 MB scan is uploaded at the collecting node, encrypted there,
attached to an application, carried through the handling region's object store,
and read back at the handling node byte for byte. The object store holds only
ciphertext.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from pathlib import Path

import aiohttp
import nats
import pytest

from tests.cluster import Cluster

pytestmark = pytest.mark.timeout(120)

C, H = "410100", "370100"


async def _upload(cluster: Cluster, data: bytes, name: str, media_type: str) -> aiohttp.ClientResponse:
    assert cluster.session is not None
    return await cluster.session.post(cluster.url(C, f"/api/materials?name={name}"),
                                      data=io.BytesIO(data),
                                      headers={"Content-Type": media_type})


async def test_a_scan_reaches_the_reviewer_intact(tmp_path: Path) -> None:
    scan = os.urandom(3 * 1024 * 1024 + 123)
    async with Cluster(tmp_path) as cluster:
        cluster.configure(C, [H])
        cluster.configure(H, [C])
        await cluster.start(C)
        await cluster.start(H)
        reply = await _upload(cluster, scan, "异地居住证明", "application/pdf")
        assert reply.status == 201
        material = await reply.json()
        assert material["size"] == len(scan)
        assert material["sha256"] == hashlib.sha256(scan).hexdigest()
        assert "key" not in material  # the key never leaves the node in clear

        created = await cluster.post(C, "/api/cases", {"handling": H,
                                                       "materials": [material["object"]]})
        await cluster.wait_for(H, "received", 1, 30)
        assert cluster.session is not None
        for _ in range(100):
            async with cluster.session.get(cluster.url(H, f"/api/materials/{material['object']}")
                                           ) as got:
                if got.status == 200:
                    assert got.headers["Content-Type"] == "application/pdf"
                    assert await got.read() == scan
                    break
                assert got.status == 409  # still on its way
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the material never arrived")

        # What the object store holds is ciphertext: the scan's bytes do not appear in it.
        client = await nats.connect(cluster.nats_url)
        try:
            store = await client.jetstream().object_store(f"TB_MAT_{H}")
            stored = (await store.get(material["object"])).data
        finally:
            await client.close()
        assert len(stored) > len(scan)
        assert scan[:4096] not in stored
        # The same material cannot be attached to a second case.
        assert cluster.session is not None
        again = await cluster.session.post(cluster.url(C, "/api/cases"), json={
            "handling": H, "materials": [material["object"]]})
        assert again.status == 400
        assert created["case_id"]


async def test_uploads_are_checked(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        cluster.configure(H, [C])
        cluster.configure(C, [H])
        await cluster.start(C)
        wrong_type = await _upload(cluster, b"MZ\x90\x00", "身份证", "application/x-msdownload")
        assert wrong_type.status == 415
        assert "PDF" in (await wrong_type.json())["zh"]
        nameless = await _upload(cluster, b"%PDF-1.7", "", "application/pdf")
        assert nameless.status == 400
        assert list((tmp_path / C / "materials").glob("*.part")) == []


async def test_a_scan_no_application_used_is_deleted_after_its_time(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        cluster.configure(H, [C])
        cluster.configure(C, [H])
        await cluster.start(C)
        kept = await (await _upload(cluster, b"%PDF-1.7 kept", "户口簿", "application/pdf")).json()
        left = await (await _upload(cluster, b"%PDF-1.7 left", "身份证", "application/pdf")).json()
        assert cluster.session is not None
        async with cluster.session.post(cluster.url(C, "/api/cases"), json={
                "handling": H, "materials": [kept["object"]]}) as response:
            assert response.status == 201
        await cluster.stop(C)
        folder = tmp_path / C / "materials"
        assert list(folder.glob(f"{left['object']}*"))
        # Started again with a very short keeping time: the unused scan goes, row and file.
        cluster.configure(C, [H], limits={"unused_material_days": 1e-6})
        await cluster.start(C)
        deadline = asyncio.get_running_loop().time() + 15
        while list(folder.glob(f"{left['object']}*")):
            assert asyncio.get_running_loop().time() < deadline, "the unused scan is still there"
            await asyncio.sleep(0.1)
        assert list(folder.glob(f"{kept['object']}*"))  # used by an application: kept
        async with cluster.session.get(cluster.url(C, f"/api/materials/{left['object']}")) as gone:
            assert gone.status == 404
