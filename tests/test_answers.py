"""The answers' own encodings of what the ledger says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from gateway.serve.answers import set_timestamp

ZONES = st.sampled_from([None, UTC, timezone(timedelta(hours=8)), timezone(-timedelta(hours=3, minutes=30))])


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1)), ZONES)
def test_a_moment_is_the_timestamp_protobufs_from_datetime_makes(moment: datetime, zone: timezone | None) -> None:
    """A settlement's settled_at: the same seconds and nanos as Timestamp.FromDatetime (a naive moment is UTC)."""
    moment = moment.replace(tzinfo=zone)
    expected, ours = Timestamp(), Timestamp()
    expected.FromDatetime(moment)
    set_timestamp(ours, moment)
    assert (ours.seconds, ours.nanos) == (expected.seconds, expected.nanos)
