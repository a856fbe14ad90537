"""kafka-python checks every fetched record batch's CRC32C with the C implementation of the
`crc32c` runtime dependency, not its own pure Python (about a quarter of a consumer's CPU
when it catches up; BENCHMARKS.md, issue 16)."""

from __future__ import annotations

import crc32c
from kafka.record import util


def test_kafka_python_uses_the_c_crc32c() -> None:
    assert util.calc_crc32c.__defaults__ == (crc32c.crc32c,)
    assert util.calc_crc32c(memoryview(b"123456789")) == 0xE3069283  # the CRC-32C check value
