#!/usr/bin/env python3
"""`make gpu-check`: every check a GPU loan needs, in one run, into gpu-check/report.md and report.json.

    python scripts/gpu_check.py --device cuda            # about 8 minutes on one GPU (the paper's sizes)
    python scripts/gpu_check.py --device cpu             # the same steps at tiny sizes, a few minutes
    python scripts/gpu_check.py --device cpu --quick     # tiny sizes, no pytest, no refdraw (tests/test_gpu_check.py)

Each step is a subprocess with its own timeout (and its whole process group ended when it runs
over); a failure is recorded (exit code, last lines of output) and the next step runs. The whole
run keeps to --budget seconds: a step that no longer fits is recorded as skipped. MNIST is read
from $DRAWKIT_DATA or ../shared/data when either holds MNIST/raw; otherwise a generated stand-in
(tests/generated_mnist.py) is written under the output folder. Needs nothing but the repository.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "bench" / "refdraw.py"
SHARED_DATA = ROOT.parent / "shared" / "data"
TAIL_LINES = 15
#: the test files whose tensors and models may follow $DRAWKIT_TEST_DEVICE (tests/conftest.py's test_device);
#: those that use the fixture run in the pytest step
DEVICE_TESTS = ["tests/test_model.py", "tests/test_filterbank.py", "tests/test_speed_paths.py",
                "tests/test_classifier.py", "tests/test_losses.py", "tests/test_likelihoods.py"]


def device_tests() -> list:
    return [name for name in DEVICE_TESTS if (ROOT / name).is_file() and "test_device" in (ROOT / name).read_text()]

#: sizes per mode. gpu: the paper's model; cpu: the same steps, tiny; quick: tinier, no compile.
PROFILES = {
    "gpu": {"model": [], "tiny": ["--glimpses", "8", "--hidden", "64", "--z-dim", "16"], "bench_model": [],
            "bench_batch": 100, "big_batches": [1000, 4000], "bench_steps": 10, "bench_warmup": 3, "rounds": 1,
            "train_batch": [], "train_seconds": 75, "log_every": 50, "val_images": 1000, "eval_images": None, "resume_steps": 10,
            "tiny_batch": 64, "tiny_steps": 20, "pictures": 8, "compile": True, "train_compile": True, "big_timeout": 90,
            "budget": 470},
    "cpu": {"model": ["--glimpses", "4", "--hidden", "32", "--z-dim", "8"],
            "tiny": ["--glimpses", "3", "--hidden", "16", "--z-dim", "4"],
            "bench_model": ["--glimpses", "4", "--hidden", "32"],
            "bench_batch": 16, "big_batches": [64], "bench_steps": 3, "bench_warmup": 2, "rounds": 1,
            "train_batch": ["--batch-size", "16"], "train_seconds": 20, "log_every": 5, "val_images": 200, "eval_images": 200,
            "resume_steps": 5, "tiny_batch": 16, "tiny_steps": 5, "pictures": 4, "compile": True,
            "train_compile": False, "big_timeout": 150, "budget": 660},
    "quick": {"model": ["--glimpses", "2", "--hidden", "8", "--z-dim", "2", "--dataset", "mnist"],
              "tiny": ["--glimpses", "2", "--hidden", "8", "--z-dim", "2"],
              "bench_model": ["--glimpses", "2", "--hidden", "8"],
              "bench_batch": 4, "big_batches": [8], "bench_steps": 1, "bench_warmup": 0, "rounds": 1,
              "train_batch": ["--batch-size", "8"], "train_seconds": 10, "log_every": 1, "val_images": 16, "eval_images": 16,
              "resume_steps": 2, "tiny_batch": 8, "tiny_steps": 2, "pictures": 2, "compile": False,
              "train_compile": False, "big_timeout": 60, "budget": 300},
}


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join((text or "").rstrip().splitlines()[-lines:])


class Check:
    """Runs the steps, keeps their records and the time budget, and writes the reports."""

    def __init__(self, args, profile: dict):
        self.args, self.p = args, profile
        self.out = Path(args.out).resolve()
        self.deadline = time.monotonic() + (args.budget or profile["budget"])
        self.steps: list[dict] = []
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.python = sys.executable

    # ---- running -------------------------------------------------------------------------------
    def run(self, name: str, command: list, timeout: float, env: dict = None, skip: str = None,
            parse=None) -> dict:
        """One step: the command in its own process group, ended (group and all) after ``timeout`` s."""
        record = {"step": name, "command": " ".join(str(c) for c in command)}
        left = self.deadline - time.monotonic()
        if skip:
            record.update(status="skipped", reason=skip)
        elif left < 5:
            record.update(status="skipped", reason=f"time budget spent ({self.args.budget or self.p['budget']} s)")
        else:
            limit = min(timeout, left)
            started = time.monotonic()
            proc = subprocess.Popen([str(c) for c in command], cwd=ROOT, env=env or self.env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                output, _ = proc.communicate(timeout=limit)
                timed_out = False
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                output, _ = proc.communicate()
                timed_out = True
            record.update(seconds=round(time.monotonic() - started, 1), exit_code=proc.returncode,
                          output_tail=tail(output))
            if timed_out:
                record.update(status="timeout", reason=f"ran past {limit:.0f} s")
            elif proc.returncode == 0:
                record["status"] = "ok"
                if parse:
                    try:
                        record.update(parse(output) or {})
                    except Exception as exc:  # a figure missing is recorded, not fatal
                        record.update(status="failed", reason=f"could not read the output: {exc!r}")
            else:
                record["status"] = "failed"
        self.steps.append(record)
        shown = record.get("reason") or f"{record.get('seconds', 0)} s"
        print(f"[gpu-check] {name}: {record['status']} ({shown})", flush=True)
        return record

    def drawkit(self, *args) -> list:
        return [self.python, "-m", "drawkit", *args]

    # ---- the steps -----------------------------------------------------------------------------
    def environment(self) -> None:
        code = ("import json, torch; c = torch.cuda.is_available(); print(json.dumps({'torch': torch.__version__, "
                "'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version() if c else None, "
                "'cuda_available': c, 'gpus': [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())], "
                "'threads': torch.get_num_threads()}))")
        record = self.run("environment", [self.python, "-c", code], 120, parse=last_json)
        record.update(python=platform.python_version(), machine=platform.platform(), cpus=os.cpu_count())
        smi = shutil.which("nvidia-smi")
        if smi:
            self.run("nvidia-smi", [smi, "--query-gpu=name,driver_version,memory.total,utilization.gpu",
                                    "--format=csv,noheader"], 30, parse=lambda out: {"gpu": out.strip()})
            try:
                self.steps[-1]["output_tail"] = tail(subprocess.run([smi], capture_output=True, text=True,
                                                                    timeout=30).stdout, 40)
            except subprocess.TimeoutExpired:
                pass
        else:
            self.run("nvidia-smi", [], 0, skip="nvidia-smi is not on PATH")

    def install(self) -> None:
        self.run("install: drawkit version", self.drawkit("version"), 60,
                 parse=lambda out: {"version": out.strip().splitlines()[-1]})
        self.run("install: drawkit plugins", self.drawkit("plugins"), 60)

    def tests(self) -> None:
        env = dict(self.env, DRAWKIT_TEST_DEVICE=self.args.device)
        self.run("pytest on the device", [self.python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                          *device_tests()], 90, env=env,
                 skip="--quick" if self.args.quick else None,
                 parse=lambda out: {"summary": out.strip().splitlines()[-1]})

    def benches(self) -> None:
        p, device = self.p, self.args.device
        reference = [] if self.args.quick or not REFERENCE.is_file() else ["--reference", str(REFERENCE)]
        common = ["bench", "--json", "--device", device, "--steps", p["bench_steps"], "--warmup", p["bench_warmup"],
                  *p["bench_model"]]
        compiled = [] if p["compile"] else ["--no-compile"]
        why_eager = None if p["compile"] else "--quick compiles nothing"
        self.run("bench eager, batch %d" % p["bench_batch"],
                 self.drawkit(*common, "--no-compile", "--batch-size", p["bench_batch"], "--rounds", p["rounds"],
                              *reference), 90, parse=bench_figures)
        self.run("bench compiled, batch %d" % p["bench_batch"],
                 self.drawkit(*common, "--batch-size", p["bench_batch"], "--rounds", p["rounds"], *reference),
                 120, parse=bench_figures, skip=why_eager)
        self.run("bench compiled bf16, batch %d" % p["bench_batch"],
                 self.drawkit(*common, *compiled, "--precision", "bf16", "--batch-size", p["bench_batch"],
                              "--rounds", p["rounds"], *reference), 120, parse=bench_figures)
        self.run("bench reduce-overhead, batch %d" % p["bench_batch"],
                 self.drawkit(*common, "--compile-mode", "reduce-overhead", "--batch-size", p["bench_batch"],
                              "--rounds", p["rounds"], *reference), 120, parse=bench_figures, skip=why_eager)
        for batch in p["big_batches"]:
            self.run(f"bench compiled, batch {batch}", self.drawkit(*common, *compiled, "--batch-size", batch),
                     p["big_timeout"], parse=bench_figures,
                     skip="--quick: one bench is enough" if self.args.quick else None)

    def training(self) -> None:
        p, device = self.p, self.args.device
        run = self.out / "paper"
        shutil.rmtree(run, ignore_errors=True)
        # shortened when the budget is running out, so that the stop and the save still fit in it
        seconds = int(min(p["train_seconds"], self.deadline - time.monotonic() - 45))
        short = None if seconds >= min(10, p["train_seconds"]) else "time budget spent"
        seconds = max(seconds, 1)
        # on a CPU, compiling takes longer than the timed run itself: the compiled path is timed by the bench
        # steps there
        compiled = ["--compile"] if p["train_compile"] else []
        # --time-limit, not a signal at a fixed time: it stops after a finished step, so a slow start (a loaded
        # machine, a long compile) still leaves a checkpoint for the steps that follow
        command = self.drawkit("train", "--preset", "paper-mnist", *compiled, *p["model"], *p["train_batch"],
                               "--device", device, "--out", run, "--val-images", p["val_images"],
                               "--log-every", p["log_every"], "--epochs", 1000, "--time-limit", f"{seconds}s",
                               "--no-progress")
        batch = int(p["train_batch"][1]) if p["train_batch"] else 100  # paper-mnist's batch
        record = self.run(f"train paper-mnist{' --compile' if compiled else ''}, {seconds} s", command, seconds + 90,
                          skip=short,
                          parse=lambda out: {**train_figures(run), "batch_size": batch})
        record["run"] = str(run)
        saved = (run / "checkpoint.pt").is_file()
        no_run = None if saved else "the timed training left no checkpoint"
        eval_images = [] if p["eval_images"] is None else ["--max-images", p["eval_images"]]
        self.run("evaluate (test bound)", self.drawkit("evaluate", "--checkpoint", run, "--split", "test", "--json",
                                                       "--batch-size", 500, "--device", device, "--no-progress",
                                                       *eval_images),
                 90, skip=no_run, parse=lambda out: {"bound": last_json(out).get("nll_bound"),
                                                     "n_images": last_json(out).get("n_images")})
        step = train_figures(run).get("last_step", 0) if saved else 0
        self.run(f"resume for {p['resume_steps']} steps",
                 self.drawkit("train", "--resume", run, "--max-steps", step + p["resume_steps"], "--time-limit", "none",
                              "--no-progress"),  # not the timed run's limit again
                 90, skip=no_run, parse=lambda out: {"last_step": train_figures(run).get("last_step")})
        pictures = self.out / "pictures"
        pictures.mkdir(parents=True, exist_ok=True)
        devices = ["cpu"] + ([device] if device != "cpu" else [])
        n = str(p["pictures"])
        for where in devices:
            self.run(f"sample --device {where}", self.drawkit("sample", "--checkpoint", run, "--n", n, "--device", where,
                                                              "--out", pictures / f"samples-{where}.png",
                                                              "--gif", pictures / f"samples-{where}.gif"),
                     60, skip=no_run)
            self.run(f"reconstruct --device {where}",
                     self.drawkit("reconstruct", "--checkpoint", run, "--n", n, "--device", where,
                                  "--out", pictures / f"reconstructions-{where}.png"), 60, skip=no_run)
            self.run(f"visualize-attention --device {where}",
                     self.drawkit("visualize-attention", "--checkpoint", run, "--n", n, "--device", where,
                                  "--out", pictures / f"attention-{where}.gif"), 60, skip=no_run)

    def tiny_train(self, *extra, classify: bool = False) -> list:
        p = self.p
        drawing = [] if classify else [*p["tiny"][4:], "--write-size", "3"]  # --z-dim, --write-size: DRAW only
        return ["--dataset", "mnist", *p["tiny"][:4], *drawing, "--read-size", "2",
                "--batch-size", p["tiny_batch"], "--max-steps", p["tiny_steps"], "--val-images", 64,
                "--log-every", 1, "--no-progress", "--device", self.args.device, *extra]

    def distributed(self) -> None:
        for procs in (1, 2):
            run = self.out / f"torchrun-{procs}"
            shutil.rmtree(run, ignore_errors=True)
            skip = "--quick: torchrun is checked by the full run" if self.args.quick else None
            record = self.run(f"torchrun, {procs} process(es)",
                              [self.python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m", "drawkit", "train",
                               *self.tiny_train("--out", run)], 120, skip=skip,
                              parse=lambda out, run=run: {"last_step": train_figures(run).get("last_step")})
            if record["status"] == "failed" and "GPU(s)" in record.get("output_tail", ""):
                record.update(status="not supported", reason="drawkit runs one torchrun process per GPU "
                                                             "(drawkit/distributed.py local_device)")

    def classifier(self) -> None:
        p = self.p
        run = self.out / "classify"
        shutil.rmtree(run, ignore_errors=True)
        record = self.run("classifier train (--task classify)",
                          self.drawkit("train", "--task", "classify", *self.tiny_train("--out", run, classify=True)), 120)
        skip = None if record["status"] == "ok" else "the classifier run failed"
        self.run("classifier evaluate", self.drawkit("evaluate", "--checkpoint", run, "--json", "--no-progress",
                                                     "--max-images", p["eval_images"] or 500, "--device", self.args.device),
                 60, skip=skip, parse=lambda out: {k: last_json(out).get(k) for k in ("error_rate", "n_images")})

    # ---- reports -------------------------------------------------------------------------------
    def report(self, started: str) -> dict:
        env = next((s for s in self.steps if s["step"] == "environment"), {})
        report = {"device": self.args.device, "mode": self.args.mode, "date": started,
                  "device_name": (env.get("gpus") or [platform.processor() or platform.machine()])[0]
                  if self.args.device != "cpu" else f"CPU ({os.cpu_count()} cores)",
                  "torch": env.get("torch"), "cuda": env.get("cuda"), "data": self.env.get("DRAWKIT_DATA"),
                  "nvidia_smi": next((s.get("gpu") for s in self.steps if s["step"] == "nvidia-smi"), None),
                  "steps": self.steps}
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        (self.out / "report.md").write_text(markdown(report))
        return report


def last_json(output: str) -> dict:
    lines = [line for line in output.splitlines() if line.startswith("{")]
    if not lines:
        raise ValueError("no JSON line in the output")
    return json.loads(lines[-1])


def bench_figures(output: str) -> dict:
    result = last_json(output)
    figures = {"images_per_s": result["images_per_s"], "s_per_step": result.get("s_per_step"),
               "peak_memory_mb": result.get("peak_memory_mb"), "warmup_s": result.get("warmup_s"),
               "batch_size": result.get("batch_size"), "precision": result.get("precision"),
               "percent_of_peak": result.get("percent_of_peak")}
    if "speedup" in result:
        figures.update(speedup=result["speedup"], reference_images_per_s=result["reference"]["images_per_s"])
    return figures


def train_figures(run: Path) -> dict:
    """The newest step, training images/s (steps/s x batch) and validation bound from the run's metrics.jsonl."""
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    records = [json.loads(line) for line in lines if line.strip()]
    train = [r for r in records if r.get("split") == "train"]
    valid = [r for r in records if r.get("split") in ("valid", "validation")]
    figures = {"last_step": max((r.get("step", 0) for r in records), default=0)}
    if train:
        figures["train_loss"] = train[-1].get("loss")
        figures["steps_per_s"] = train[-1].get("steps_per_s")
    if valid:
        figures["valid_bound"] = valid[-1].get("nll_bound")
    return figures


def markdown(report: dict) -> str:
    steps = report["steps"]
    lines = [f"# gpu-check: {report['device_name']}", "",
             f"Device `{report['device']}` ({report['mode']} mode), torch {report['torch']}, CUDA {report['cuda']}, "
             f"{report['date']}. Data: {report['data']}."
             + (f" nvidia-smi (name, driver, memory, use): {report['nvidia_smi']}." if report.get("nvidia_smi") else ""),
             "",
             "| measurement | images/s | refdraw images/s | speed-up | bound (nats) | peak memory (MB) |",
             "|---|---|---|---|---|---|"]

    def fmt(value, digits=1):
        return "—" if value is None else f"{value:.{digits}f}"

    for s in steps:
        if "images_per_s" in s or "bound" in s or "steps_per_s" in s:
            rate = s.get("images_per_s")
            if rate is None and s.get("steps_per_s") and s.get("batch_size"):
                rate = s["steps_per_s"] * s["batch_size"]
            speedup = f"{s['speedup']:.2f}×" if "speedup" in s else "—"
            lines.append(f"| {s['step']} | {fmt(rate)} | {fmt(s.get('reference_images_per_s'))} | {speedup} | "
                         f"{fmt(s.get('bound') or s.get('valid_bound'), 2)} | {fmt(s.get('peak_memory_mb'), 0)} |")
    lines += ["", "| step | status | seconds | exit code | note |", "|---|---|---|---|---|"]
    for s in steps:
        note = s.get("reason") or s.get("summary") or s.get("version") or ""
        lines.append(f"| {s['step']} | {s['status']} | {s.get('seconds', '')} | {s.get('exit_code', '')} | {note} |")
    lines.append("")
    for s in steps:
        if s["status"] not in ("ok", "skipped") or (s["step"] == "nvidia-smi" and s["status"] == "ok"):
            lines += [f"## {s['step']}: {s['status']}", "", f"`{s['command']}`", "", "```",
                      s.get("output_tail", ""), "```", ""]
    return "\n".join(lines)


def data_root(out: Path) -> str:
    """$DRAWKIT_DATA or ../shared/data when it holds MNIST; else a generated stand-in written under ``out``."""
    for root in (os.environ.get("DRAWKIT_DATA"), str(SHARED_DATA)):
        if root and (Path(root) / "MNIST" / "raw").is_dir():
            return root
    generated = out / "data"
    if not (generated / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file():
        sys.path.insert(0, str(ROOT / "tests"))
        from generated_mnist import write_mnist_folder

        write_mnist_folder(generated)
    return str(generated)


GROUPS = ("environment", "install", "tests", "benches", "training", "distributed", "classifier")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (the paper's sizes) or cpu (tiny sizes)")
    parser.add_argument("--out", default=str(ROOT / "gpu-check"), help="folder for report.md, report.json, runs")
    parser.add_argument("--quick", action="store_true", help="tinier sizes, no pytest, no refdraw, no compiling")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default per mode)")
    parser.add_argument("--only", default=None, help="comma-separated groups to run: " + ", ".join(GROUPS))
    args = parser.parse_args(argv)
    args.mode = "quick" if args.quick else ("gpu" if args.device.startswith("cuda") else "cpu")
    check = Check(args, PROFILES[args.mode])
    check.out.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    check.env.update(DRAWKIT_DATA=data_root(check.out), DRAWKIT_OFFLINE="1")
    only = set(args.only.split(",")) if args.only else set(GROUPS)
    unknown = only - set(GROUPS)
    if unknown:
        parser.error(f"--only: unknown group(s) {', '.join(sorted(unknown))}; choose from {', '.join(GROUPS)}")
    for group in GROUPS:
        if group not in only:
            continue
        getattr(check, group)()
        check.report(started)  # written after every group: an interrupted run still leaves a report
    failed = [s["step"] for s in check.steps if s["status"] in ("failed", "timeout")]
    print(f"[gpu-check] {check.out / 'report.md'}: {len(check.steps)} steps, {len(failed)} failed"
          + (f" ({', '.join(failed)})" if failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
