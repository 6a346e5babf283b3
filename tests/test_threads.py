"""The served model's TensorFlow thread pools: the rule, and the setting's one-line errors.

That the pools reach TensorFlow is tested on a real server (tests/test_service.py reads them
back from `/metadata`); the speed they buy is measured by `make bench-serving`.
"""

from __future__ import annotations

import pytest

from serving.threads import ThreadPools, choose, parse


@pytest.mark.parametrize(
    ("cpus", "expected"), [(2, ThreadPools(1, 2)), (16, ThreadPools(8, 16)), (3, ThreadPools(1, 3))]
)
def test_a_flip_averaged_model_on_a_cpu_runs_its_two_passes_at_once(cpus, expected):
    assert choose("auto", multi_view=True, gpu=False, cpus=cpus) == expected


@pytest.mark.parametrize(
    ("multi_view", "gpu", "cpus"),
    [(False, False, 2), (True, True, 2), (True, False, 1)],
    ids=["one view", "gpu", "one core"],
)
def test_otherwise_tensorflow_keeps_its_defaults(multi_view, gpu, cpus):
    assert choose("auto", multi_view=multi_view, gpu=gpu, cpus=cpus) == ThreadPools(0, 0)


def test_a_fixed_setting_wins_over_the_rule():
    for multi_view in (True, False):
        pools = choose(parse("3,1"), multi_view=multi_view, gpu=False, cpus=2)
        assert pools == ThreadPools(3, 1)
    assert choose(parse("default"), multi_view=True, gpu=False, cpus=2) == ThreadPools()
    assert parse("") == parse(" auto ") == "auto"


@pytest.mark.parametrize("raw", ["1", "1,2,3", "two,2", "0,2", "1,-1", "fast", "1,5000"])
def test_a_bad_setting_stops_with_one_line_that_says_what_to_write(raw):
    with pytest.raises(SystemExit) as stop:
        parse(raw)
    message = str(stop.value)
    assert "\n" not in message and "SERVING_TF_THREADS" in message and repr(raw) in message
