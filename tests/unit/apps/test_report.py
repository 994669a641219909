"""`rewardflow report`: a run directory built here (metrics.jsonl, summary.json, samples.jsonl as
cluster/metrics.py and cluster/launch.py write them) becomes one self-contained HTML page."""
import base64
import json
import re
import subprocess
import sys

import pytest

from apps.cli import main
from apps.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECTIONS = ("reward", "accuracy", "phases", "staleness", "weight-sync", "busy", "resources", "samples")
EVIL = "<script>alert(1)</script>"


def _step(step: int) -> dict:
    return {"step": step, "time": 1000.0 + 10 * step, "reward/total": 0.1 * step, "reward/math_correct": 0.05 * step,
            "reward/errors": 0.0, "timing/generate": 2.0, "timing/score": 0.5, "timing/judge": 0.0,
            "timing/update": 3.0, "timing/weight_sync": 0.4, "timing/reload": 0.3, "timing/other": 0.1,
            "timing/step": 6.0, "async/staleness": 1.0, "async/token_staleness": 0.5,
            "resources/rollout_cpu_percent": 150.0, "resources/rollout_rss_gib": 1.5,
            "resources/learner_cpu_percent": 90.0, "resources/learner_rss_gib": 2.0}


def _run_dir(tmp_path, records, summary=True, samples=True):
    run = tmp_path / "run"
    run.mkdir()
    lines = [json.dumps(r) for r in records]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if summary:
        (run / "summary.json").write_text(json.dumps({
            "steps": 3, "start_step": 0, "wall_s": 40.0, "total_wall_s": 50.0, "eval_accuracy_before": 0.25,
            "eval_accuracy_after": 0.5, "weight_sync": "shared_memory", "wandb_run_id": "abc123",
            "accuracy_curve": [{"step": 0, "wall_s": 0.0, "eval_accuracy": 0.25},
                               {"step": 3, "wall_s": 40.0, "eval_accuracy": 0.5}],
            "busy_s": {"rollout": [20.0, 30.0], "learner": [10.0], EVIL: [5.0]},
            "placement": {"rollout": ["n" * 56, "m" * 56], "learner": ["n" * 56]},
            "recipe": {"algo": {"name": "grpo"}}}))
    if samples:
        rows = [{"step": 0, "prompt": f"What is 2+2? {EVIL}", "response": "4 & <b>bold</b>", "answer": "4",
                 "reward": 1.0, "error": ""},
                {"step": 2, "prompt": "What is 1+1?", "response": "3", "answer": "2", "reward": 0.0,
                 "error": "ValueError: \"bad\""}]
        (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def _images(page: str) -> list[bytes]:
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return [base64.b64decode(u, validate=True) for u in uris]


def test_the_page_has_every_section_with_valid_png_data_uris(tmp_path):
    records = [{"step": 0, "time": 1000.0, "eval/accuracy": 0.25}] + [_step(s) for s in (1, 2, 3)]
    run = _run_dir(tmp_path, records + [{"step": 3, "time": 1035.0, "eval/accuracy": 0.5}])
    page_path = write_report(str(run))
    page = page_path.read_text()

    assert page_path == run / "report" / "report.html"
    for key in SECTIONS:
        assert f'<section id="{key}">' in page, key
    images = _images(page)
    assert len(images) == 8  # reward, accuracy, phases, staleness, weight sync, busy, cpu, rss
    assert all(png.startswith(PNG_MAGIC) for png in images)
    # the same figures lie beside the page
    assert sorted(p.name for p in page_path.parent.glob("*.png")) == sorted(
        f"{stem}.png" for stem in ("reward", "accuracy", "phases", "staleness", "weight_sync", "busy",
                                   "resources_cpu_percent", "resources_rss_gib"))
    # self-contained: nothing fetched, nothing run
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "Not in this run" not in page
    assert "abc123" in page and "grpo" in page


def test_every_string_from_the_run_is_escaped(tmp_path):
    # a metric name that would be broken TeX in matplotlib's math mode is drawn as text
    run = _run_dir(tmp_path, [{**_step(1), "reward/$\\frac{$": 0.5}])
    page = write_report(str(run), str(tmp_path / "out")).read_text()

    assert EVIL not in page and "<b>bold</b>" not in page
    assert "What is 2+2? &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "4 &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "ValueError: &quot;bad&quot;" in page
    assert (tmp_path / "out" / "report.html").is_file()


def test_missing_metrics_and_files_leave_their_sections_out(tmp_path):
    # a synchronous run without resource metrics, killed before summary.json, a half-written last line
    records = [{"step": 1, "time": 1.0, "reward/total": 0.5, "timing/generate": 1.0, "timing/step": 1.5,
                "eval/accuracy": 0.3}, {"step": 2, "time": 5.0, "eval/accuracy": 0.4}]
    run = _run_dir(tmp_path, records, summary=False, samples=False)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "reward/to')
    page = write_report(str(run)).read_text()

    for key in ("reward", "accuracy", "phases"):
        assert f'<section id="{key}">' in page, key
    for key in ("staleness", "weight-sync", "busy", "resources", "samples"):
        assert f'<section id="{key}">' not in page, key
    assert "Not in this run: staleness, weight-sync, busy, resources, samples." in page
    assert "1 unreadable line(s) or file(s) skipped" in page
    assert "the run did not finish" in page
    assert len(_images(page)) == 3
    # without summary.json the accuracy comes from the log, against its timestamps
    assert "eval/accuracy in metrics.jsonl" in page


def test_an_empty_log_still_gives_a_page(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    page = write_report(str(run)).read_text()
    assert _images(page) == [] and "Not in this run: reward, accuracy" in page


def test_a_directory_without_metrics_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        (f"rewardflow: error: report: {tmp_path} has no metrics.jsonl (not the output directory of a rewardflow "
         "train run)")]
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("out", [None, "elsewhere"])
def test_the_command_prints_where_the_page_is(tmp_path, out):
    run = _run_dir(tmp_path, [_step(1)])
    args = ["report", str(run)] + (["--out", str(tmp_path / out)] if out else [])
    proc = subprocess.run([sys.executable, "-m", "apps.cli", *args], capture_output=True, text=True, timeout=120)
    expected = (tmp_path / out if out else run / "report") / "report.html"
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"rewardflow report: {expected}"
    assert expected.is_file()
