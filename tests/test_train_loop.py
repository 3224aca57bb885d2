"""The pieces of the training loop that need no model: counting non-finite steps."""
from pathlib import Path

import pytest

from drawkit.errors import DrawkitError
from drawkit.training import NonFiniteSteps

LAST_GOOD = Path("run") / "checkpoint.pt"


def flags(*finite: bool, first_step: int = 1) -> list[tuple[int, bool]]:
    return [(first_step + i, f) for i, f in enumerate(finite)]


def test_counts_the_non_finite_steps():
    counter = NonFiniteSteps(limit=10, last_good=LAST_GOOD)
    assert counter.count(flags(True, False, True, False, False)) == 3
    assert counter.count(flags(True, True)) == 0
    assert counter.count([]) == 0


def test_limit_in_a_row_stops_with_the_step_and_the_last_good_checkpoint():
    counter = NonFiniteSteps(limit=3, last_good=LAST_GOOD)
    with pytest.raises(DrawkitError, match="training diverged: 3 non-finite losses in a row at step 7") as exc:
        counter.count(flags(True, True, True, True, False, False, False, False))
    assert str(LAST_GOOD) in str(exc.value)


def test_one_fewer_than_the_limit_goes_on():
    counter = NonFiniteSteps(limit=3, last_good=LAST_GOOD)
    assert counter.count(flags(False, False)) == 2


def test_a_finite_step_starts_the_count_again():
    counter = NonFiniteSteps(limit=3, last_good=LAST_GOOD)
    assert counter.count(flags(False, False, True, False, False, True, False, False)) == 6


def test_the_count_in_a_row_carries_over_between_reads():
    """Flags arrive a few at a time (one step late on a GPU); a run of bad steps spans the reads."""
    counter = NonFiniteSteps(limit=3, last_good=LAST_GOOD)
    assert counter.count(flags(True, False, first_step=1)) == 1
    assert counter.count(flags(False, first_step=3)) == 1
    with pytest.raises(DrawkitError, match="at step 4"):
        counter.count(flags(False, True, first_step=4))


def test_a_limit_of_one_stops_at_the_first_bad_step():
    counter = NonFiniteSteps(limit=1, last_good=LAST_GOOD)
    assert counter.count(flags(True, True)) == 0
    with pytest.raises(DrawkitError, match="1 non-finite losses in a row at step 3"):
        counter.count(flags(False, first_step=3))
