"""Every deployed flow has one file and immutable defaults (a list default is shared by every run)."""

import importlib
import inspect

import pytest
from prefect import Flow

FLOWS = {"labels": "labels_flow", "train": "train_flow", "generate": "generate_flow", "evaluate": "evaluate_flow", "pipeline": "pipeline_flow"}


@pytest.mark.parametrize("stage", sorted(FLOWS))
def test_one_file_per_stage_and_no_mutable_defaults(stage):
    flow = getattr(importlib.import_module(f"flows.{stage}"), FLOWS[stage])
    assert isinstance(flow, Flow) and flow.name == stage
    for name, p in inspect.signature(flow.fn).parameters.items():
        assert not isinstance(p.default, (list, dict, set)), f"flows/{stage}.py: parameter {name} has a mutable default {p.default!r}"


def test_pipeline_defaults_are_filled_inside():
    from flows.pipeline import STAGES, pipeline_flow

    params = inspect.signature(pipeline_flow.fn).parameters
    assert params["stages"].default is None and params["suites"].default is None
    assert STAGES == ("labels", "train", "generate", "evaluate")
