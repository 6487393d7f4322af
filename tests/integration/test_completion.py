"""`versatil completion bash|zsh|fish` prints click's completion script, and the script's
call back into `versatil` completes the commands (issue 15, item 18)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from integration.helpers import CLI_PRELUDE, run_versatil


@pytest.mark.parametrize(("shell", "marker"), [
    ("bash", "complete -o nosort -F _versatil_completion versatil"),
    ("zsh", "compdef _versatil_completion versatil"),
    ("fish", "complete --no-files --command versatil"),
])
def test_completion_prints_the_script(tmp_path: Path, shell: str, marker: str) -> None:
    result = run_versatil("completion", shell, cwd=tmp_path)
    assert result.returncode == 0, result
    assert marker in result.stdout and "_VERSATIL_COMPLETE" in result.stdout


def test_an_unknown_shell_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    result = run_versatil("completion", "tcsh", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result
    assert "'tcsh' is not one of 'bash', 'zsh', 'fish'" in result.stderr


def test_the_bash_script_completes_commands(tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    script = run_versatil("completion", "bash", cwd=tmp_path).stdout
    # The script calls `versatil` by name: a shim on PATH runs this interpreter's CLI.
    shim = tmp_path / "bin" / "versatil"
    shim.parent.mkdir()
    shim.write_text(f"#!{sys.executable}\n{CLI_PRELUDE}\n")
    shim.chmod(0o755)
    probe = (script + '\nCOMP_WORDS=(versatil lo); COMP_CWORD=1; _versatil_completion versatil\n'
             'printf "%s\\n" "${COMPREPLY[@]}"\n')
    env = {**os.environ, "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", probe], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done
    assert set(done.stdout.split()) == {"lock", "locks", "logs"}
