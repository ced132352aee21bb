import pytest

from compressor.errors import ConfigError, UnknownNameError
from compressor.pruning import make_schedule


def test_one_shot():
    schedule = make_schedule("one-shot", 0.5, start=3)
    assert [schedule(t) for t in range(6)] == [0, 0, 0, 0.5, 0.5, 0.5]
    assert schedule.events() == [3]


def test_linear_reaches_target_exactly_at_end():
    schedule = make_schedule("linear", 0.8, start=2, end=6)
    assert [schedule(t) for t in range(8)] == pytest.approx([0, 0, 0, 0.2, 0.4, 0.6, 0.8, 0.8])
    assert schedule(6) == 0.8


def test_cubic_zhu_gupta():
    schedule = make_schedule("cubic", 0.9, start=0, end=10)
    for t in range(11):
        assert schedule(t) == pytest.approx(0.9 * (1 - (1 - t / 10) ** 3))
    assert schedule(10) == 0.9 and schedule(100) == 0.9


def test_exponential_removes_a_constant_fraction_of_what_remains():
    schedule = make_schedule("exponential", 0.75, start=0, end=2)
    assert [schedule(t) for t in range(3)] == pytest.approx([0.0, 0.5, 0.75])


def test_iterative_equal_increments():
    schedule = make_schedule("iterative", 0.6, start=0, end=30, increments=3)
    assert [schedule(t) for t in (0, 9, 10, 19, 20, 29, 30)] == pytest.approx(
        [0, 0, 0.2, 0.2, 0.4, 0.4, 0.6])
    assert schedule.events() == [0, 10, 20, 30]


def test_frequency_holds_between_events():
    schedule = make_schedule("linear", 1 - 1e-9, start=0, end=10, frequency=4)
    assert schedule.events() == [0, 4, 8, 10]
    assert schedule(5) == schedule(4) < schedule(8) < schedule(10)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"kind": "cubic", "target": 0.5, "start": 5, "end": 2}, ConfigError, "`end` \\(2\\) must not be before"),
    ({"kind": "one-shot", "target": 0.5, "start": 0, "end": 3}, ConfigError, "one-shot"),
    ({"kind": "cubic", "target": 0.5, "start": 2, "end": 2}, ConfigError, "needs `end` > `start`"),
    ({"kind": "cubic", "target": 1.0, "start": 0, "end": 2}, ConfigError, "`sparsity` must be in \\[0, 1\\)"),
    ({"kind": "cubic", "target": -0.1, "start": 0, "end": 2}, ConfigError, "sparsity"),
    ({"kind": "quadratic", "target": 0.5, "start": 0, "end": 2}, UnknownNameError, "cubic, exponential, iterative, linear, one-shot"),
    ({"kind": "linear", "target": 0.5, "start": 0, "end": 4, "frequency": 0}, ConfigError, "frequency"),
])
def test_bad_schedules(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_schedule(**kwargs)
