"""The transition rule, exhaustively: every current status against every event kind."""

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from notify_tracking import status as st

# Expected table, written out by hand from the rule in ARCHITECTURE.md and
# docs/statuses.md (not computed from the code under test).
# Rows: current status. Columns: event kind, in the order of COLUMNS.
COLUMNS = [
    "queued", "sent", "delivered", "opened", "clicked", "deferred",
    "failed", "rejected", "bounced", "complained", "download", "unsubscribed",
]  # fmt: skip
TABLE = {
    "queued":     ["queued", "sent", "delivered", "opened", "clicked", "deferred",
                   "failed", "rejected", "bounced", "complained", "clicked", "queued"],
    "sent":       ["sent", "sent", "delivered", "opened", "clicked", "deferred",
                   "failed", "rejected", "bounced", "complained", "clicked", "sent"],
    "delivered":  ["delivered", "delivered", "delivered", "opened", "clicked", "delivered",
                   "failed", "rejected", "bounced", "complained", "clicked", "delivered"],
    "opened":     ["opened", "opened", "opened", "opened", "clicked", "opened",
                   "opened", "opened", "opened", "complained", "clicked", "opened"],
    "clicked":    ["clicked", "clicked", "clicked", "clicked", "clicked", "clicked",
                   "clicked", "clicked", "clicked", "complained", "clicked", "clicked"],
    "deferred":   ["deferred", "sent", "delivered", "opened", "clicked", "deferred",
                   "failed", "rejected", "bounced", "complained", "clicked", "deferred"],
    "failed":     ["failed", "failed", "failed", "opened", "clicked", "failed",
                   "failed", "rejected", "bounced", "complained", "clicked", "failed"],
    "rejected":   ["rejected", "rejected", "rejected", "opened", "clicked", "rejected",
                   "failed", "rejected", "bounced", "complained", "clicked", "rejected"],
    "bounced":    ["bounced", "bounced", "bounced", "opened", "clicked", "bounced",
                   "failed", "rejected", "bounced", "complained", "clicked", "bounced"],
    "complained": ["complained"] * 12,
}  # fmt: skip

PAIRS = [(current, kind, TABLE[current][i]) for current in TABLE for i, kind in enumerate(COLUMNS)]


def test_table_covers_every_status_and_event_kind():
    assert set(TABLE) == set(st.STATUSES)
    assert set(COLUMNS) == set(st.EVENT_KINDS)
    assert len(PAIRS) == len(st.STATUSES) * len(st.EVENT_KINDS)


@pytest.mark.parametrize(("current", "kind", "expected"), PAIRS)
def test_next_status(current, kind, expected):
    assert st.next_status(current, kind) == expected


def test_unknown_event_kind_is_refused():
    with pytest.raises(ValueError, match="unknown event kind 'read'"):
        st.next_status("sent", "read")


def test_unknown_status_is_refused():
    with pytest.raises(ValueError, match="unknown status 'lost'"):
        st.next_status("lost", "sent")


def fold(kinds, start=st.QUEUED):
    current = start
    for kind in kinds:
        current = st.next_status(current, kind)
    return current


@given(hs.lists(hs.sampled_from(st.PROGRESS), max_size=20))
def test_progress_alone_ends_at_the_furthest_stage(kinds):
    expected = max(kinds, key=st.PROGRESS.index, default=st.QUEUED)
    assert fold(kinds) == expected


@given(hs.lists(hs.sampled_from(st.EVENT_KINDS), max_size=20))
def test_complained_is_never_replaced(kinds):
    assert fold(kinds, start=st.COMPLAINED) == st.COMPLAINED


@given(hs.lists(hs.sampled_from(st.EVENT_KINDS), max_size=20))
def test_a_read_is_never_undone_except_by_a_complaint(kinds):
    end = fold(kinds, start=st.OPENED)
    assert end in (st.OPENED, st.CLICKED, st.COMPLAINED)
    assert (end == st.COMPLAINED) == (st.COMPLAINED in kinds)


@given(hs.lists(hs.sampled_from(st.EVENT_KINDS), max_size=20))
def test_applying_an_event_twice_in_a_row_changes_nothing_more(kinds):
    for kind in st.EVENT_KINDS:
        once = st.next_status(fold(kinds), kind)
        assert st.next_status(once, kind) == once


def test_helpers():
    assert st.is_failure("bounced") and not st.is_failure("deferred")
    assert st.reached("clicked", "opened") and not st.reached("sent", "delivered")
    assert not st.reached("failed", "sent")
