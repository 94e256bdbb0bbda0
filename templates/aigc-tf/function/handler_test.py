"""The sample handler's test, run at image build (TEST_ENABLED=true): the handler imports, reports its state, refuses bad input.
A function made from this template should replace this file with tests of its own
handler (as functions/* in the project do); until then it skips itself.
"""

import pytest

from aigc.runtime import Event, errors
from function import handler

pytestmark = pytest.mark.skipif(getattr(handler, "SAMPLE", None) != "aigc-tf",
                                reason="the template's sample test; this function has no handler_test.py")


def test_describes_model_before_loading():
    out = handler.handle(None, None)
    assert out == {"model": handler.model.name, "ready": False, "platform": "tensorflow_keras"}


@pytest.mark.parametrize("body, fragment", [(b'{"instances": "x"}', "JSON object"),
                                            (b'{"instances": []}', "1 to 64"),
                                            (b'{"instances": [[1, 2], [3]]}', "same shape"),
                                            (b'{"instances": [["a"]]}', "numbers"),
                                            (b'not json', "malformed JSON")])
def test_bad_requests_are_refused_before_the_model_is_needed(body, fragment):
    event = Event(body=body, headers={}, method="POST", query={}, path="/")
    with pytest.raises(errors.InvalidInput, match=fragment):
        handler.handle(event, None)


def test_tensorflow_is_not_imported_with_the_handler():
    import sys

    assert "tensorflow" not in sys.modules, "import engines inside Model.load(), not at module level"
