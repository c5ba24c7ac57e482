"""The promotion gate: a new version replaces the deployed one only if it is not worse."""

from __future__ import annotations

import pytest

from trainer.gate import decide_promotion


def metrics(map50: float, **per_class: float) -> dict:
    return {"map50": map50, "per_class": {name: {"ap50": ap} for name, ap in per_class.items()}}


def decide(mode="gate", champion=None, challenger=None):
    return decide_promotion(
        mode, champion, challenger or metrics(0.5), map50_tolerance=0.02, class_ap_drop=0.15
    )


def test_the_first_version_is_promoted():
    d = decide(champion=None, challenger=metrics(0.01))
    assert d.promote
    assert "first version" in d.reason


def test_skip_never_promotes_even_a_better_model():
    d = decide("skip", champion=metrics(0.1), challenger=metrics(0.9))
    assert not d.promote
    assert "skip" in d.reason


def test_force_promotes_even_a_worse_model():
    d = decide("force", champion=metrics(0.9), challenger=metrics(0.1))
    assert d.promote
    assert "force" in d.reason


def test_a_map50_below_the_tolerance_is_refused_with_both_numbers_in_the_reason():
    d = decide(champion=metrics(0.6), challenger=metrics(0.55))
    assert not d.promote
    assert "0.5500" in d.reason and "0.6000" in d.reason


def test_a_per_class_drop_beyond_the_margin_is_refused_naming_the_class():
    champion = metrics(0.6, Glass=0.7, Metal=0.5)
    challenger = metrics(0.62, Glass=0.5, Metal=0.55)
    d = decide(champion=champion, challenger=challenger)
    assert not d.promote
    assert "Glass" in d.reason
    assert "Metal" not in d.reason


def test_a_class_missing_from_the_challenger_counts_as_a_drop():
    d = decide(champion=metrics(0.6, Paper=0.4), challenger=metrics(0.7))
    assert not d.promote
    assert "Paper" in d.reason


@pytest.mark.parametrize("new", [0.59, 0.6, 0.75])
def test_a_model_within_the_tolerance_is_promoted(new):
    champion = metrics(0.6, Glass=0.7, Carton=0.3)
    challenger = metrics(new, Glass=0.6, Carton=0.31)  # Glass drops 0.10, within 0.15
    d = decide(champion=champion, challenger=challenger)
    assert d.promote, d.reason
    assert "0.6000" in d.reason


def test_a_challenger_with_nan_map50_is_never_promoted():
    import math

    from trainer.gate import decide_promotion

    d = decide_promotion(
        "gate",
        {"map50": 0.3, "per_class": {}},
        {"map50": math.nan, "per_class": {}},
        map50_tolerance=0.02,
        class_ap_drop=0.15,
    )
    assert not d.promote and "not a number" in d.reason
