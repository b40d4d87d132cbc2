"""Example bodies of every kind, for the documentation, test vectors and benchmarks.

The people are invented; the 公民身份号码 carry valid check digits. The matter is a
跨省通办 high-frequency one (异地就医备案, handled in 济南 370100, collected in 郑州
410100). Every function takes the instant it builds for, so output is reproducible.
"""

from __future__ import annotations

from protocol import bodies as b

__all__ = [
    "COLLECTING",
    "HANDLING",
    "accept",
    "application",
    "delivery",
    "evaluation",
    "forwarded",
    "outcome",
    "progress",
    "refuse",
    "supplement",
    "supplement_request",
    "video_check",
    "withdrawal",
]

COLLECTING = "410100"  # 郑州市: the 通办专窗 that collects
HANDLING = "370100"  # 济南市: the department that decides

DAY = 86_400_000


def application(now: int, *, window_no: str = "ZZ-TB-20261123-0001",
                window_decision: b.Accept | None = None, scans: bool = True) -> b.Application:
    """``scans=False``: paper materials only (no file to transfer)."""
    return b.Application(
        matter=b.MatterRef(code="11370100MB28517409437010200200001", version=3,
                           name="异地就医备案（异地长期居住人员）"),
        case_type=2,
        source=1,
        acceptance="collecting_decides" if window_decision else "handling_decides",
        applicant=b.Applicant(
            kind=1,
            name="张三丰",
            id_type="111",
            id_number="11010519491231002X",
            phone="13812345678",
            postcode="450000",
            address="河南省郑州市金水区花园路100号",
            region="410105",
        ),
        form=(
            b.FormValue(field="insured_place", value="济南市"),
            b.FormValue(field="residence_place", value="郑州市金水区"),
            b.FormValue(field="filing_type", value="异地长期居住"),
        ),
        materials=(
            b.MaterialRef(name="居民身份证", collected=True, mode="paper_original", count=1,
                          trust="B", verified_by="李窗口"),
            *([b.MaterialRef(name="异地居住证明", collected=True, mode="electronic", count=1,
                             trust="C", sha256=bytes(range(32)), size=183_422,
                             media_type="application/pdf", key=bytes(range(32, 64)),
                             chunk_size=262_144, object="m-3f9c2a7be1d04c58a6")] if scans else []),
        ),
        deferred=(
            b.DeferredItem(material="社区居住证明", pledge="本人承诺五个工作日内补交。",
                           due="2026-12-01"),
        ),
        window=b.WindowRecord(
            window_no=window_no,
            window="郑州市政务服务中心跨省通办专窗",
            clerk="李窗口",
            received_at=now,
            identity=b.IdentityCheck(method="id_card_reader", passed=True, checked_at=now,
                                     checked_by="李窗口"),
            formal_review=b.FormalReview(passed=True, reviewed_at=now, reviewed_by="李窗口"),
        ),
        window_decision=window_decision,
        summary="张三丰 异地就医备案",
    )


def accept(now: int, promised_date: str = "2026-12-18") -> b.Accept:
    return b.Accept(doc_no="济医保受〔2026〕1234号", accepted_at=now,
                    promised_date=promised_date, decided_by="王审核")


def supplement_request(now: int) -> b.SupplementRequest:
    return b.SupplementRequest(
        items=(b.SupplementItem(material="异地居住证明", reason="扫描件不清晰，请重新提交。"),),
        note="请一次性补齐。",
        notified_at=now,
        decided_by="王审核",
    )


def refuse(now: int) -> b.Refuse:
    return b.Refuse(reason="申请事项不属于本机关职权范围。",
                    legal_basis="《中华人民共和国行政许可法》第三十二条第一款第（二）项",
                    refused_at=now, decided_by="王审核")


def supplement(now: int) -> b.Supplement:
    return b.Supplement(
        materials=(b.MaterialRef(name="异地居住证明", collected=True, mode="electronic", count=1,
                                 trust="B", sha256=bytes(32), size=1024,
                                 media_type="application/pdf", key=bytes(32),
                                 chunk_size=262_144, object="m-7d41e09b3ac25f16c0"),),
        supplied_at=now,
    )


def withdrawal(now: int) -> b.Withdrawal:
    return b.Withdrawal(reason="申请人主动撤回。", requested_at=now, requested_by="李窗口")


def forwarded(now: int, attempts: int = 1) -> b.Forwarded:
    return b.Forwarded(department="济南市医疗保障局", department_code="11370100MB2851740X",
                       forwarded_at=now, attempts=attempts)


def progress(now: int, event: str = "step") -> b.Progress:
    special = None
    if event != "step":
        special = b.SpecialProcedure(type=2, name="现场核查", reason="需核实居住情况",
                                     result="核查属实" if event == "resume" else "")
    return b.Progress(event=event, at=now, step="审核", handler="赵办理", opinion="材料齐全",  # type: ignore[arg-type]
                      special=special)


def outcome(now: int) -> b.Outcome:
    return b.Outcome(result="approved", concluded_at=now, description="备案成功",
                     issuer="济南市医疗保障局", handler="赵办理", delivery="electronic")


def delivery(now: int) -> b.Delivery:
    return b.Delivery(mode="post", delivered_at=now, recipient="张三丰", courier="中国邮政EMS",
                      tracking_no="1234567890123")


def evaluation(now: int) -> b.Evaluation:
    return b.Evaluation(satisfaction=1, channel="hall_tablet", evaluated_at=now,
                        text="办事方便", region=COLLECTING)


def video_check(now: int) -> b.VideoCheck:
    return b.VideoCheck(session="vs-410100-Qm9vZ2llV29vZ2llMQ", check="identity", confirmed=True,
                        note="视频中本人与身份证照片一致", at=now, reviewer="王审核")
