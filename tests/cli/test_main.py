import subprocess
import sys

import pytest
from waits import ceiling

from foclip.cli.main import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "foclip" in out
    for command in ("demo", "generate", "export", "inspect", "build-engine", "detect", "calibrate", "serve", "bench",
                    "reproduce"):
        assert command in out, command


def test_user_error_is_one_line_and_exit_1(tmp_path):
    # An unknown prompt set is a FoclipError: no traceback, exit 1.
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    code = ("from foclip.cli.main import main; import sys; sys.exit(main(['generate', sys.argv[1], '--out', "
            "sys.argv[2], '--prompts', 'no-such-set-xyz', '--model', 'foclip-tiny', '--pretrained', 'random']))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.png"), str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=ceiling(300), check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "no-such-set-xyz" in proc.stderr and proc.stderr.count("error:") == 1


def test_unknown_option_shows_the_subcommand_usage_and_a_close_match(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "a.png", "--out", "o", "--pretrianed", "random"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: foclip generate")
    assert "unrecognized arguments: --pretrianed random; did you mean --pretrained?" in err


def test_unknown_command_and_choice_get_a_close_match(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["genrate", "a.png"])
    assert exc.value.code == 2
    assert "did you mean 'generate'?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["detect", "b", "x", "--graph", "fusd"])
    err = capsys.readouterr().err
    assert err.startswith("usage: foclip detect") and "did you mean 'fused'?" in err


def test_library_logs_are_hidden_then_shown_with_verbose(capsys, monkeypatch):
    import logging

    from foclip.cli import main as cli_main

    def noisy(args):
        logging.getLogger("some.library").warning("retrying download 3/5")
        logging.warning("Please consider to run pre-processing before quantization")  # noqa: LOG015 (the root logger on purpose)
        return 0

    real = cli_main.parse

    def parse(argv):
        args = real(argv)
        args.func = noisy
        return args

    monkeypatch.setattr(cli_main, "parse", parse)
    root_handlers = logging.getLogger().handlers[:]
    assert main(["inspect", "b"]) == 0
    err = capsys.readouterr().err
    assert "retrying" not in err and "2 library log messages hidden (worst: WARNING); --verbose shows them." in err
    assert main(["inspect", "b", "--verbose"]) == 0
    err = capsys.readouterr().err
    assert "retrying download 3/5" in err and "hidden" not in err
    assert logging.getLogger().handlers == root_handlers  # restored for whoever runs next in this process


def test_random_weights_note_is_said_once_per_run(capsys):
    from foclip.cli import common

    with common.run_scope():
        for _ in range(3):
            common.random_weights_notice("random(seed=0)")
    with common.run_scope():
        common.random_weights_notice("random(seed=0)")
    assert capsys.readouterr().err.count("RANDOMLY INITIALISED") == 2
