"""A suite with no items is an error that says why, not a generate stage that silently makes 0 videos."""

import pytest

from flows.generate import generate_flow
from flows.labels import labels_flow
from flows.runtime import run_flow

pytestmark = pytest.mark.integration


def test_generate_on_a_suite_whose_dataset_has_no_labels_names_the_dataset_it_reads(sample_root, tmp_path, orchestration_ready):
    workdir = str(tmp_path / "work")
    run_flow(labels_flow, data_root=str(sample_root), split="val", workdir_url=workdir, dataset="mine", progress=False)
    with pytest.raises(ValueError, match=r"suite 'sample' reads the labels of dataset 'sample', split 'val', and .* has none "
                                         r"\(labels there: mine/val\); run `draganything labels --dataset sample --split val`"):
        run_flow(generate_flow, checkpoint="warp", suite="sample", workdir_url=workdir, progress=False)
