"""Which records a run trains on: selection, splits and replay sampling (pure code)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from trainer.selection import Record, assign_splits, fill, sample_replay, select, split_of

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def rec(i, status="verified", detections=1, label=True, minutes=0, hint=None) -> Record:
    return Record(
        id=str(i),
        image_object=f"images/{i}.jpg",
        label_object=f"labels/{i}.txt" if label else None,
        status=status,
        detections=detections,
        updated_at=T0 + timedelta(minutes=minutes),
        split_hint=hint,
    )


def ids(result) -> list[str]:
    return [r.id for r in result.selected]


def test_rejected_and_pending_records_never_train_with_only_verified():
    records = [rec("v", "verified"), rec("c", "corrected"), rec("p", "pending"), rec("r", "rejected")]
    result = select(records, only_verified=True, min_detections=1)
    assert ids(result) == ["v", "c"]
    assert result.counts["rejected"] == 1
    assert result.counts["not_verified"] == 1
    assert result.counts["selected"] == 2


def test_without_only_verified_pending_trains_but_rejected_never_does():
    records = [rec("v", "verified"), rec("p", "pending"), rec("r", "rejected"), rec("c", "corrected")]
    result = select(records, only_verified=False, min_detections=1)
    assert ids(result) == ["v", "p", "c"]
    assert result.counts["rejected"] == 1
    assert "not_verified" not in result.counts


def test_records_with_fewer_detections_than_the_minimum_are_left_out():
    records = [rec("0", detections=0), rec("1", detections=1), rec("3", detections=3)]
    assert ids(select(records, only_verified=True, min_detections=0)) == ["0", "1", "3"]
    result = select(records, only_verified=True, min_detections=2)
    assert ids(result) == ["3"]
    assert result.counts["too_few_detections"] == 2


def test_duplicated_ids_are_counted_and_only_the_first_is_kept():
    records = [rec("a", minutes=1), rec("a", minutes=2), rec("b"), rec("a", minutes=3)]
    result = select(records, only_verified=True, min_detections=1)
    assert ids(result) == ["a", "b"]
    assert result.selected[0].updated_at == T0 + timedelta(minutes=1)
    assert result.counts["duplicate_id"] == 2
    assert result.counts["candidates"] == 4


def test_records_without_a_label_are_counted_and_skipped():
    result = select([rec("a", label=False), rec("b")], only_verified=True, min_detections=1)
    assert ids(result) == ["b"]
    assert result.counts["no_label"] == 1


def test_cutoff_is_the_newest_updated_at_among_selected_records():
    records = [rec("old", minutes=1), rec("new", minutes=5), rec("rejected-newest", "rejected", minutes=9)]
    result = select(records, only_verified=True, min_detections=1)
    assert result.cutoff == T0 + timedelta(minutes=5)


def test_cutoff_is_none_when_nothing_is_selected():
    result = select([rec("r", "rejected")], only_verified=True, min_detections=1)
    assert result.selected == []
    assert result.cutoff is None
    assert result.counts["selected"] == 0


def test_split_of_is_stable_for_the_same_id():
    assert all(split_of(f"id-{i}", 0.8) == split_of(f"id-{i}", 0.8) for i in range(200))


@pytest.mark.parametrize("fraction", [0.5, 0.8, 0.9])
def test_split_of_roughly_honours_the_train_fraction_over_10000_ids(fraction):
    train = sum(split_of(f"record-{i}", fraction) == "train" for i in range(10_000))
    assert abs(train / 10_000 - fraction) <= 0.02


def hints(records) -> dict[str, str | None]:
    return {r.id: r.split_hint for r in records}


def test_assign_splits_keeps_a_datasets_own_split_hint():
    records = [rec(i, hint="val" if i % 2 else "train") for i in range(20)]
    splits = assign_splits(hints(records), 0.8)
    assert splits == {r.id: r.split_hint for r in records}


def test_assign_splits_without_hints_uses_the_stable_hash():
    records = [rec(f"x{i}") for i in range(50)]
    splits = assign_splits(hints(records), 0.8)
    assert {k: v for k, v in splits.items()} == {r.id: split_of(r.id, 0.8) for r in records}


@pytest.mark.parametrize("fraction", [0.01, 0.99])
@pytest.mark.parametrize("n", [2, 3, 10])
def test_assign_splits_guarantees_one_val_and_one_train_sample_for_two_or_more(n, fraction):
    splits = assign_splits(hints([rec(f"s{i}") for i in range(n)]), fraction)
    assert len(splits) == n
    assert "val" in splits.values()
    assert "train" in splits.values()


def test_assign_splits_with_every_hint_train_still_validates_on_one_sample():
    splits = assign_splits(hints([rec(i, hint="train") for i in range(5)]), 0.8)
    assert list(splits.values()).count("val") == 1


def test_assign_splits_never_moves_a_held_out_record_into_training():
    """New records that all hash to val, plus earlier validation images: a new one trains, the held-out
    ones stay validation images (else the challenger would be scored on what it trained on)."""
    new = [rec(f"n{i}") for i in range(200) if split_of(f"n{i}", 0.5) == "val"][:3]
    held_out = [rec(f"h{i}", hint="val") for i in range(5)]
    splits = assign_splits(hints(new + held_out), 0.5)
    assert all(splits[r.id] == "val" for r in held_out)
    assert [r.id for r in new if splits[r.id] == "train"] != []


def test_assign_splits_of_a_single_record_does_not_invent_a_val_sample():
    assert len(assign_splits(hints([rec("only")]), 0.8)) == 1


def pool_of(n_common=100, rare_class=5):
    return [(f"c{i}", [0]) for i in range(n_common)] + [("rare", [rare_class])]


def test_sample_replay_is_deterministic_per_seed():
    pool = [(f"s{i}", [i % 6, (i * 7) % 6]) for i in range(300)]
    a = sample_replay(pool, 40, seed=3, exclude=set())
    assert a == sample_replay(pool, 40, seed=3, exclude=set())
    assert a != sample_replay(pool, 40, seed=4, exclude=set())


def test_sample_replay_never_returns_excluded_ids():
    pool = [(f"s{i}", [i % 6]) for i in range(100)]
    exclude = {f"s{i}" for i in range(0, 100, 2)}
    picked = sample_replay(pool, 50, seed=1, exclude=exclude)
    assert len(picked) == 50
    assert not set(picked) & exclude


@pytest.mark.parametrize("count", [0, 1, 6, 50, 101])
def test_sample_replay_returns_exactly_count_distinct_ids_when_the_pool_allows(count):
    picked = sample_replay(pool_of(), count, seed=0, exclude=set())
    assert len(picked) == count
    assert len(set(picked)) == count


def test_sample_replay_never_returns_more_than_the_pool_holds():
    picked = sample_replay(pool_of(), 1000, seed=0, exclude=set())
    assert sorted(picked) == sorted(i for i, _ in pool_of())


def test_sample_replay_represents_a_rare_class():
    for seed in range(10):
        assert "rare" in sample_replay(pool_of(), 6, seed=seed, exclude=set())


def test_sample_replay_of_an_empty_pool_is_empty():
    assert sample_replay([], 5, seed=0, exclude=set()) == []
    assert sample_replay([("a", [1])], 5, seed=0, exclude={"a"}) == []


def fetch_from(alive: set[str], calls: list[list[str]]):
    def fetch(ids: list[str]) -> list[Record]:
        calls.append(ids)
        return [rec(i) for i in sorted(ids) if i in alive]  # any order, as a query returns them

    return fetch


def test_fill_replaces_records_gone_since_sampling_until_the_count_asked_for():
    order = [f"p{i}" for i in range(10)]
    alive = set(order) - {"p0", "p2", "p3"}  # re-reviewed as rejected since they were trained on
    got = fill(order, 5, fetch_from(alive, []))
    assert [r.id for r in got] == ["p1", "p4", "p5", "p6", "p7"]


def test_fill_stops_when_the_pool_is_exhausted():
    order = [f"p{i}" for i in range(6)]
    got = fill(order, 5, fetch_from({"p1", "p5"}, []))
    assert [r.id for r in got] == ["p1", "p5"]


def test_fill_fetches_in_batches_not_one_query_per_id():
    order = [f"p{i}" for i in range(5000)]
    calls: list[list[str]] = []
    got = fill(order, 1000, fetch_from({i for n, i in enumerate(order) if n % 2}, calls))
    assert len(got) == 1000 and len(calls) <= 4


def test_fill_of_nothing_asks_nothing():
    calls: list[list[str]] = []
    assert fill(["a"], 0, fetch_from({"a"}, calls)) == [] and calls == []
