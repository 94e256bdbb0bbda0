"""Property-based fuzzing of every parser that reads outside input (hypothesis).

Whatever comes in, each parser either accepts it or raises its own documented
error (the one the caller turns into a 4xx naming the problem) — never
anything else, which would be a 500. CI runs a fixed-seed slice;
AIGC_FUZZ_EXAMPLES=10000 runs the long one.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from aigc import stack
from aigc.gateway import cron, deploy, secrets
from aigc.runtime import errors, images, oip, openai
from aigc.runtime.model import TensorSpec
from finetune.config import ConfigError, RunConfig

EXAMPLES = int(os.environ.get("AIGC_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
OK_ERRORS = (errors.InvalidInput, errors.ModelNotFound, errors.PayloadTooLarge)

scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=20)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) |
                           st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=25)
DATATYPES = ["BOOL", "UINT8", "INT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES", "BF16", "x"]
tensors = st.fixed_dictionaries({
    "name": st.sampled_from(["image", "input", "text", "x", ""]) | st.integers(),
    "shape": st.lists(st.integers(-2, 4), max_size=5) | json_values,
    "datatype": st.sampled_from(DATATYPES) | json_values,
    "data": st.lists(scalars | st.lists(scalars, max_size=3), max_size=30) | json_values,
}, optional={"parameters": json_values})
infer_bodies = st.fixed_dictionaries({"inputs": st.lists(tensors, max_size=3) | json_values},
                                     optional={"outputs": json_values, "parameters": json_values, "id": json_values})
SPECS = (TensorSpec("image", "UINT8", (-1, -1, -1, 3), optional=True), TensorSpec("input", "FP32", (-1, 3, -1, -1),
                                                                                    optional=True),
         TensorSpec("text", "BYTES", (-1,), optional=True))


@FUZZ
@given(body=infer_bodies | json_values)
def test_oip_decode_accepts_or_says_what_is_wrong(body):
    try:
        decoded, _ = oip.decode_inputs(body, SPECS)
    except OK_ERRORS:
        return
    for array in decoded.values():
        assert isinstance(array, np.ndarray) and all(d >= 1 for d in array.shape)


binary_tensors = st.fixed_dictionaries({
    "name": st.sampled_from(["image", "input", "text"]),
    "shape": st.lists(st.integers(1, 4), min_size=1, max_size=4) | st.just([10**12, 10**12]),
    "datatype": st.sampled_from(DATATYPES),
    "parameters": st.fixed_dictionaries({"binary_data_size": st.integers(-2, 80) | json_values}),
}, optional={"data": json_values})


@FUZZ
@given(tensors=st.lists(binary_tensors, min_size=1, max_size=3), tail=st.binary(max_size=120))
def test_oip_binary_decode_accepts_or_says_what_is_wrong(tensors, tail):
    try:
        decoded, _ = oip.decode_inputs({"inputs": tensors}, SPECS, tail)
    except OK_ERRORS:
        return
    assert sum(a.nbytes for a in decoded.values() if a.dtype != object) <= len(tail)


def _image(fmt: str, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format=fmt)
    return buf.getvalue()


SAMPLES = [_image("PNG", (17, 9)), _image("JPEG", (32, 24))]


@FUZZ
@given(sample=st.sampled_from(SAMPLES), cut=st.integers(0, 400), flips=st.lists(st.tuples(st.integers(0, 10**6),
                                                                                           st.integers(1, 255)),
                                                                                 max_size=6),
       noise=st.binary(max_size=64))
def test_image_decode_of_damaged_files_is_an_array_or_a_400(sample, cut, flips, noise):
    data = bytearray(sample[:max(0, len(sample) - cut)] + noise)
    for position, mask in flips:
        if data:
            data[position % len(data)] ^= mask
    try:
        array = images.decode(bytes(data), min_side=8)
    except errors.InvalidInput:
        return
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3


@FUZZ
@given(body=json_values)
def test_openai_bodies_parse_or_name_the_field(body):
    for parse in (lambda b: openai.parse_embeddings(b, ["m"]), lambda b: openai.parse_completions(b, ["m"], 64),
                  lambda b: openai.parse_chat(b, ["m"], 64)):
        try:
            parse(body)
        except OK_ERRORS:
            pass


@FUZZ
@given(raw=st.dictionaries(st.sampled_from(["run_id", "method", "base", "adapter", "corpus", "steps", "batch_size",
                                            "seq_len", "learning_rate", "lora_r", "target_modules", "extra",
                                            "threads", "unknown"]), json_values, max_size=8) | json_values)
def test_run_configs_parse_or_raise_a_config_error(raw):
    try:
        RunConfig.from_dict(raw)
    except ConfigError:
        pass


@FUZZ
@given(body=st.fixed_dictionaries({"service": st.text(max_size=70) | json_values,
                                   "image": st.just("localhost/x:1") | json_values},
                                  optional={k: json_values for k in ("labels", "annotations", "envVars", "secrets",
                                                                     "limits", "requests", "envProcess",
                                                                     "readOnlyRootFilesystem", "namespace")})
       | json_values)
def test_deploy_bodies_become_a_deployment_or_a_400(body, tmp_path_factory):
    st_ = stack.Stack(tmp_path_factory.getbasetemp() / "stack.yml", "", {})
    try:
        deploy.from_request(body, st_, runs_images=True)
    except deploy.DeployError:
        pass


@FUZZ
@given(body=json_values)
def test_secret_bodies_parse_or_say_what_is_wrong(body):
    try:
        secrets.parse(body)
    except secrets.SecretError as exc:
        assert 400 <= exc.status < 500


@FUZZ
@given(text=st.text(alphabet="0123456789*/,-@ abcdefghijklmnopqrstuvwxyzJFMASOND?", max_size=40))
def test_cron_schedules_parse_or_say_what_is_wrong(text):
    try:
        schedule = cron.Schedule.parse(text)
    except cron.ScheduleError:
        return
    from datetime import datetime, timezone

    now = datetime(2026, 11, 29, tzinfo=timezone.utc)
    assert schedule.next_after(now) > now


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("stacks")


@FUZZ
@given(doc=st.fixed_dictionaries({"provider": st.just({"name": "openfaas"}) | json_values,
                                  "functions": st.dictionaries(st.text(max_size=12), json_values, max_size=3)
                                  | json_values}, optional={"configuration": json_values, "version": json_values})
       | json_values)
def test_stack_files_load_or_raise_a_value_error(doc, stack_dir):
    path = stack_dir / "stack.yml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    try:
        stack.load(path)
    except ValueError:
        pass
