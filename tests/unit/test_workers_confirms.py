"""Publisher-confirm bookkeeping: delivery tags, multiple acks, nacks and returns."""

from __future__ import annotations

from workers.confirms import ConfirmTracker


def _published(tracker: ConfirmTracker, keys) -> list[int]:
    return [tracker.published(key) for key in keys]


def test_tags_count_from_one_in_publish_order():
    tracker = ConfirmTracker()
    assert _published(tracker, "abc") == [1, 2, 3]
    assert tracker.outstanding == 3


def test_single_acks_may_arrive_out_of_order():
    tracker = ConfirmTracker()
    _published(tracker, "abc")
    assert tracker.ack(2) == 1
    assert tracker.ack(1) == 1
    assert tracker.outstanding == 1
    acked, failed = tracker.take()
    assert acked == ["b", "a"] and failed == {}


def test_multiple_ack_settles_every_tag_up_to_it_and_no_further():
    tracker = ConfirmTracker()
    _published(tracker, "abcde")
    tracker.ack(1)
    assert tracker.ack(3, multiple=True) == 2
    assert tracker.outstanding == 2
    assert tracker.take()[0] == ["a", "b", "c"]
    assert tracker.ack(5, multiple=True) == 2
    assert tracker.take()[0] == ["d", "e"]


def test_nack_fails_the_covered_publishes():
    tracker = ConfirmTracker()
    _published(tracker, "abc")
    tracker.nack(2, multiple=True)
    tracker.ack(3)
    acked, failed = tracker.take()
    assert acked == ["c"]
    assert failed == {"a": "nacked by broker", "b": "nacked by broker"}


def test_a_returned_message_fails_even_though_the_broker_acks_it():
    tracker = ConfirmTracker()
    _published(tracker, "ab")
    tracker.returned("a", "unroutable: 312 NO_ROUTE")  # basic.return precedes basic.ack
    tracker.ack(2, multiple=True)
    acked, failed = tracker.take()
    assert acked == ["b"]
    assert failed == {"a": "unroutable: 312 NO_ROUTE"}


def test_a_late_return_of_a_forgotten_publish_does_not_fail_a_later_one():
    tracker = ConfirmTracker()
    _published(tracker, "a")
    tracker.forget()  # a reset dropped the batch; the channel stays open
    tracker.returned("a", "unroutable: 312 NO_ROUTE")  # arrives late, for the forgotten publish
    tag = tracker.published("a")  # the row is claimed and published again, cleanly
    tracker.ack(tag)
    assert tracker.take() == (["a"], {})


def test_unknown_and_repeated_tags_are_ignored():
    tracker = ConfirmTracker()
    _published(tracker, "a")
    assert tracker.ack(7) == 0
    assert tracker.ack(1) == 1
    assert tracker.ack(1) == 0
    assert tracker.take() == (["a"], {})


def test_timeout_or_closed_channel_fails_everything_outstanding():
    tracker = ConfirmTracker()
    _published(tracker, "abc")
    tracker.ack(1)
    tracker.returned("c", "unroutable")
    assert tracker.fail_outstanding("confirm timeout") == 2
    acked, failed = tracker.take()
    assert acked == ["a"]
    assert failed == {"b": "confirm timeout", "c": "confirm timeout"}
    assert tracker.outstanding == 0


def test_take_forgets_settled_keys_but_keeps_pending_ones():
    tracker = ConfirmTracker()
    _published(tracker, "ab")
    tracker.ack(1)
    assert tracker.take() == (["a"], {})
    assert tracker.take() == ([], {})
    assert tracker.outstanding == 1
    assert tracker.next_tag == 3


def test_settled_through_tells_when_a_batch_has_all_its_confirms():
    tracker = ConfirmTracker()
    _published(tracker, "abc")  # first batch: tags 1-3
    _published(tracker, "de")  # second batch: tags 4-5
    assert not tracker.settled_through(3)
    tracker.ack(2, multiple=True)
    tracker.ack(4)
    assert not tracker.settled_through(3) and tracker.settled_through(2)
    tracker.ack(3)
    assert tracker.settled_through(3) and not tracker.settled_through(5)


def test_take_of_some_keys_leaves_the_results_of_others():
    tracker = ConfirmTracker()
    _published(tracker, "abcd")
    tracker.returned("d", "unroutable")
    tracker.ack(4, multiple=True)
    assert tracker.take(["a", "b", "zz"]) == (["a", "b"], {})
    assert tracker.take() == (["c"], {"d": "unroutable"})


def test_forget_keeps_counting_tags_and_ignores_late_confirms():
    tracker = ConfirmTracker()
    _published(tracker, "ab")
    tracker.forget()
    assert tracker.outstanding == 0
    assert tracker.published("c") == 3
    tracker.ack(3, multiple=True)  # covers forgotten tags 1-2 too: they are simply gone
    assert tracker.take() == (["c"], {})
