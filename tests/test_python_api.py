"""The Python API (drawkit.load, drawkit.train): what it returns, that it agrees with the commands, and that
every example in docs/python.md runs."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import drawkit
import drawkit.api
from drawkit.checkpoint import read_checkpoint
from drawkit.cli import app

DOCS = Path(__file__).resolve().parents[1] / "docs" / "python.md"
#: the model and training sizes of conftest's TINY_TRAIN, as drawkit.train keywords
TINY = dict(glimpses=3, hidden=16, z_dim=4, read_size=2, write_size=3, batch_size=16, max_steps=5, val_images=64,
            log_every=1)
TINY_CLASSIFIER = dict(task="classify", glimpses=2, hidden=8, read_size=3, batch_size=16, max_steps=3,
                       val_images=64, log_every=1)


@pytest.fixture
def run_copy(mnist_run, tmp_path) -> Path:
    """A copy of the tiny run, for tests that evaluate (evaluating records into the run folder)."""
    return Path(shutil.copytree(mnist_run, tmp_path / "run"))


@pytest.fixture(scope="module")
def model(mnist_run):
    return drawkit.load(mnist_run, device="cpu")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    out = tmp_path_factory.mktemp("classifier") / "run"
    trained, result = drawkit.train(**TINY_CLASSIFIER, out=str(out), device="cpu")
    assert result["steps"] == 3
    return trained


def cli_json(cli_runner, *args) -> dict:
    result = cli_runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_import_drawkit_leaves_torch_unimported():
    code = "import sys, drawkit; drawkit.DrawkitError; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_drawkit_train_and_load_are_the_api_functions():
    assert drawkit.train is drawkit.api.train
    assert drawkit.load is drawkit.api.load and drawkit.Model is drawkit.api.Model


def test_sample_gives_images_in_the_unit_range_and_a_seed_repeats_them(model):
    images = model.sample(5, seed=3)
    assert images.shape == (5, *model.config.image_shape) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    assert torch.equal(images, model.sample(5, seed=3))
    assert not torch.equal(images, model.sample(5, seed=4))


def test_a_seed_leaves_the_callers_random_stream_alone(model):
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    model.sample(2, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_reconstruct_and_images(model):
    x = model.images(4)
    assert x.shape == (4, *model.config.image_shape)
    assert torch.equal(x, model.images(indices=[0, 1, 2, 3]))
    recon = model.reconstruct(x, seed=1)
    assert recon.shape == x.shape and 0 <= recon.min() and recon.max() <= 1
    assert torch.equal(recon, model.reconstruct(x, seed=1))
    assert torch.equal(model.reconstruct(x[0], seed=1), model.reconstruct(x[:1], seed=1))  # one image (C, H, W)


def test_trace_of_generation_ends_in_the_images_sample_draws(model):
    trace = model.trace(n=3, seed=2)
    T = model.config.glimpses
    assert trace.canvases.shape == (T, 3, *model.config.image_shape)
    assert trace.read is None and trace.write.gx.shape == (T, 3)
    assert torch.allclose(trace.canvases[-1], model.sample(3, seed=2))


def test_trace_of_images_reads_them_and_ends_in_their_reconstruction(model):
    x = model.images(2)
    trace = model.trace(x, seed=5)
    assert trace.read.gx.shape == trace.write.gx.shape == (model.config.glimpses, 2)
    assert torch.equal(trace.inputs, x)
    assert torch.allclose(trace.canvases[-1], model.reconstruct(x, seed=5))


@pytest.mark.parametrize("samples", [1, 2])
def test_evaluate_gives_the_dict_that_evaluate_json_prints(run_copy, cli_runner, samples):
    path = str(run_copy)
    printed = cli_json(cli_runner, "evaluate", "--checkpoint", path, "--max-images", "60", "--no-progress",
                       "--device", "cpu", "--importance-samples", str(samples))
    result = drawkit.load(path, device="cpu").evaluate(max_images=60, importance_samples=samples)
    assert result == printed
    assert ("iw_nll" in result) == (samples > 1)


def test_load_takes_the_run_folder_or_its_checkpoint_file(mnist_run, model):
    from_file = drawkit.load(mnist_run / "checkpoint.pt", device="cpu")
    assert from_file.config == model.config and from_file.task == model.task == "generate"
    assert torch.equal(from_file.sample(2, seed=0), model.sample(2, seed=0))
    assert model.plugins["encoder"]["name"] == model.config.encoder == "lstm"
    assert model.train_config["dataset"] == "mnist"


def test_load_takes_an_exported_folder(mnist_run, model, cli_runner, tmp_path):
    exported = tmp_path / "exported"
    result = cli_runner.invoke(app, ["export", str(mnist_run), "--out", str(exported)])
    assert result.exit_code == 0, result.output
    loaded = drawkit.load(exported, device="cpu")
    assert loaded.config == model.config
    assert torch.equal(loaded.sample(3, seed=7), model.sample(3, seed=7))


def test_train_returns_the_loaded_model_and_the_summary(tmp_path):
    out = tmp_path / "run"
    trained, result = drawkit.train(**TINY, out=str(out), device="cpu")
    assert result["steps"] == 5 and "nll_bound" in result
    assert Path(trained.path) == out and trained.config.glimpses == 3 and trained.config.z_dim == 4
    assert read_checkpoint(out)["step"] == 5


def test_train_with_a_preset_builds_the_configs_the_command_builds(tmp_path, cli_runner, tiny_train_args):
    by_command, by_api = tmp_path / "command", tmp_path / "api"
    result = cli_runner.invoke(app, ["train", "--preset", "paper-mnist", "--dataset", "mnist", *tiny_train_args,
                                     "--device", "cpu", "--out", str(by_command)])
    assert result.exit_code == 0, result.output
    drawkit.train(preset="paper-mnist", dataset="mnist", **TINY, device="cpu", out=str(by_api))
    command, api = read_checkpoint(by_command), read_checkpoint(by_api)
    assert api["train_config"]["preset"] == "paper-mnist" and api["model_config"]["glimpses"] == 3
    assert api["model_config"] == command["model_config"]
    assert {**api["train_config"], "out": None} == {**command["train_config"], "out": None}


def test_resume_trains_on_and_refuses_a_changed_option(tmp_path):
    out = str(tmp_path / "run")
    drawkit.train(**{**TINY, "max_steps": 2}, out=out, device="cpu")
    _, result = drawkit.train(resume=out, max_steps=4)
    assert result["steps"] == 4
    with pytest.raises(drawkit.DrawkitError, match="--glimpses cannot change when resuming"):
        drawkit.train(resume=out, max_steps=6, glimpses=5)


@pytest.mark.parametrize("options, fragment", [
    ({"glimpse": 3}, "has no option 'glimpse' (did you mean 'glimpses'?)"),
    ({"glimpses": "many"}, "glimpses='many'"),
    ({"glimpses": 2.5}, "glimpses=2.5"),
    ({"glimpses": True}, "glimpses=True"),
    ({"glimpses": None}, "leave glimpses out"),
    ({"glimpses": 0}, "--glimpses must be a positive whole number"),
    ({"task": "clasify"}, "unknown --task 'clasify'"),
])
def test_bad_training_options_raise_drawkit_error(tmp_path, options, fragment):
    out = tmp_path / "never"
    with pytest.raises(drawkit.DrawkitError) as caught:
        drawkit.train(**options, out=str(out))
    assert fragment in str(caught.value)
    assert not out.exists()


def test_a_missing_checkpoint_raises_drawkit_error(tmp_path):
    with pytest.raises(drawkit.DrawkitError, match="not found"):
        drawkit.load(tmp_path / "nothing-here")


@pytest.mark.parametrize("bad", [torch.zeros(2, 1, 5, 5), torch.zeros(28, 28), [[0.0]]])
def test_images_of_the_wrong_shape_raise_drawkit_error(model, bad):
    with pytest.raises(drawkit.DrawkitError, match="shape"):
        model.reconstruct(bad)


def test_bad_counts_and_devices_raise_drawkit_error(model, mnist_run):
    for n in (0, -1, 2.5):
        with pytest.raises(drawkit.DrawkitError, match="n must be a positive whole number"):
            model.sample(n)
    with pytest.raises(drawkit.DrawkitError, match="unknown device"):
        drawkit.load(mnist_run, device="tpu")


def test_a_classifier_evaluates_and_traces_but_cannot_draw(classifier, cli_runner):
    assert classifier.task == "classify"
    for draw in (lambda: classifier.sample(2), lambda: classifier.reconstruct(classifier.images(2))):
        with pytest.raises(drawkit.NotGenerative, match="needs a generative checkpoint"):
            draw()
    assert issubclass(drawkit.NotGenerative, drawkit.DrawkitError)
    trace = classifier.trace(n=3)
    assert trace.canvases is None and trace.labels.shape == (3,)
    assert trace.probabilities.shape[:2] == (2, 3)
    assert torch.allclose(trace.probabilities.sum(-1), torch.ones(2, 3))
    printed = cli_json(cli_runner, "evaluate", "--checkpoint", classifier.path, "--max-images", "40",
                       "--no-progress", "--device", "cpu")
    assert classifier.evaluate(max_images=40) == printed and "error_rate" in printed


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


@pytest.fixture
def run_examples(tmp_path, monkeypatch):
    """``run(blocks, source)``: Python examples run in order in one namespace, in an empty folder, with training
    cut to tiny sizes and 3 steps (5 when resuming); returns the namespace."""
    real_train = drawkit.api.train

    def tiny_train(**options):
        """The example's options, with its sizes and lengths replaced by tiny ones (unknown names still fail)."""
        if "resume" in options:
            return real_train(**{**options, "max_steps": 5})
        tiny = {**TINY, **TINY_CLASSIFIER} if options.get("task") == "classify" else TINY
        sized = {name: tiny[name] for name in options if name in tiny}
        return real_train(**{**options, **sized, "max_steps": 3, "batch_size": 16, "val_images": 64, "device": "cpu"})

    def run(blocks: list[str], source: str) -> dict:
        namespace = {}
        for number, block in enumerate(blocks, 1):
            exec(compile(block, f"{source} example {number}", "exec"), namespace)
        return namespace

    monkeypatch.setattr(drawkit.api, "train", tiny_train)
    monkeypatch.chdir(tmp_path)
    return run


def test_every_python_example_in_the_docs_runs(run_examples, tmp_path, capsys):
    blocks = python_blocks(DOCS.read_text())
    assert len(blocks) >= 6
    namespace = run_examples(blocks, DOCS.name)
    printed = capsys.readouterr().out
    assert "has no option 'glimpse' (did you mean 'glimpses'?)" in printed
    assert "needs a generative checkpoint" in printed
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "reconstructions.png").is_file()
    assert namespace["result"]["steps"] == 3 and namespace["trace"].probabilities is not None


def test_the_python_example_in_the_readme_runs(run_examples):
    readme = DOCS.parents[1] / "README.md"
    section = readme.read_text().split("## From Python", 1)[1].split("\n## ", 1)[0]
    blocks = python_blocks(section)
    assert len(blocks) == 1
    namespace = run_examples(blocks, readme.name)
    assert namespace["images"].shape == (16, 1, 28, 28) and "nll_bound" in namespace["scores"]
