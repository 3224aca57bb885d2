"""`drawkit report RUN`: one self-contained HTML page about a run, checked as a browser would see it.

The pictures are decoded from the page itself; the browser test renders the page in headless
Chromium where one is installed and finds the embedded sample grid, pixel for pixel, in the screenshot.
"""
import base64
import html
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drawkit.checkpoint import BEST, FILENAME, read_checkpoint
from drawkit.cli import app
from drawkit.curves import HINT
from drawkit.report import RECONSTRUCTED, SAMPLES, SCALE, TRACED, write_report
from conftest import assert_one_error_line

CHROMIUM_HINT = ("needs Chromium or Chrome for the browser check: 'apt install chromium', or "
                 "'pip install playwright && playwright install chromium'")


class Page(HTMLParser):
    """What a report page holds: its pictures (src, alt), the text of its table rows, all its text."""

    def __init__(self, text: str):
        super().__init__()
        self.images, self.rows, self.text, self.tags = [], [], [], []
        self._row = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append((attrs.get("src", ""), attrs.get("alt", "")))
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._row.append("")

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self.rows.append([cell.strip() for cell in self._row])
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._row:
            self._row[-1] += data

    def picture(self, alt_start: str) -> Image.Image:
        """The one picture whose alt text starts so, decoded from its data: URI."""
        found = [src for src, alt in self.images if alt.startswith(alt_start)]
        assert len(found) == 1, (alt_start, [alt for _, alt in self.images])
        return decode(found[0])

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def decode(src: str) -> Image.Image:
    match = re.fullmatch(r"data:image/(png|gif);base64,([A-Za-z0-9+/=]+)", src)
    assert match, src[:60]
    picture = Image.open(io.BytesIO(base64.b64decode(match.group(2))))
    picture.load()
    assert picture.format.lower() == match.group(1)
    return picture


def report(run: Path, *options: str) -> tuple[Page, str]:
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["report", str(run), *options])
    assert result.exit_code == 0, result.output
    text = (run / "report.html").read_text(encoding="utf-8") if "--out" not in options else \
        Path(options[options.index("--out") + 1]).read_text(encoding="utf-8")
    return Page(text), text


def pictures_checkpoint(run: Path) -> Path:
    return run / BEST if (run / BEST).is_file() else run / FILENAME


@pytest.fixture(scope="module")
def run(mnist_run, tmp_path_factory) -> Path:
    """A copy of the tiny trained run, without the evaluations other modules recorded, so its own stay apart."""
    copy = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(mnist_run, copy, ignore=shutil.ignore_patterns("evaluations.jsonl"))
    return copy


@pytest.fixture(scope="module")
def page(run) -> tuple[Page, str]:
    return report(run)


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory, cli_runner) -> Path:
    out = tmp_path_factory.mktemp("classifier") / "run"
    result = cli_runner.invoke(app, ["train", "--task", "classify", "--glimpses", "3", "--hidden", "16",
                                     "--read-size", "5", "--batch-size", "16", "--max-steps", "3",
                                     "--val-images", "32", "--log-every", "1", "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


# --- what the page holds --------------------------------------------------------------------------


def test_page_holds_everything_itself(page):
    parsed, text = page
    assert parsed.images
    assert all(src.startswith("data:image/") for src, _ in parsed.images)
    assert not re.search(r"https?://", text)
    assert not {"script", "link", "iframe", "object", "embed"} & set(parsed.tags)
    assert "src=\"data:" in text and "url(" not in text


def test_pictures_are_the_expected_kinds_and_sizes(page, run, cli_runner, tmp_path):
    """The sample grid and both GIFs are what `drawkit sample` and `visualize-attention` write for the
    same checkpoint, seed and scale."""
    parsed, _ = page
    checkpoint = str(pictures_checkpoint(run))
    result = cli_runner.invoke(app, ["sample", "--checkpoint", checkpoint, "--n", str(SAMPLES), "--scale", str(SCALE),
                                     "--out", str(tmp_path / "s.png"), "--gif", str(tmp_path / "g.gif")])
    assert result.exit_code == 0, result.output
    result = cli_runner.invoke(app, ["visualize-attention", "--checkpoint", checkpoint, "--n", str(TRACED),
                                     "--scale", str(SCALE), "--out", str(tmp_path / "a.gif")])
    assert result.exit_code == 0, result.output

    grid = parsed.picture(f"{SAMPLES} samples")
    assert grid.format == "PNG"
    assert np.array_equal(np.asarray(grid.convert("RGB")), np.asarray(Image.open(tmp_path / "s.png").convert("RGB")))
    for alt, expected in (("the same samples drawn", "g.gif"), ("attention trace", "a.gif")):
        gif = parsed.picture(alt)
        assert gif.format == "GIF" and gif.n_frames > 1
        assert gif.size == Image.open(tmp_path / expected).size
    reconstructions = parsed.picture(f"the first {RECONSTRUCTED} test images")
    assert reconstructions.format == "PNG"
    assert reconstructions.width > reconstructions.height > 28 * SCALE  # input | reconstruction pairs
    curves = parsed.picture("from metrics.jsonl")
    assert curves.format == "PNG" and curves.width >= 300


def test_settings_and_plugin_versions_appear(page, run):
    parsed, _ = page
    payload = read_checkpoint(pictures_checkpoint(run))
    settings = dict(row for row in parsed.rows if len(row) == 2)
    assert settings["glimpses"] == "3" and settings["hidden"] == "16" and settings["z_dim"] == "4"
    assert settings["batch_size"] == "16" and settings["max_steps"] == "5"
    assert settings["dataset"] == payload["train_config"]["dataset"]
    command = parsed.all_text
    assert "drawkit train --task generate --dataset mnist" in command and "--glimpses 3" in command
    for kind, record in payload["plugins"].items():
        row = [kind, record["name"], record["plugin"], record["package"], record["version"]]
        assert row in parsed.rows, (row, parsed.rows)
    assert any(record["version"] for record in payload["plugins"].values())


def test_recorded_command_gives_the_run_configs(page, run):
    """The page's `drawkit train` line, parsed as `drawkit train` parses it, sets every recorded value."""
    from dataclasses import asdict

    from typer.main import get_command

    from drawkit.cli import TRAIN_OPTIONS, train_configs

    _, text = page
    words = shlex.split(html.unescape(re.search(r"<pre>(.*?)</pre>", text, re.S).group(1)))
    assert words[:2] == ["drawkit", "train"]
    context = get_command(app).commands["train"].make_context("train", words[2:])
    model_config, train_config = train_configs(context.params)
    payload = read_checkpoint(pictures_checkpoint(run))
    parsed = {"model": asdict(model_config), "train": asdict(train_config)}
    recorded = {"model": payload["model_config"], "train": payload["train_config"]}
    for where, field, _ in TRAIN_OPTIONS.values():
        if field in recorded[where]:
            assert parsed[where][field] == recorded[where][field], field


def test_evaluations_appear_newest_per_split(run, cli_runner):
    parsed, _ = report(run)
    assert "no evaluation recorded yet" in parsed.all_text

    results = []
    for split, images in (("test", "32"), ("valid", "16"), ("test", "48")):
        result = cli_runner.invoke(app, ["evaluate", "--checkpoint", str(run), "--split", split, "--max-images", images,
                                         "--json", "--no-progress"])
        assert result.exit_code == 0, result.output
        results.append(json.loads(result.output.strip().splitlines()[-1]))
    recorded = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]
    assert [(r["split"], r["n_images"]) for r in recorded] == [("test", 32), ("valid", 16), ("test", 48)]

    parsed, _ = report(run)
    rows = {row[0]: row for row in parsed.rows if row and row[0] in ("test", "valid")}
    assert rows["valid"][1] == "16" and f"{results[1]['nll_bound']:.2f}" in rows["valid"]
    assert rows["test"][1] == "48" and f"{results[2]['nll_bound']:.2f}" in rows["test"]
    assert "no evaluation recorded yet" not in parsed.all_text


def test_out_checkpoint_and_seed_options(run, tmp_path):
    parsed, _ = report(run, "--out", str(tmp_path / "elsewhere" / "r.html"), "--checkpoint", "last", "--seed", "3")
    assert "made now from checkpoint.pt, seed 3" in parsed.all_text
    other, _ = report(run, "--out", str(tmp_path / "seed0.html"), "--checkpoint", "last")
    assert not np.array_equal(np.asarray(parsed.picture(f"{SAMPLES} samples")),
                              np.asarray(other.picture(f"{SAMPLES} samples")))


def test_without_matplotlib_the_page_says_so(run, tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    result = write_report(run, out=tmp_path / "r.html")
    parsed = Page(result.html.read_text(encoding="utf-8"))
    assert HINT in parsed.all_text
    assert not [alt for _, alt in parsed.images if alt.startswith("from metrics.jsonl")]
    assert parsed.picture(f"{SAMPLES} samples")
    assert any(HINT in text for text in result.notes)


def test_classifier_report_shows_glimpses_errors_and_evaluation(classifier_run, cli_runner):
    result = cli_runner.invoke(app, ["evaluate", "--checkpoint", str(classifier_run), "--max-images", "32",
                                     "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads(result.output.strip().splitlines()[-1])
    parsed, _ = report(classifier_run)

    alts = [alt for _, alt in parsed.images]
    assert len(alts) == 2, alts  # the curves and the glimpse trace; a classifier draws nothing
    trace = parsed.picture("glimpse trace")
    assert trace.format == "GIF" and trace.n_frames > 1
    assert parsed.picture("from metrics.jsonl").format == "PNG"
    test_row = next(row for row in parsed.rows if row and row[0] == "test")
    assert f"{evaluation['error_rate']:.2%}" in test_row and f"{evaluation['accuracy']:.2%}" in test_row
    assert "classify model" in parsed.all_text and "samples" not in " ".join(alts)


# --- bad input -----------------------------------------------------------------------------------


def test_not_a_run_folder(tmp_path, cli_runner):
    assert_one_error_line(cli_runner.invoke(app, ["report", str(tmp_path / "nowhere")]), "not a folder")
    assert_one_error_line(cli_runner.invoke(app, ["report", str(tmp_path)]), "not a run folder")


def test_run_folder_without_a_checkpoint(tmp_path, cli_runner):
    (tmp_path / "metrics.jsonl").write_text('{"split": "train", "step": 1, "loss": 1.0}\n')
    assert_one_error_line(cli_runner.invoke(app, ["report", str(tmp_path)]), "has no best.pt or checkpoint.pt")


def test_unknown_checkpoint_choice(run, cli_runner):
    assert_one_error_line(cli_runner.invoke(app, ["report", str(run), "--checkpoint", "middle"]), "--checkpoint",
                          "best, last")


# --- in a browser --------------------------------------------------------------------------------


def chromium_screenshot(page: Path, out: Path, width: int, height: int) -> None:
    """Render ``page`` headless at 1 CSS pixel per screen pixel; skip when no Chromium or Chrome is installed."""
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
    binary = next((found for found in map(shutil.which, names) if found), None)
    if binary:
        subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--force-device-scale-factor=1", "--force-color-profile=srgb", f"--screenshot={out}",
                        f"--window-size={width},{height}", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
        return
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip(CHROMIUM_HINT)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch()
            view = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
            view.goto(page.resolve().as_uri())
            view.screenshot(path=str(out))
            browser.close()
    except Error as exc:
        pytest.skip(f"{CHROMIUM_HINT} ({str(exc).splitlines()[0]})")


def find(picture: np.ndarray, screen: np.ndarray) -> bool:
    """Whether ``picture`` (h, w, 3) appears, unscaled and exact, somewhere in ``screen``."""
    first_row = picture[0].tobytes()
    for y in range(screen.shape[0] - picture.shape[0] + 1):
        row = screen[y].tobytes()
        x = row.find(first_row)
        while x >= 0:
            if x % 3 == 0 and np.array_equal(screen[y:y + picture.shape[0], x // 3:x // 3 + picture.shape[1]],
                                             picture):
                return True
            x = row.find(first_row, x + 1)
    return False


def test_browser_shows_the_pictures(page, run, tmp_path):
    parsed, _ = page
    screenshot = tmp_path / "screen.png"
    chromium_screenshot(run / "report.html", screenshot, 1280, 6000)
    screen = np.asarray(Image.open(screenshot).convert("RGB"))
    background = (screen == 255).all(axis=-1).mean()
    assert background < 0.99, "the rendered page is blank"
    for alt in (f"{SAMPLES} samples", f"the first {RECONSTRUCTED} test images"):
        picture = np.asarray(parsed.picture(alt).convert("RGB"))
        assert find(picture, screen), f"the picture '{alt}' is not on the rendered page"
