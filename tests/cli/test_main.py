import subprocess
import sys

from foclip.cli.main import main


def test_help_lists_commands(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    assert "foclip" in out


def test_user_error_is_one_line_and_exit_1():
    # An unknown prompt set is a FoclipError: no traceback, exit 1.
    code = "from foclip.cli.main import main; import sys; sys.exit(main(['generate', 'x.png', '--out', '/tmp/o', '--prompts', 'no-such-set-xyz', '--model', 'foclip-tiny']))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
