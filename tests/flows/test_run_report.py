"""Each pipeline run publishes a Prefect artifact: metrics, the checkpoints it evaluated, verdicts against the best."""

import pytest

from core.tables import Workdir
from flows.labels import labels_flow
from flows.pipeline import pipeline_flow
from flows.runtime import run_flow

pytestmark = pytest.mark.integration


def test_each_pipeline_run_publishes_its_report(sample_root, tmp_path, orchestration_ready, run_reports):
    workdir = str(tmp_path / "work")
    run_flow(labels_flow, data_root=str(sample_root), split="val", workdir_url=workdir, dataset="sample", progress=False)
    run_flow(pipeline_flow, workdir_url=workdir, stages=["generate", "evaluate"], checkpoints=["static"], overrides=["evaluate.bootstrap=100"])
    wd = Workdir(workdir)
    # A trained checkpoint that halves static's errors: the best the next run is compared with.
    objmc = wd.read("objmc")
    best = "run-fake-s000100"
    wd.append("checkpoints", [dict(checkpoint_id=best, kind="trained", parent=None, config="{}", config_hash="h", step=100,
                                   path=f"checkpoints/{best}", created_at=wd.read("checkpoints")["created_at"].max())])
    wd.append("objmc", objmc.assign(checkpoint_id=best, error_px=objmc["error_px"] / 2,
                                    per_frame=[[x / 2 for x in f] for f in objmc["per_frame"]]))
    static = wd.read("metrics").query("checkpoint_id == 'static' and metric == 'objmc'")
    wd.append("metrics", static.assign(checkpoint_id=best, value=static["value"] / 2))

    report = run_flow(pipeline_flow, workdir_url=workdir, stages=["generate", "evaluate"], checkpoints=["warp"], overrides=["evaluate.bootstrap=100"])
    assert [v["checkpoint"] for v in report["verdicts"]] == ["warp"] and report["verdicts"][0]["best"] == best
    published = run_reports(workdir)
    assert len(published) == 2, "one artifact per pipeline run"
    artifact, flow_run = published[0]
    assert artifact.type == "markdown" and flow_run is not None and flow_run.name and artifact.flow_run_id == flow_run.id
    text = artifact.data
    assert "Evaluated in this run: `warp`" in text
    verdict = report["verdicts"][0]["verdict"]
    assert f"`warp` is **{verdict}** {'from' if verdict == 'indistinguishable' else 'than'} the best, `{best}`" in text
    # the metrics table names rows as eval.display does, the ids in its legend
    assert "| ref: static |" in text and "| ref: warp |" in text and f"| {best} |" in text
