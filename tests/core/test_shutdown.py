"""exit_now (qos_hooks.core.shutdown): everything written gets out, then the
process ends with the code given, skipping the interpreter's teardown."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(code):
    # buffered, as under VDSM and libvirtd (not this shell's PYTHONUNBUFFERED)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=60, env=env)


def test_buffered_output_and_log_lines_are_flushed():
    p = run("import sys, atexit\n"
            "from qos_hooks.core import log\n"
            "atexit.register(lambda: print('teardown ran'))\n"
            "logger = log.setup({'hook': 'x'})\n"
            "logger.warning('last words %s', 1)\n"
            "log.get('qos_hooks.t').error('from logging')\n"
            "sys.stdout.write('y' * 200000)\n"
            "sys.stdout.buffer.write(b'z')\n"
            "from qos_hooks.core.shutdown import exit_now\n"
            "exit_now(3)\n")
    assert p.returncode == 3
    assert p.stdout == b"y" * 200000 + b"z"       # nothing lost, and no teardown
    err = p.stderr.decode()
    assert "WARNING hook=x: last words 1" in err and "ERROR hook=x: from logging" in err


def test_none_is_1_and_a_stdout_nobody_reads_is_120():
    assert run("from qos_hooks.core.shutdown import exit_now\nexit_now(None)").returncode == 1
    r, w = os.pipe()
    os.close(r)
    p = subprocess.run([sys.executable, "-c", "import sys\nsys.stdout.write('x')\n"
                        "from qos_hooks.core.shutdown import exit_now\nexit_now(0)"],
                       cwd=REPO, stdout=w, stderr=subprocess.PIPE, timeout=60,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})
    os.close(w)
    assert p.returncode == 120, p.stderr


def test_a_profiler_still_gets_its_data(tmp_path):
    """python -m cProfile writes its file at exit: exit_now lets it."""
    out = tmp_path / "prof.out"
    script = tmp_path / "s.py"
    script.write_text("from qos_hooks.core.shutdown import exit_now\nexit_now(4)\n")
    p = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), str(script)],
                       cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), timeout=60)
    # (cProfile's own main swallows SystemExit: its exit code says nothing)
    assert p.returncode == 0
    assert out.stat().st_size > 0     # os._exit would have left no file
