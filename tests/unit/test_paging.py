"""Keyset page tokens: opaque, round-tripped, refused when forged or from another list; a
page after a key is unmoved by rows inserted before it."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, create_engine, select

from services.common.errors import InvalidArgument
from services.common.paging import (
    after,
    checked,
    decode_token,
    encode_token,
    page_of,
    page_request,
)

T0 = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)


def test_a_token_carries_the_last_key_and_reads_back_the_same() -> None:
    key = (T0, "ord-7", 42)
    token = encode_token(key)
    assert "ord-7" not in token  # opaque to callers
    assert decode_token(token) == key
    assert page_request(0, token, default=50, maximum=1000).after == key
    assert page_request(5000, "", default=50, maximum=1000).limit == 1000


@pytest.mark.parametrize("token", [
    "!!", "2", base64.urlsafe_b64encode(b'["k9", ["ord-7"]]').decode(),
    base64.urlsafe_b64encode(b'["k1", [{"t": "2026-12-04T02:00:00"}]]').decode()])
def test_a_forged_or_offset_token_is_refused_on_the_page_token_field(token: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        page_request(0, token, default=50, maximum=1000)
    assert [v.field for v in refused.value.violations] == ["page_token"]


def test_a_token_of_another_list_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        checked((T0, "ord-7"), str)
    with pytest.raises(InvalidArgument):
        checked((T0, 7), datetime, str)
    assert checked(("sg-sin1",), str) == ("sg-sin1",)


def test_the_next_page_is_after_the_last_key_even_when_rows_arrive_meanwhile() -> None:
    rows = Table("rows", MetaData(), Column("created_at", DateTime(timezone=True)),
                 Column("id", String), Column("n", Integer))
    engine = create_engine("sqlite://")
    rows.metadata.create_all(engine)
    key = (rows.c.created_at, rows.c.id)
    with engine.begin() as connection:
        connection.execute(rows.insert(), [
            {"created_at": T0 + timedelta(minutes=i // 2), "id": f"r{i}", "n": i}
            for i in range(7)])

        def newest(token: str) -> tuple[list[int], str]:
            page = page_request(3, token, default=50, maximum=1000)
            query = select(rows).order_by(*(c.desc() for c in key)).limit(page.limit + 1)
            if page.after is not None:
                query = query.where(after(key, page.after, descending=True))
            found = connection.execute(query).all()
            shown, following = page_of(found, page, lambda r: (r.created_at, r.id))
            return [r.n for r in shown], following

        first, token = newest("")
        assert first == [6, 5, 4]
        connection.execute(rows.insert(), {"created_at": T0 + timedelta(hours=1), "id": "new",
                                           "n": 99})
        second, token = newest(token)
        third, last = newest(token)
        assert (second, third, last) == ([3, 2, 1], [0], "")


def test_a_key_can_mix_descending_and_ascending_columns() -> None:
    rows = Table("months", MetaData(), Column("month", Integer), Column("tenant", String))
    engine = create_engine("sqlite://")
    rows.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(rows.insert(), [{"month": m, "tenant": t}
                                           for m in (1, 2) for t in ("a", "b", "c")])
        query = (select(rows.c.month, rows.c.tenant)
                 .where(after((rows.c.month, rows.c.tenant), (2, "b"),
                              descending=(True, False)))
                 .order_by(rows.c.month.desc(), rows.c.tenant))
        assert [tuple(r) for r in connection.execute(query)] == [
            (2, "c"), (1, "a"), (1, "b"), (1, "c")]
