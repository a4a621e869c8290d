"""Sandbox attack battery: every attack must fail closed (score 0 + error flag, or a
clamped value) and leave the host as it was."""

import os
import textwrap
import time

import pytest

from graders import GraderContext, GraderError, grade, grade_batch, parse_grader
from graders.sandbox import sandbox_status

# Skip only where the sandbox cannot exist (not root, tools missing). Where it should
# work, a failing probe fails these tests instead of hiding the battery behind a skip.
_available, _reason = sandbox_status()
_cannot_exist = not _available and "probe" not in _reason
pytestmark = pytest.mark.skipif(_cannot_exist, reason=f"no sandbox here: {_reason}")


def test_the_sandbox_is_available_where_it_should_be():
    assert _available, _reason

# Shrunk limits so the attacks finish fast; the defaults are larger.
CTX = GraderContext(sandbox_wall_timeout_s=3, sandbox_cpu_seconds=2, sandbox_memory_mb=512, sandbox_workers=2)


def py(body: str):
    return parse_grader({"type": "python", "name": "attack", "source": textwrap.dedent(body)})


def run(body: str, ctx=CTX):
    return grade(py(body), {"output_text": "x", "output_json": None}, {"answer": "x"}, ctx)


ATTACKS = [
    ("net-1.1.1.1", "import socket\ndef grade(s, i):\n    socket.create_connection(('1.1.1.1', 80), timeout=2)\n    return 1.0\n"),
    ("net-loopback", "import socket\ndef grade(s, i):\n    socket.create_connection(('127.0.0.1', 22), timeout=2)\n    return 1.0\n"),
    ("net-metadata", "import socket\ndef grade(s, i):\n    socket.create_connection(('169.254.169.254', 80), timeout=2)\n    return 1.0\n"),
    ("read-shadow", "def grade(s, i):\n    open('/etc/shadow').read()\n    return 1.0\n"),
    ("read-passwd", "def grade(s, i):\n    open('/etc/passwd').read()\n    return 1.0\n"),
    ("read-db", "def grade(s, i):\n    open(DB).read()\n    return 1.0\n"),
    ("read-secret-env", "import os\ndef grade(s, i):\n    assert 'RFT_TEST_SECRET' not in os.environ, os.environ['RFT_TEST_SECRET']\n    raise RuntimeError(sorted(os.environ))\n"),
    ("infinite-loop", "def grade(s, i):\n    while True:\n        pass\n"),
    ("sleep-forever", "import time\ndef grade(s, i):\n    time.sleep(3600)\n"),
    ("alloc-10gb", "def grade(s, i):\n    x = bytearray(10 * 1024**3)\n    return 1.0\n"),
    ("fork-bomb", "import os\ndef grade(s, i):\n    while True:\n        os.fork()\n"),
    ("write-1gb", "def grade(s, i):\n    with open('big', 'wb') as f:\n        for _ in range(1024):\n            f.write(b'x' * 1024**2)\n    return 1.0\n"),
    ("write-outside-tmpfs", "def grade(s, i):\n    open('/usr/rft-evil', 'w').write('x')\n    return 1.0\n"),
    ("return-nan", "def grade(s, i):\n    return float('nan')\n"),
    ("return-inf", "def grade(s, i):\n    return float('inf')\n"),
    ("return-str", "def grade(s, i):\n    return '1.0'\n"),
    ("return-none", "def grade(s, i):\n    return None\n"),
    ("kill-parent", "import os, signal\ndef grade(s, i):\n    os.kill(os.getppid(), signal.SIGKILL)\n    os.kill(1, signal.SIGKILL)\n    raise RuntimeError('still here')\n"),
    ("raise", "def grade(s, i):\n    raise ValueError('boom')\n"),
    ("exit", "import sys\ndef grade(s, i):\n    sys.exit(0)\n"),
    ("os-exit", "import os\ndef grade(s, i):\n    os._exit(0)\n"),
    ("module-level-loop", "while True:\n    pass\ndef grade(s, i):\n    return 1.0\n"),
]


@pytest.fixture(scope="module")
def secret_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("svc") / "rft.db"
    path.write_text("SECRET-DB-CONTENT")
    os.chmod(path, 0o644)  # world-readable on purpose: the sandbox must hide it anyway
    os.environ["RFT_TEST_SECRET"] = "sk-very-secret"
    yield str(path)
    os.environ.pop("RFT_TEST_SECRET", None)


def _host_processes() -> set[int]:
    # Processes of the sandbox uids still alive on the host.
    out = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                uid = os.stat(f"/proc/{pid}").st_uid
            except FileNotFoundError:
                continue
            if CTX.sandbox_uid_base <= uid < CTX.sandbox_uid_base + 64:
                out.add(int(pid))
    return out


def _no_leftovers(before: set[int]) -> bool:
    # SIGKILL of a PID namespace is asynchronous: give the kernel a moment to reap.
    deadline = time.monotonic() + 3
    while _host_processes() - before:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("source", [a[1] for a in ATTACKS], ids=[a[0] for a in ATTACKS])
def test_attack_fails_closed(source, secret_db):
    before = _host_processes()
    res = run(source.replace("DB", repr(secret_db)))
    assert res.reward == 0.0
    assert res.failed, res
    assert "SECRET-DB-CONTENT" not in (res.error_detail or "")
    assert "sk-very-secret" not in (res.error_detail or "")
    assert not os.path.exists("/usr/rft-evil")
    assert _no_leftovers(before)
    assert res.execution_time < 12


def test_return_above_range_is_clamped():
    assert run("def grade(s, i):\n    return 5.0\n").reward == 1.0
    assert run("def grade(s, i):\n    return -3\n").reward == 0.0


def test_print_100mb_is_capped_and_grading_continues():
    res = run("def grade(s, i):\n    chunk = 'x' * 1024 * 1024\n    for _ in range(100):\n        print(chunk)\n    return 0.75\n")
    assert res.reward == 0.75, res


def test_syntax_error_and_missing_grade_are_validation_errors():
    with pytest.raises(GraderError) as exc:
        py("def grade(s, i) return 1")
    assert exc.value.param == "source"
    with pytest.raises(GraderError, match="grade"):
        py("def other(s, i):\n    return 1.0\n")


def test_runtime_load_error_flags_every_sample():
    spec = py("import not_a_module_anywhere\ndef grade(s, i):\n    return 1.0\n")
    results = grade_batch(spec, [{"output_text": "a"}] * 3, [{}] * 3, CTX)
    assert all(r.errors["python_grader_runtime_error"] for r in results)
    assert "not_a_module_anywhere" in results[0].error_detail


def test_warm_pool_recovers_after_a_timeout():
    spec = py("def grade(s, i):\n    while i['loop']:\n        pass\n    return i['v']\n")
    items = [{"loop": False, "v": 0.1}, {"loop": True, "v": 0.0}, {"loop": False, "v": 0.3}, {"loop": False, "v": 0.4}]
    results = grade_batch(spec, [{"output_text": ""}] * 4, items, CTX)
    assert [r.reward for r in results] == [0.1, 0.0, 0.3, 0.4]
    assert results[1].errors["python_grader_runtime_error"]


def test_samples_do_not_share_state():
    spec = py("import os\ndef grade(s, i):\n    n = len(os.listdir('.'))\n    open('f%d' % i['k'], 'w').write('x')\n    return 1.0 - n\n")
    results = grade_batch(spec, [{"output_text": ""}] * 6, [{"k": k} for k in range(6)], CTX)
    assert [r.reward for r in results] == [1.0] * 6


def test_packages_available():
    res = run("import numpy, scipy, sympy, rapidfuzz, jsonschema, yaml\ndef grade(s, i):\n    return float(numpy.mean([0.5, 0.5]))\n")
    assert res.reward == 0.5, res


def test_refused_without_sandbox(monkeypatch):
    from graders import sandbox

    monkeypatch.setattr(sandbox, "sandbox_status", lambda: (False, "test says no"))
    res = run("def grade(s, i):\n    return 1.0\n")
    assert res.errors["python_grader_server_error"]
    assert "test says no" in res.error_detail


CODE_CASES = [
    ("stdin-pass", "```python\nprint(int(input()) * 2)\n```", [{"input": "3\n", "output": "6\n"}, {"input": "5", "output": "10"}], 1.0),
    ("stdin-half", "```python\nprint(int(input()) + 1)\n```", [{"input": "1", "output": "2"}, {"input": "5", "output": "10"}], 0.5),
    ("asserts", "Here:\n```py\ndef add(a, b):\n    return a + b\n```", ["assert add(1, 2) == 3", {"assert": "assert add(2, 2) == 5"}], 0.5),
    ("no-fence", "def f():\n    return 1", ["assert f() == 1"], 1.0),
    ("syntax-error", "```python\ndef f(:\n```", ["assert f() == 1"], 0.0),
    ("infinite-loop", "```python\nwhile True: pass\n```", [{"input": "", "output": ""}, {"input": "", "output": ""}], 0.0),
    ("network", "```python\nimport socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)\nprint('ok')\n```", [{"input": "", "output": "ok"}], 0.0),
    ("huge-output", "```python\nimport sys\nwhile True: sys.stdout.write('x' * 65536)\n```", [{"input": "", "output": "x"}], 0.0),
    ("empty-output", "", [{"input": "", "output": ""}], 1.0),
]


@pytest.mark.parametrize(("text", "tests", "expected"), [c[1:] for c in CODE_CASES], ids=[c[0] for c in CODE_CASES])
def test_code_exec(text, tests, expected):
    spec = parse_grader({"type": "code_exec", "name": "c", "timeout_s": 1})
    res = grade(spec, {"output_text": text}, {"tests": tests}, CTX)
    assert res.reward == pytest.approx(expected), res
    assert not res.failed


def test_code_exec_batch():
    spec = parse_grader({"type": "code_exec", "name": "c", "timeout_s": 2})
    samples = [{"output_text": f"```python\nprint({k})\n```"} for k in range(6)]
    items = [{"tests": [{"input": "", "output": "3"}]}] * 6
    assert [r.reward for r in grade_batch(spec, samples, items, CTX)] == [0, 0, 0, 1, 0, 0]
