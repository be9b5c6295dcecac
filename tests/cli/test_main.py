import subprocess
import sys

import pytest

from foclip.cli.main import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "foclip" in out
    for command in ("demo", "generate", "export", "inspect", "build-engine", "detect", "calibrate", "bench"):
        assert command in out, command


def test_user_error_is_one_line_and_exit_1():
    # An unknown prompt set is a FoclipError: no traceback, exit 1.
    code = "from foclip.cli.main import main; import sys; sys.exit(main(['generate', 'x.png', '--out', '/tmp/o', '--prompts', 'no-such-set-xyz', '--model', 'foclip-tiny']))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "no-such-set-xyz" in proc.stderr and proc.stderr.count("error:") == 1
