"""The consumer's count of deliveries it holds unacked (what the audit's wait relies on)."""

from __future__ import annotations

from workers.unacked import UnackedTags


def test_deliveries_count_until_acked_singly_or_up_to_a_tag():
    tags = UnackedTags()
    for tag in range(1, 6):
        tags.received(0, tag)
    assert len(tags) == 5
    tags.acked(0, 3)  # a poison message, acked alone
    assert len(tags) == 4
    tags.acked(0, 4, multiple=True)  # the batch before it, with one multiple ack
    assert len(tags) == 1
    tags.acked(0, 5, multiple=True)
    assert len(tags) == 0


def test_a_new_channel_starts_a_new_count_and_old_acks_are_ignored():
    tags = UnackedTags()
    tags.received(1, 1)
    tags.received(1, 2)
    tags.acked(0, 2, multiple=True)  # a stale tag of an older channel settles nothing here
    assert len(tags) == 2
    tags.received(2, 1)  # the broker handed the dropped channel's deliveries back here
    assert len(tags) == 1 and tags.generation == 2
