"""The hand-checked worked example shared by the rating unit test and the integration test.

March 2025 (31 days), billing time zone UTC+8 (Asia/Singapore and Asia/Shanghai alike).
A circuit of 200 Mbps CIR is activated on 2025-03-10 at 14:00 local (06:00 UTC) and
upgraded to 500 Mbps on 2025-03-20 at 09:00 local (01:00 UTC).

Segment 1, 200 Mbps: dates 10..19 = 10 days, factor 10/31; its instants
[03-10 06:00Z, 03-20 01:00Z) hold 9 d 19 h = 2,820 five-minute intervals. One hour of polls
is missing (12 intervals, a gap) and one interval is invalid (counter reset), so N = 2,807
valid samples; floor(5 * 2807 / 100) = 140 are discarded per direction. Inbound: 140 samples
at 900 Mbps (discarded), one at 259.2 Mbps, the rest at most 150 Mbps: p95 in = 259.2 ->
260 Mbps. Outbound: 140 samples at 700 Mbps, the rest at most 150: p95 out = 150. Billable 260,
overage 260 - 200 = 60 Mbps.

Segment 2, 500 Mbps: dates 20..31 = 12 days, factor 12/31; [03-20 01:00Z, 03-31 16:00Z)
holds 11 d 15 h = 3,348 intervals, all present: N = 3,348, floor(167.4) = 167 discarded.
Outbound: 167 at 2,000 Mbps, one at 520.3 Mbps, the rest 300: p95 out = 520.3 -> 521.
Inbound: one at 400, 167 at 380, the rest 350: p95 in = 380. Billable 521, overage 21 Mbps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

BYTES_PER_MBPS = 37_500_000  # 1 Mbps during 300 s
ACTIVATION = datetime(2025, 3, 10, 6, 0, tzinfo=UTC)
UPGRADE = datetime(2025, 3, 20, 1, 0, tzinfo=UTC)
MONTH_END = datetime(2025, 3, 31, 16, 0, tzinfo=UTC)
GAP_START = 100  # index of the first missing interval of segment 1 (12 missing)
RESET_INDEX = 500  # index of the counter-reset interval of segment 1
BILLED_1 = 777  # index in segment 1 of the 259.2 Mbps sample
BILLED_2 = 2000  # index in segment 2 of the 520.3 Mbps sample


@dataclass(frozen=True)
class RawSample:
    interval_start: datetime
    bytes_in: int
    bytes_out: int
    valid: bool = True


def mbps_bytes(mbps: str) -> int:
    return int(Decimal(mbps) * BYTES_PER_MBPS)


def series() -> list[RawSample]:
    samples: list[RawSample] = []
    for i in range(2820):
        if GAP_START <= i < GAP_START + 12:
            continue
        start = ACTIVATION + timedelta(minutes=5 * i)
        if i == RESET_INDEX:
            samples.append(RawSample(start, 10**14, 10**14, valid=False))
        elif i == BILLED_1:
            samples.append(RawSample(start, mbps_bytes("259.2"), mbps_bytes("150")))
        elif i % 20 == 3:  # 141 such indexes, one in the gap: the 140 discarded
            samples.append(RawSample(start, mbps_bytes("900"), mbps_bytes("700")))
        else:
            samples.append(RawSample(start, mbps_bytes(str(100 + i % 50)), mbps_bytes("80")))
    for j in range(3348):
        start = UPGRADE + timedelta(minutes=5 * j)
        if j == BILLED_2:
            samples.append(RawSample(start, mbps_bytes("400"), mbps_bytes("520.3")))
        elif j % 20 == 7 and j < 20 * 167:
            samples.append(RawSample(start, mbps_bytes("380"), mbps_bytes("2000")))
        else:
            samples.append(RawSample(start, mbps_bytes("350"), mbps_bytes("300")))
    return samples


@dataclass(frozen=True)
class Prices:
    currency: str
    mrc_200: str
    nrc: str
    burst_200: str
    mrc_500: str
    burst_500: str


SGD = Prices("SGD", "1000.00", "500.00", "12.50", "2000.00", "10.00")
CNY = Prices("CNY", "6800.00", "3000.00", "45.50", "15000.00", "38.80")

# Expected lines (kind, amount), in invoice order, and totals, worked by hand:
# SGD, GST 9%:
#   MRC 200   1000.00 * 10/31 = 322.5806...  -> 322.58
#   NRC        500.00                        -> 500.00
#   BURST 200 12.50 * 60 * 10/31 = 241.9354...-> 241.94
#   MRC 500   2000.00 * 12/31 = 774.1935...  -> 774.19
#   BURST 500 10.00 * 21 * 12/31 = 81.2903...-> 81.29
#   subtotal 1920.00; tax 0.09 * 1920.00 = 172.80; total 2092.80
EXPECTED_SGD = (
    [("MRC", "322.58"), ("NRC", "500.00"), ("BURST", "241.94"),
     ("MRC", "774.19"), ("BURST", "81.29")],
    ("1920.00", "172.80", "2092.80"),
)
# CNY, VAT 6%:
#   MRC 200   6800.00 * 10/31 = 2193.5483... -> 2193.55
#   NRC       3000.00                        -> 3000.00
#   BURST 200 45.50 * 60 * 10/31 = 880.6451...-> 880.65
#   MRC 500   15000.00 * 12/31 = 5806.4516...-> 5806.45
#   BURST 500 38.80 * 21 * 12/31 = 315.4064...-> 315.41
#   subtotal 12196.06; tax 0.06 * 12196.06 = 731.7636 -> 731.76; total 12927.82
EXPECTED_CNY = (
    [("MRC", "2193.55"), ("NRC", "3000.00"), ("BURST", "880.65"),
     ("MRC", "5806.45"), ("BURST", "315.41")],
    ("12196.06", "731.76", "12927.82"),
)
