from __future__ import annotations

import pytest
from calc import average, median


def test_average():
    assert average([1, 2, 3, 4]) == 2.5
    assert average([]) == 0.0


def test_median_of_an_odd_count_is_the_middle_value():
    assert median([3, 1, 2]) == 2


def test_median_of_an_even_count_is_the_mean_of_the_two_middle_values():
    assert median([4, 1, 3, 2]) == 2.5
    assert median([1, 2]) == 1.5


def test_median_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        median([])
