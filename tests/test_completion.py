"""`drawkit --version` and shell completion: the completion functions, and the same answers through the
environment variable a shell's completion script sets (_DRAWKIT_COMPLETE)."""
import pytest

from drawkit import __version__, hookimpl
from drawkit.cli import app, complete_attention, complete_dataset, complete_encoder, complete_preset
from drawkit.presets import PRESETS


class ToyEncoderPlugin:
    @hookimpl
    def register_encoders(self, register):
        register("zz-toy", lambda **options: None, description="a toy encoder for completion tests")


def names(completions) -> list[str]:
    return [name for name, _ in completions]


def shell_completion(cli_runner, words: str) -> list[str]:
    """What bash would offer after ``words`` (the last one being completed, possibly empty)."""
    env = {"_DRAWKIT_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1)}
    result = cli_runner.invoke(app, [], prog_name="drawkit", env=env)
    assert result.exit_code == 0, result.output
    return result.stdout.split()


def test_version_flag_prints_the_version_like_the_command(cli_runner):
    flag = cli_runner.invoke(app, ["--version"])
    command = cli_runner.invoke(app, ["version"])
    assert flag.exit_code == command.exit_code == 0
    assert flag.stdout == command.stdout == f"drawkit {__version__}\n"


def test_version_flag_runs_no_command(cli_runner, tmp_path):
    result = cli_runner.invoke(app, ["--version", "train", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0 and result.stdout == f"drawkit {__version__}\n"
    assert not (tmp_path / "run").exists()


def test_registered_names_complete_with_their_descriptions():
    assert {"lstm", "cnn"} <= set(names(complete_encoder("")))
    assert names(complete_encoder("c")) == ["cnn"]
    assert names(complete_attention("f")) == ["filterbank"]
    assert "binarized-mnist" in names(complete_dataset("bin")) and "mnist" not in names(complete_dataset("bin"))
    assert all(description for _, description in complete_encoder(""))


def test_a_plugin_registered_now_completes(register_plugin):
    assert names(complete_encoder("zz")) == []
    register_plugin(ToyEncoderPlugin(), name="toy_completion")
    assert complete_encoder("zz") == [("zz-toy", "a toy encoder for completion tests")]
    assert complete_dataset("zz") == []  # an encoder is no data set


def test_presets_complete():
    assert names(complete_preset("")) == list(PRESETS)
    assert names(complete_preset("paper-clu")) == ["paper-cluttered", "paper-cluttered-4"]
    assert complete_preset("nothing") == []


@pytest.mark.parametrize("words, expected", [
    ("drawkit train --encoder ", ["cnn", "lstm"]),
    ("drawkit train --attention fil", ["filterbank"]),
    ("drawkit train --dataset binarized", ["binarized-mnist"]),
    ("drawkit train --preset paper-mnist", ["paper-mnist", "paper-mnist-noattention"]),
    ("drawkit bench --preset paper-cluttered-", ["paper-cluttered-4"]),
])
def test_the_shell_gets_the_same_names(cli_runner, words, expected):
    offered = shell_completion(cli_runner, words)
    assert set(expected) <= set(offered)
    assert all(name.startswith(words.split(" ")[-1]) for name in offered)


def test_completion_script_and_install_option_exist(cli_runner):
    script = cli_runner.invoke(app, ["--show-completion", "bash"], prog_name="drawkit")
    assert script.exit_code == 0 and "_DRAWKIT_COMPLETE=complete_bash" in script.stdout
    assert "--install-completion" in cli_runner.invoke(app, ["--help"]).stdout
