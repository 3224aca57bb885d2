"""scripts/gpu_check.py (`make gpu-check`) in its quick CPU mode, so the script works when a GPU is lent.

The quick mode runs every step at the smallest sizes, leaving out pytest, refdraw, compiling and torchrun
(recorded as skipped); `make gpu-check DEVICE=cpu` runs them all at tiny sizes.
"""
import json
import runpy
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
STATUSES = {"ok", "failed", "timeout", "skipped", "not supported"}
STEPS = ["environment", "nvidia-smi", "install: drawkit version", "install: drawkit plugins", "pytest on the device",
         "bench eager", "bench compiled", "bench compiled bf16", "bench reduce-overhead", "train paper-mnist", "evaluate (test bound)",
         "resume for", "sample --device cpu", "reconstruct --device cpu", "visualize-attention --device cpu",
         "torchrun, 1 process", "torchrun, 2 process", "classifier train", "classifier evaluate"]


def test_quick_cpu_run_reports_every_step(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["device"] == "cpu" and report["torch"]
    names = [step["step"] for step in report["steps"]]
    for expected in STEPS:
        assert any(name.startswith(expected) for name in names), (expected, names)
    for step in report["steps"]:
        assert step["status"] in STATUSES, step
        assert step["status"] in ("ok", "skipped"), json.dumps(step, indent=1)
    by_name = {step["step"]: step for step in report["steps"]}
    assert by_name["evaluate (test bound)"]["bound"] > 0
    timed = next(s for s in report["steps"] if s["step"].startswith("train paper-mnist"))
    resumed = next(s for s in report["steps"] if s["step"].startswith("resume for"))
    resume_steps = runpy.run_path(str(SCRIPT))["PROFILES"]["quick"]["resume_steps"]
    assert resumed["last_step"] == timed["last_step"] + resume_steps  # all of them, not cut short
    assert next(s for s in report["steps"] if s["step"].startswith("bench eager"))["images_per_s"] > 0
    assert by_name["classifier evaluate"]["n_images"] > 0
    markdown = (tmp_path / "report.md").read_text()
    assert "| measurement | images/s |" in markdown and "classifier evaluate" in markdown
