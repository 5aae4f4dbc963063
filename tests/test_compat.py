"""Ray compatibility details: errors, argument checks, options, actor classes."""

import sys

import pytest

import zray
from zray import exceptions as zerr
from tests import tasks as t

pytestmark = pytest.mark.timeout(60)


# --- task errors that cannot become RayTaskError(cause) ------------------------------

def test_memory_error_arrives_as_plain_ray_task_error(cluster):
    with pytest.raises(zerr.RayTaskError) as info:
        zray.get(t.raise_memory_error.remote())
    assert isinstance(info.value.cause, MemoryError)
    text = str(info.value)
    assert "raise_memory_error" in text and "pretend the heap ran out" in text
    assert "Traceback" in text and "MemoryError" in text


def test_exception_whose_init_takes_other_arguments(cluster):
    with pytest.raises(zerr.RayTaskError) as info:
        zray.get(t.raise_two_arg_error.remote())
    text = str(info.value)
    assert "TwoArgError" in text and "needs two arguments" in text
    assert "raise_two_arg_error" in text and "Traceback" in text
    assert "TwoArgError" in str(info.value.cause)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup is Python 3.11+")
def test_exception_group_is_also_an_exception_group(cluster):
    with pytest.raises(zerr.RayTaskError) as info:
        zray.get(t.raise_exception_group.remote())
    assert isinstance(info.value, ExceptionGroup)
    assert [type(e) for e in info.value.exceptions] == [ValueError, KeyError]
    assert "raise_exception_group" in str(info.value)
