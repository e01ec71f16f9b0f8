"""The bootstrap that the README's two commands run: usage, and when it reinstalls."""
from __future__ import annotations

import subprocess
import sys

from repro import bootstrap


def test_usage_without_a_command():
    out = subprocess.run([sys.executable, "-m", "repro.bootstrap"], capture_output=True,
                         text=True, cwd=bootstrap.ROOT, timeout=60)
    assert out.returncode == 2 and "python3 -m repro.bootstrap smoke" in out.stdout


def test_fingerprint_tracks_the_torch_build():
    assert bootstrap.install_fingerprint(bootstrap.CPU_TORCH) == \
        bootstrap.install_fingerprint(bootstrap.CPU_TORCH)
    assert bootstrap.install_fingerprint(bootstrap.CPU_TORCH) != \
        bootstrap.install_fingerprint(bootstrap.CUDA_TORCH)


def test_bootstrap_is_stdlib_only():
    """It runs from a bare python3 before anything is installed."""
    code = ("import sys, importlib.util; sys.path.insert(0, '.');"
            "import repro.bootstrap;"
            "third = [m for m in sys.modules if m.split('.')[0] in "
            "{'numpy','torch','pandas','submitit','maskgwm','evals'}]; print(third)")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         cwd=bootstrap.ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


class FakePytest:
    """Stands in for subprocess.run in bootstrap.run_tests: records each command and returns
    the exit code given for its `-m` expression."""

    def __init__(self, codes: dict[str, int]):
        self.codes, self.calls = codes, []

    def __call__(self, cmd):
        self.calls.append(cmd)
        return subprocess.CompletedProcess(cmd, self.codes[cmd[cmd.index("-m", 2) + 1]])


def test_slow_run_follows_repro_test_slow(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("REPRO_TEST_SLOW", raising=False)
    assert bootstrap.marker_runs() == [["-m", "not slow"]]
    monkeypatch.setenv("REPRO_TEST_SLOW", "1")
    assert bootstrap.marker_runs() == [["-m", "not slow"], ["-m", "slow"]]
    ci_run = (bootstrap.ROOT / ".ci" / "run").read_text()
    assert "REPRO_TEST_SLOW=1" in ci_run.split("python3 -m repro.bootstrap test")[0]


def test_slow_run_that_collects_nothing_fails(monkeypatch, capsys):
    monkeypatch.setenv("REPRO_TEST_SLOW", "1")
    fake = FakePytest({"not slow": 0, "slow": bootstrap.NO_TESTS_COLLECTED})
    assert bootstrap.run_tests(bootstrap.Path("py"), run=fake) == 5
    assert [cmd[3:] for cmd in fake.calls] == [["-m", "not slow"], ["-m", "slow"]]
    assert '`pytest -m "slow"` collected no tests' in capsys.readouterr().err
    assert bootstrap.run_tests(bootstrap.Path("py"), run=FakePytest({"not slow": 0,
                                                                     "slow": 0})) == 0
    assert bootstrap.run_tests(bootstrap.Path("py"), run=FakePytest({"not slow": 1,
                                                                     "slow": 0})) == 1


def test_default_local_run_leaves_slow_tests_out(monkeypatch, capsys):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("REPRO_TEST_SLOW", raising=False)
    fake = FakePytest({"not slow": 0})
    assert bootstrap.run_tests(bootstrap.Path("py"), run=fake) == 0
    assert [cmd[3:] for cmd in fake.calls] == [["-m", "not slow"]]
    assert "tests marked slow are left out" in capsys.readouterr().out
