"""Red team: completions and grader sources written to cheat or to reach past their sample.

RL optimises whatever the grader rewards, so every loophole is found. Each test below is
an attack through the public graders API on the real sandbox, and asserts:

- the *honest score*: exactly what the output merits (a wrong answer 0.0, a partial one
  its fraction). Where an attack's success cannot show in a score by itself, the attack
  claims a prize when it works (prints the expected answer, or a python grader returns
  1.0), so a working attack fails the test;
- the host as it was (checked after every test by ``host_left_as_it_was``): no process
  of this suite's sandbox uids alive, no ``rft-sandbox-*`` cgroup of them left, no file
  they own or named ``rfthack*`` in the host's shared directories, no kernel keys
  charged to them;
- where it matters, that the other sample of the batch (run in the very sandbox the
  attack ran in) or another tenant grading at the same time scores exactly its honest
  score.
"""

import os
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from graders import GraderContext, GraderError, grade, grade_batch, parse_grader
from graders.sandbox import sandbox_status

# Skip only where the sandbox cannot exist (not root, tools missing), as test_sandbox.py.
_available, _reason = sandbox_status()
_cannot_exist = not _available and "probe" not in _reason
pytestmark = pytest.mark.skipif(_cannot_exist, reason=f"no sandbox here: {_reason}")

# A uid range of this suite's own (the defaults start at 61000), so the leftover checks
# see only the sandboxes these tests started.
UID_BASE, UID_COUNT = 70000, 16
# Shrunk limits so the whole red team runs in about a minute (defaults in brackets):
CTX = GraderContext(
    sandbox_wall_timeout_s=3,  # [20 s] a hanging or sleeping grader costs 3 s
    sandbox_cpu_seconds=2,  # [10 s] CPU burners meet RLIMIT_CPU inside the wall limit
    sandbox_memory_mb=384,  # [1024] memory attacks reach the cgroup cap after ~300 MB of writes
    sandbox_max_processes=16,  # [32] fork bombs hit the uid's RLIMIT_NPROC at once
    sandbox_max_file_mb=16,  # [64] /work and each file fill after 16 MB
    sandbox_workers=1,  # [2] one warm sandbox: sample 2 runs in the sandbox sample 1 attacked
    sandbox_uid_base=UID_BASE,
    sandbox_uid_count=UID_COUNT,
)
# A 1 s wall limit, for the attacks that hang (their result is the same, sooner).
CTX_QUICK = CTX.model_copy(update={"sandbox_wall_timeout_s": 1.0})
# Two warm sandboxes, for the tenant that grades alongside an attacker.
CTX2 = CTX.model_copy(update={"sandbox_workers": 2})
# One uid for everyone: the next sandbox surely gets the uid the attacker had.
CTX_ONE_UID = CTX.model_copy(update={"sandbox_uid_count": 1})
REPO = Path(__file__).resolve().parents[2]
SHARED_DIRS = ["/", "/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue", "/work", str(REPO), str(REPO / "tests")]

DOUBLE_STDIN = [{"input": "3", "output": "6"}, {"input": "21", "output": "42"}]
DOUBLE_ASSERTS = ["assert double(3) == 6", "assert double(21) == 42"]
HONEST = "print(2 * int(input()))\n"  # solves DOUBLE_STDIN


def code_spec(timeout_s: float = 1.0):
    # 1 s per case [5 s]: the honest solutions need milliseconds, hanging ones end sooner.
    return parse_grader({"type": "code_exec", "name": "rh", "timeout_s": timeout_s})


def completion(src: str) -> dict:
    return {"output_text": "Here is my answer:\n```python\n" + textwrap.dedent(src) + "```\n"}


def run_code(src: str, tests=None, ctx=CTX, timeout_s: float = 1.0):
    return grade(code_spec(timeout_s), completion(src), {"tests": tests or DOUBLE_STDIN}, ctx)


def batch_code(pairs, ctx=CTX, timeout_s: float = 1.0):
    """Grade [(source, tests), ...] as one batch (on one warm sandbox with CTX)."""
    samples = [completion(src) for src, _ in pairs]
    items = [{"tests": tests} for _, tests in pairs]
    return grade_batch(code_spec(timeout_s), samples, items, ctx)


def py(src: str):
    return parse_grader({"type": "python", "name": "rh", "source": textwrap.dedent(src)})


def batch_py(src: str, items, ctx=CTX):
    return grade_batch(py(src), [{"output_text": "x"}] * len(items), items, ctx)


def rewards(results) -> list[float]:
    return [r.reward for r in results]


def concurrently(*calls):
    """Run each (delay_s, fn) in its own thread: two tenants grading at the same time."""

    def later(delay, fn):
        time.sleep(delay)
        return fn()

    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(later, delay, fn) for delay, fn in calls]
        return [f.result() for f in futures]


# --- the host as it was --------------------------------------------------------------

def _in_range(uid: int) -> bool:
    return UID_BASE <= uid < UID_BASE + UID_COUNT


def _host_processes() -> set[int]:
    out = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if _in_range(os.stat(f"/proc/{pid}").st_uid):
                    out.add(int(pid))
            except FileNotFoundError:
                continue
    return out


def _leftover_cgroups() -> list[str]:
    found = []
    for root in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified"):
        for path in Path(root).glob("**/rft-sandbox-*"):
            suffix = path.name.rsplit("-", 1)[-1]
            if suffix.isdigit() and _in_range(int(suffix)):
                found.append(str(path))
    return found


def _foreign_files() -> list[str]:
    found = []
    for directory in SHARED_DIRS:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                owner = entry.stat(follow_symlinks=False).st_uid
            except OSError:
                continue
            if _in_range(owner) or "rfthack" in entry.name:
                found.append(entry.path)
    return found


def _kernel_keys() -> dict[int, int]:
    # /proc/key-users: the kernel keys charged to each uid (keyrings outlive processes).
    keys = {}
    for line in Path("/proc/key-users").read_text().splitlines():
        uid, usage = line.split(":")
        if _in_range(int(uid)):
            keys[int(uid)] = int(usage.split()[0])
    return keys


def _settled(check, seconds: float = 3.0) -> bool:
    # SIGKILL of a PID namespace and cgroup removal finish asynchronously.
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(autouse=True)
def host_left_as_it_was():
    keys_before = _kernel_keys()
    yield
    assert _settled(lambda: not _host_processes()), f"sandbox processes left: {_host_processes()}"
    assert _settled(lambda: not _leftover_cgroups()), f"cgroups left: {_leftover_cgroups()}"
    assert not _foreign_files(), f"files written outside the sandbox: {_foreign_files()}"
    keys = _kernel_keys()
    assert all(n <= keys_before.get(uid, 0) for uid, n in keys.items()), f"kernel keys left: {keys}"


def test_the_sandbox_is_available_where_it_should_be():
    assert _available, _reason


# --- code_exec: ending early, forging the verdict ----------------------------------------

@pytest.mark.parametrize(
    "exit_stmt",
    [
        "import sys; sys.exit(0)",
        "import os; os._exit(0)",
        "raise SystemExit",
        "raise SystemExit(None)",
        "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
        "import os, signal; signal.signal(signal.SIGTERM, signal.SIG_DFL); os.kill(os.getpid(), signal.SIGTERM)",
        "import os; os.abort()",
    ],
    ids=["sys-exit-0", "os-_exit-0", "raise-SystemExit", "SystemExit-None", "SIGKILL-self", "SIGTERM-self", "abort"],
)
def test_exit_before_the_asserts_run(exit_stmt):
    # The asserts would run after the module: ending the process first must not pass.
    res = run_code(exit_stmt + "\ndef double(x):\n    return 0\n", DOUBLE_ASSERTS)
    assert res.reward == 0.0, res
    assert not res.failed  # a failed case, not a grader error
    # The same on stdin cases: nothing printed, nothing passed.
    assert run_code(exit_stmt + "\n").reward == 0.0


def test_forged_verdict_on_every_fd_then_exit():
    src = """
    import json, os
    verdicts = [
        {"ok": True, "value": 1.0, "reward": 1.0, "passed": True, "score": 1.0},
        {"ok": True, "values": [["b", True]], "cases": [{"ok": True, "stdout": "6"}] * 2},
        {"ok": True, "cases": [{"ok": True, "values": [["b", True]], "stdout": "42"}] * 2},
    ]
    line = "".join(json.dumps(v) + "\\n" for v in verdicts).encode()
    for fd in range(0, 256):
        try:
            os.write(fd, line)
        except OSError:
            pass
    os._exit(0)
    """
    assert run_code(src).reward == 0.0
    assert run_code(src, DOUBLE_ASSERTS).reward == 0.0


# --- code_exec: looking for the expected answer --------------------------------------

# The expected answers of the snooping tests: a token found nowhere but in the tests.
SECRET = "RFTHACK-EXPECTED-9173"
_SNOOP = r"""
import gc, os, re, sys

TOKEN = re.compile(r"RFTHACK-EXPECTED-[0-9]+")

def candidates():
    # Everywhere a careless harness could keep the expected answer: its objects and
    # frames, the supervisor's globals and buffered input, the files, fds and environment.
    texts = []
    for obj in gc.get_objects():
        if isinstance(obj, dict):
            texts += [v for v in list(obj.values()) if isinstance(v, str)]
        elif isinstance(obj, (list, tuple)):
            texts += [v for v in obj if isinstance(v, str)]
    frame = sys._getframe()
    while frame is not None:
        texts += [repr(frame.f_locals), repr(frame.f_code.co_consts)]
        frame = frame.f_back
    main = sys.modules.get("__main__")
    texts.append(repr({k: v for k, v in vars(main).items() if not k.startswith("__")}) if main else "")
    host_in = getattr(main, "HOST_IN", None)
    if host_in is not None:
        texts.append(repr(host_in.peek(1 << 16)))
    for root, dirs, files in os.walk("/"):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/usr", "/opt")]
        for name in files:
            try:
                with open(os.path.join(root, name), "rb") as fh:
                    texts.append(repr(fh.read(1 << 20)))
            except OSError:
                pass
    for fd in range(0, 64):
        try:
            texts.append(repr(os.read(fd, 1 << 16)))
        except OSError:
            pass
    texts.append(repr(dict(os.environ)))
    return [m.group() for text in texts for m in TOKEN.finditer(text)]

FOUND = candidates()
"""


def test_expected_output_is_nowhere_in_the_sandbox_for_stdin_cases():
    src = _SNOOP + "print(FOUND[0] if FOUND else '')\n"
    assert run_code(src, [{"input": "3", "output": SECRET}]).reward == 0.0


def test_expected_value_is_nowhere_in_the_sandbox_for_asserts():
    src = _SNOOP + "def double(x):\n    return FOUND[0] if FOUND else None\n"
    tests = [f"assert double(3) == {SECRET!r}", f"assert double(4) in [{SECRET!r}]", f"assert {SECRET!r} == double(5)"]
    assert run_code(src, tests).reward == 0.0


def test_rewriting_the_harness_expressions_gains_nothing():
    # The solution finds the expressions the host asked for and swaps them for `True`:
    # the host still compares the returned values with 6 and 42 itself.
    src = """
    import gc
    for obj in gc.get_objects():
        if isinstance(obj, list) and obj and all(isinstance(s, str) and "double(" in s for s in obj):
            obj[:] = ["True"] * len(obj)
        if isinstance(obj, dict) and isinstance(obj.get("exprs"), list):
            obj["exprs"] = ["True"] * len(obj["exprs"])
    def double(x):
        return 0
    """
    assert run_code(src, DOUBLE_ASSERTS).reward == 0.0


# --- code_exec: objects that claim to be equal -------------------------------------------

_ALWAYS_EQUAL = {
    "object": "class X:\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n    __hash__ = lambda s: 0\n"
    "    __bool__ = lambda s: True\n    __len__ = lambda s: 1\nVALUE = X()\n",
    "int-subclass": "class X(int):\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n"
    "    __hash__ = lambda s: 0\nVALUE = X(0)\n",
    "float-subclass": "class X(float):\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n"
    "    __lt__ = lambda s, o: True\n    __abs__ = lambda s: 0.0\n    __sub__ = lambda s, o: 0.0\nVALUE = X(0)\n",
    "str-subclass": "class X(str):\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n"
    "    __hash__ = lambda s: 0\nVALUE = X('')\n",
    "list-subclass": "class X(list):\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n"
    "    __len__ = lambda s: 1\n    __bool__ = lambda s: True\nVALUE = X()\n",
    "list-of-always-equal": "class E:\n    __eq__ = lambda s, o: True\nVALUE = [E(), E()]\n",
    "dict-subclass": "class X(dict):\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\nVALUE = X()\n",
    "dict-of-always-equal": "class E:\n    __eq__ = lambda s, o: True\n    __hash__ = lambda s: 0\n"
    "VALUE = {'a': E(), 'b': E()}\n",
    "tuple-subclass": "class X(tuple):\n    __eq__ = lambda s, o: True\nVALUE = X()\n",
    "bool-like-int": "class X(int):\n    __bool__ = lambda s: True\n    __eq__ = lambda s, o: True\nVALUE = X(1)\n",
    "numpy-array": "import numpy\nVALUE = numpy.array([6, 42, 1, 2])\n",
    "numpy-scalar": "import numpy\nVALUE = numpy.int64(0)\n",
    "numpy-bool": "import numpy\nVALUE = numpy.True_\n",
    "fake-class-attr": "class X:\n    __class__ = int\n    __eq__ = lambda s, o: True\nVALUE = X()\n",
}
_EQ_TESTS = [
    "assert double(3) == 6",
    "assert double(21) == [1, 2]",
    "assert double(2) == {'a': 1, 'b': 2}",
    "assert abs(double(4) - 8.0) < 1e-9",
    "assert double(5) == 'ten'",
    "assert not double(6) != 12",
]


@pytest.mark.parametrize("value_src", list(_ALWAYS_EQUAL.values()), ids=list(_ALWAYS_EQUAL))
def test_always_equal_returns_score_zero(value_src):
    res = run_code(value_src + "def double(x):\n    return VALUE\n", _EQ_TESTS)
    assert res.reward == 0.0, res


def test_monkeypatched_harness_encoders_gain_nothing():
    # The harness shares the solution's process: patch what it encodes values with
    # before it runs. Whatever comes out, the host decodes plain values and compares.
    src = """
    import builtins, json, sys
    class X:
        __eq__ = lambda s, o: True
        __repr__ = lambda s: "6"
        __str__ = lambda s: "6"
    builtins.type = lambda *a: int if len(a) == 1 else type(*a)
    builtins.isinstance = lambda *a: True
    builtins.repr = lambda o: "6"
    builtins.str = lambda *a: "6"
    json.dumps = lambda *a, **k: '{"ok": true, "values": [["b", true], ["b", true]]}'
    fake = type(sys)("json")
    fake.dumps = json.dumps
    fake.loads = lambda *a, **k: {"ok": True}
    sys.modules["json"] = fake
    sys.modules["__main__"].json = fake
    def double(x):
        return X()
    """
    assert run_code(src, DOUBLE_ASSERTS).reward == 0.0


def test_ieee_and_oversized_values():
    src = """
    def double(x):
        return {3: float("nan"), 21: float("inf"), 4: int("9" * 4000) ** 3}.get(x, x)
    import sys
    sys.setrecursionlimit(10000)
    deep = []
    for _ in range(200):
        deep = [deep]
    def nested(x):
        return deep
    """
    tests = ["assert double(3) == 6", "assert not double(3) != 6", "assert abs(double(3) - 6) < 1e-9",
             "assert double(21) > 1e300", "assert double(4) == 0", "assert nested(1) == []"]  # fmt: skip
    # inf > 1e300 is honestly true: 1 of 6.
    assert run_code(src, tests).reward == pytest.approx(1 / 6)


# --- code_exec: expected values the solution would compute itself --------------------

@pytest.mark.parametrize(
    ("cheat", "test"),
    [
        ("range = lambda *a: []\ndef first(n):\n    return []\n", "assert first(5) == list(range(5))"),
        ("class math:\n    factorial = staticmethod(lambda n: 0)\ndef fact(n):\n    return 0\n",
         "assert fact(5) == math.factorial(5)"),
        ("class math:\n    gamma = staticmethod(lambda n: 0.0)\ndef g(n):\n    return 0.0\n",
         "assert abs(g(3) - math.gamma(3)) < 1e-9"),
        ("def split_words(s):\n    return 'a b'.split()\n", "assert split_words('a b c') == 'a b c'.split()"),
        ("ord = lambda c: 0\ndef code(c):\n    return 0\n", "assert code('a') == ord('a')"),
        ("Counter = lambda *a: {}\ndef count(xs):\n    return {}\n", "assert count([1, 1, 2]) == Counter([1, 1, 2])"),
        ("def f(x):\n    return 0\ndef g(x):\n    return 0\n", "assert f(3) == g(3)"),
    ],
    ids=["shadow-range", "shadow-math-module", "shadow-math-in-arith", "str-method", "shadow-ord",
         "shadow-import", "two-solution-sides"],
)
def test_expected_side_computed_by_the_solution_is_refused(cheat, test):
    # Found by this suite: such a leaf ran in the solution's process, which redefined
    # it to agree with its own wrong answer and scored 1.0.
    res = run_code(cheat, [test])
    assert res.reward == 0.0, res
    assert res.errors["other_error"], res
    with pytest.raises(GraderError, match="names nothing of the solution's|both sides"):
        parse_grader({"type": "code_exec", "name": "rh", "tests": [test]})


def test_honest_asserts_still_split_and_pass():
    src = "import math\ndef fact(n):\n    return math.factorial(n)\ndef first(n):\n    return list(range(n))\n"
    tests = ["assert fact(5) == 120", "assert first(3) == [0, 1, 2]", "assert 0 < fact(3) < 10",
             "assert math.factorial(fact(3)) == 720", "assert sorted(first(3), reverse=True) == [2, 1, 0]",
             "assert fact(4) == 25"]  # fmt: skip
    assert run_code(src, tests).reward == pytest.approx(5 / 6)


# --- code_exec: output normalisation -------------------------------------------------

@pytest.mark.parametrize(
    ("printed", "expected"),
    [
        (r"'6\r\n'", 1.0),  # CRLF is a newline
        (r"'6   \n\n\n'", 1.0),  # trailing whitespace and blank lines do not count
        (r"'6\u00a0'", 1.0),  # trailing Unicode space is trailing whitespace too
        (r"'wrong\r6'", 0.0),  # a terminal shows "6"; the text is not "6"
        (r"'7\b6'", 0.0),  # backspace
        (r"'\x1b[2K\r6'", 0.0),  # ANSI erase line
        (r"'\uff16'", 0.0),  # fullwidth digit six
        (r"'6\u200b'", 0.0),  # zero-width space
        (r"'\ufeff6'", 0.0),  # byte-order mark
        (r"'6\x00'", 0.0),  # NUL
        (r"' 6'", 0.0),  # leading space counts
        (r"'6\n6'", 0.0),  # an extra line
        (r"'\u0666'", 0.0),  # Arabic-Indic digit six
    ],
    ids=["crlf", "trailing-ws", "nbsp", "cr-overwrite", "backspace", "ansi", "fullwidth", "zwsp", "bom", "nul",
         "leading-space", "extra-line", "arabic-digit"],
)
def test_output_normalisation_tricks(printed, expected):
    src = f"import sys\nsys.stdout.write({printed} if input() == '3' else '')\n"
    res = run_code(src, [{"input": "3", "output": "6"}])
    assert res.reward == expected, res


@pytest.mark.parametrize(
    "raw", [b"\xc0\xb6", b"\xe0\x80\xb6", b"6\xff", b"\xef\xbc\x96", b"\x36\xcc\x81"],
    ids=["overlong-2", "overlong-3", "trailing-invalid", "fullwidth-utf8", "combining-accent"],
)
def test_raw_bytes_that_might_decode_to_the_answer(raw):
    src = f"import os\nos.write(1, {raw!r})\n"
    assert run_code(src, [{"input": "3", "output": "6"}]).reward == 0.0


# --- code_exec: state that would reach the next sample ---------------------------------

def _planter_and_prober(plant: str, probe: str, ctx=CTX):
    """Sample 1 plants (and prints "planted" when it could); sample 2, in the same
    sandbox, solves the task honestly unless it finds the plant."""
    results = batch_code([(plant, [{"input": "", "output": "planted"}]), (probe, DOUBLE_STDIN)], ctx)
    return rewards(results)


def test_files_left_for_the_next_sample():
    plant = """
    import os
    for path in ("/work/rfthack-answer", "rfthack-answer", "/tmp/rfthack-answer", "/dev/shm/rfthack-answer",
                 "/rfthack-answer", "/opt/site/rfthack.py", "/usr/lib/rfthack-answer"):
        try:
            with open(path, "w") as fh:
                fh.write("6")
        except OSError:
            pass
    print("planted" if os.path.exists("/work/rfthack-answer") else "not planted")
    """
    probe = """
    import os
    leak = any(os.path.exists(p) for p in ("/work/rfthack-answer", "rfthack-answer", "/tmp/rfthack-answer",
                                            "/dev/shm/rfthack-answer", "/rfthack-answer", "/opt/site/rfthack.py"))
    print("LEAK" if leak or os.listdir("/work") else 2 * int(input()))
    """
    assert _planter_and_prober(plant, probe) == [1.0, 1.0]


# A daemon that strikes only once the sample that started it is over (its pipe reaches
# EOF): then it SIGKILLs every process of the uid, i.e. the next sample's, again and again.
_DAEMON = """
import os, signal, time
_r, _w = os.pipe()
if os.fork() == 0:
    os.close(_w)
    os.setsid()
    if os.fork() == 0:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_IGN)
        os.read(_r, 1)
        while True:
            os.kill(-1, signal.SIGKILL)
            time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)
os.close(_r)
"""


def test_survivor_process_atexit_and_threads_cannot_reach_the_next_sample():
    plant = _DAEMON + textwrap.dedent("""
    import atexit, os, signal, threading, time
    atexit.register(os.kill, -1, signal.SIGKILL)
    def later():
        time.sleep(0.3)
        os.kill(-1, signal.SIGKILL)
    threading.Thread(target=later).start()  # not a daemon thread: exit would wait for it
    print("planted")
    """)
    probe = "import time\ntime.sleep(0.6)\n" + HONEST
    assert _planter_and_prober(plant, probe) == [1.0, 1.0]


def test_sysv_ipc_does_not_reach_the_next_sample():
    plant = """
    import ctypes, struct
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    KEY, CREATE = 0x52464854, 0o1000 | 0o666
    shm = libc.shmget(KEY, 4096, CREATE)
    if shm >= 0:
        ctypes.memmove(libc.shmat(shm, None, 0), b"6", 1)
    queue = libc.msgget(KEY, CREATE)
    sent = libc.msgsnd(queue, struct.pack("l", 1) + b"6", 1, 0x800) if queue >= 0 else -1
    sem = libc.semget(KEY, 1, CREATE)
    print("planted" if shm >= 0 and sent == 0 and sem >= 0 else "not planted")
    """
    probe = """
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    KEY = 0x52464854
    found = [libc.shmget(KEY, 0, 0), libc.msgget(KEY, 0), libc.semget(KEY, 0, 0)]
    print("LEAK" if any(f >= 0 for f in found) else 2 * int(input()))
    """
    assert _planter_and_prober(plant, probe) == [1.0, 1.0]


def test_abstract_socket_left_in_flight_does_not_reach_the_next_sample():
    # Found by this suite: a socket sent over itself outlives its process until the
    # kernel's unix GC runs; samples shared one network namespace, so the next sample
    # saw the name bound (a channel of as many bits as names).
    plant = """
    import array, socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\\0rfthack-flag")
    fds = array.array("i", [s.fileno()])
    for _ in range(3):
        s.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)], 0, "\\0rfthack-flag")
    print("planted")
    """
    probe = """
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.bind("\\0rfthack-flag")
        print(2 * int(input()))
    except OSError:
        print("LEAK")
    """
    assert _planter_and_prober(plant, probe) == [1.0, 1.0]


_KEYRING = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
ADD_KEY, KEYCTL = {"x86_64": (248, 250), "aarch64": (217, 219)}[os.uname().machine]
RINGS = (-4, -5, -3)  # user, user session, session keyrings
def plant():
    return sum(libc.syscall(ADD_KEY, b"user", b"rfthack", b"6", 1, ring) >= 0 for ring in RINGS)
def found():
    return sum(libc.syscall(KEYCTL, 10, ring, b"user", b"rfthack", 0) >= 0 for ring in RINGS)
"""


def test_kernel_keyrings_reach_neither_the_next_sample_nor_the_next_tenant():
    # Found by this suite: keys added to the uid's keyrings outlived the sample and the
    # sandbox; the next sample, and the next sandbox leasing the uid (another tenant's),
    # read them. Now the keyring calls fail as on a kernel without keys.
    src = _KEYRING + "def grade(s, i):\n    return (plant() if i['plant'] else found()) / 10\n"
    first = batch_py(src, [{"plant": True}, {"plant": False}], CTX_ONE_UID)
    second_tenant = batch_py(src, [{"plant": False}], CTX_ONE_UID)
    assert rewards(first) + rewards(second_tenant) == [0.0, 0.0, 0.0], first + second_tenant
    assert not any(r.failed for r in first + second_tenant)
    # The same from a completion.
    plant = _KEYRING + "print('planted' if plant() else 'not planted')\n"
    probe = _KEYRING + "print('LEAK' if found() else 2 * int(input()))\n"
    assert _planter_and_prober(plant, probe, CTX_ONE_UID) == [0.0, 1.0]


# --- code_exec: resources ------------------------------------------------------------

def test_memfd_beyond_the_memory_cap_fails_that_sample_only():
    # In-memory files are no process's address space: only the sandbox cgroup caps them.
    # The prize is printed only when 768 MB were written (twice the cap).
    attack = """
    import os
    chunk, fds = b"x" * (1 << 20), []
    for _ in range(48):
        fd = os.memfd_create("rfthack")
        for _ in range(16):
            os.write(fd, chunk)
        fds.append(fd)
    print(2 * int(input()))
    """
    results = batch_code([(attack, DOUBLE_STDIN), (HONEST, DOUBLE_STDIN)], timeout_s=3.0)
    assert rewards(results) == [0.0, 1.0], results
    assert "SIGKILL" in (results[0].error_detail or "") or results[0].errors["python_grader_runtime_error"]


def test_filling_work_and_tmp_is_capped():
    attack = """
    import os
    written = 0
    for path in ("/work/rfthack-big", "/tmp/rfthack-big", "/rfthack-big"):
        try:
            with open(path, "wb") as fh:
                while written < (64 << 20):
                    fh.write(b"x" * (1 << 20))
                    written += 1 << 20
        except OSError:
            pass
    print(2 * int(input()) if written >= (64 << 20) else "capped")
    """
    results = batch_code([(attack, DOUBLE_STDIN), (HONEST, DOUBLE_STDIN)], timeout_s=3.0)
    assert rewards(results) == [0.0, 1.0], results


def test_huge_output_fails_only_its_case():
    src = """
    import sys
    x = int(input())
    if x == 3:
        while True:
            sys.stdout.write("6\\n" * 65536)
    print(2 * x)
    """
    assert run_code(src).reward == 0.5


# --- code_exec: reaching the supervisor or the host --------------------------------------

_PRIZE_IF = "print(2 * int(input()) if WON else 'no')\n"


@pytest.mark.parametrize(
    "attack",
    [
        # ptrace and process_vm_writev into the supervisor (PID 1 of the namespace).
        """
        import ctypes, sys
        libc = ctypes.CDLL(None, use_errno=True)
        WON = libc.ptrace(16, 1, 0, 0) == 0 or libc.ptrace(0x4206, 1, 0, 0) == 0
        class IOV(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
        # Forked from the supervisor: its `sys` module lies at the same address there.
        buf = ctypes.create_string_buffer(64)
        local, remote = IOV(ctypes.cast(buf, ctypes.c_void_p), 64), IOV(id(sys), 64)
        WON = WON or libc.process_vm_readv(1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) > 0
        WON = WON or libc.process_vm_writev(1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) > 0
        """,
        # Signals to the supervisor, the parent, everyone.
        """
        import os, signal
        WON = False
        for target in (1, os.getppid(), -1):
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                try:
                    if target != -1:
                        os.kill(target, sig)
                        WON = True
                except PermissionError:
                    pass
        os.kill(-1, signal.SIGKILL)
        """,
        # Root back.
        """
        import ctypes, os
        WON = False
        for call in (lambda: os.setuid(0), lambda: os.seteuid(0), lambda: os.setresuid(0, 0, 0),
                     lambda: os.setgid(0), lambda: os.setgroups([0])):
            try:
                call()
                WON = True
            except OSError:
                pass
        WON = WON or os.getuid() == 0 or os.geteuid() == 0
        """,
        # /proc, the host's files, the environment.
        """
        import os
        WON = bool(os.environ.keys() - {"PATH", "HOME", "LANG", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                         "PYTHONDONTWRITEBYTECODE", "LC_CTYPE"})
        for path in ("/proc/1/environ", "/proc/self/mountinfo", "/etc/passwd", "/etc/shadow", "/root",
                     "/home", "/sys/fs/cgroup", "/var/lib", "/dev/shm", "/dev/mem", "/dev/kmsg"):
            WON = WON or os.path.exists(path)
        """,
        # Mounts, new namespaces, and a user namespace to escape the chroot.
        """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        os.mkdir("/work/m")
        WON = libc.mount(b"proc", b"/work/m", b"proc", 0, None) == 0
        WON = WON or libc.mount(b"none", b"/work/m", b"tmpfs", 0, None) == 0
        WON = WON or libc.umount2(b"/usr", 2) == 0 or libc.umount2(b"/", 2) == 0
        for flag in (0x00020000, 0x40000000, 0x20000000):  # NEWNS, NEWNET, NEWPID
            WON = WON or libc.unshare(flag) == 0
        if libc.unshare(0x10000000) == 0:  # NEWUSER: caps in a namespace of our own
            try:
                os.mkdir("/work/jail")
                os.chroot("/work/jail")
                for _ in range(30):
                    os.chdir("..")
                os.chroot(".")
                WON = WON or bool({"proc", "home", "root", "var", "sys", "boot"} & set(os.listdir("/")))
            except OSError:
                pass
        """,
        # Raise the limits back.
        """
        import resource
        WON = False
        for name in ("RLIMIT_NPROC", "RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NOFILE"):
            limit = getattr(resource, name)
            soft, hard = resource.getrlimit(limit)
            try:
                resource.setrlimit(limit, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
                WON = WON or hard != resource.RLIM_INFINITY
            except (ValueError, OSError):
                pass
        """,
        # The network, loopback included.
        """
        import socket
        WON = False
        for addr in (("127.0.0.1", 22), ("1.1.1.1", 53), ("169.254.169.254", 80)):
            try:
                socket.create_connection(addr, timeout=0.3)
                WON = True
            except OSError:
                pass
        """,
    ],
    ids=["ptrace-supervisor", "signal-supervisor", "setuid-0", "read-host", "mount-and-escape", "raise-rlimits",
         "network"],
)
def test_attacks_on_the_supervisor_and_host_fail_and_the_next_sample_grades(attack):
    results = batch_code([(textwrap.dedent(attack) + _PRIZE_IF, DOUBLE_STDIN), (HONEST, DOUBLE_STDIN)])
    assert rewards(results) == [0.0, 1.0], results
    assert not any(r.failed for r in results), results  # the sandbox itself did not die


def test_fork_bomb_does_not_hurt_another_tenant():
    # Tenant A's completions fork to the process cap and spin; tenant B, grading at the
    # same time on its own sandboxes, forks one child per sample and must score exactly.
    bomb = """
    import os, time
    kids = 0
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        try:
            if os.fork() == 0:
                while True:
                    pass
            kids += 1
        except OSError:
            pass
    print(kids)
    """
    tenant_b = """
    import os
    def grade(s, i):
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        _, status = os.waitpid(pid, 0)
        return i["v"] if os.waitstatus_to_exitcode(status) == 7 else 0.0
    """
    values = [{"v": round(0.1 * k, 1)} for k in range(1, 7)]
    a, b = concurrently(
        (0.0, lambda: batch_code([(bomb, DOUBLE_STDIN[:1])] * 2, CTX2, timeout_s=2.5)),
        (0.5, lambda: batch_py(tenant_b, values, CTX2)),
    )
    assert rewards(a) == [0.0, 0.0], a
    assert rewards(b) == [v["v"] for v in values], b
    assert not any(r.failed for r in b), b


# --- python graders: the grader author against the host and other tenants --------------

def test_top_level_patches_threads_and_daemons_die_with_each_sample():
    # The grader's top level runs again in every sample's child: it patches what the
    # harness ends the child with, starts a CPU-burning thread and plants the daemon.
    src = _DAEMON + textwrap.dedent("""
    import builtins, os, sys, threading, time
    builtins.open = lambda *a, **k: None
    sys.exit = os._exit = lambda *a: None
    def burn():
        while True:
            pass
    threading.Thread(target=burn, daemon=True).start()
    def grade(s, i):
        time.sleep(i["sleep"])
        return i["v"]
    """)
    items = [{"sleep": 0.0, "v": 0.2}, {"sleep": 0.5, "v": 0.4}, {"sleep": 0.5, "v": 0.6}]
    results = grade_batch(parse_grader({"type": "python", "name": "rh", "source": src}),
                          [{"output_text": "x"}] * 3, items, CTX)
    assert rewards(results) == [0.2, 0.4, 0.6], results


def test_top_level_infinite_loop_fails_every_sample_and_leaves_nothing():
    src = "import os\nif os.fork() == 0:\n    os.setsid()\nwhile True:\n    pass\ndef grade(s, i):\n    return 1.0\n"
    results = batch_py(src, [{}] * 3, CTX_QUICK)
    assert rewards(results) == [0.0, 0.0, 0.0]
    assert all(r.errors["python_grader_runtime_error"] for r in results)


def test_cpu_burners_and_a_process_tree_do_not_outlive_the_sandbox():
    # Threads and processes that try to keep the sandbox (and its CPU) busy after the
    # grade returned and after the pool closed.
    src = """
    import os, signal, threading, time
    def burn():
        while True:
            pass
    def spawn():
        # A process tree that never returns into the harness (its copy of fd 3 would
        # report a failure first), within the process cap (threads count too).
        try:
            if os.fork() == 0:
                os.setsid()
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                try:
                    if os.fork() == 0:
                        os.execv("/usr/bin/sleep", ["sleep", "1000"])
                finally:
                    burn()
        except OSError:
            pass
    def grade(s, i):
        if i["attack"]:
            for _ in range(2):
                threading.Thread(target=burn, daemon=True).start()
            for _ in range(5):
                spawn()
        return i["v"]
    """
    start = time.monotonic()
    results = batch_py(src, [{"attack": True, "v": 0.3}, {"attack": False, "v": 0.7}, {"attack": True, "v": 0.5}])
    assert rewards(results) == [0.3, 0.7, 0.5], results
    assert time.monotonic() - start < 10


def test_grader_reaching_the_supervisor_or_the_host_fails():
    src = """
    import ctypes, os, resource, signal
    libc = ctypes.CDLL(None, use_errno=True)
    def grade(s, i):
        won = libc.ptrace(16, 1, 0, 0) == 0 or libc.ptrace(0x4206, 1, 0, 0) == 0
        for target in (1, os.getppid()):
            try:
                os.kill(target, signal.SIGSTOP)
                won = True
            except PermissionError:
                pass
        for path in ("/opt/site/numpy/__init__.py", "/opt/site/rfthack.py", "/usr/lib/rfthack", "/rfthack",
                     "/etc/ld.so.cache", "/dev/rfthack"):
            try:
                open(path, "a").close()
                won = True
            except OSError:
                pass
        try:
            resource.setrlimit(resource.RLIMIT_NPROC, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            won = True
        except (ValueError, OSError):
            pass
        won = won or libc.unshare(0x10000000) == 0 or libc.mount(b"x", b"/work", b"tmpfs", 0, None) == 0
        return 1.0 if won else i["v"]
    """
    results = batch_py(src, [{"v": 0.0}, {"v": 0.25}])
    assert rewards(results) == [0.0, 0.25], results
    assert not any(r.failed for r in results)


def test_grader_sysv_ipc_does_not_persist_across_samples():
    src = """
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    KEY = 0x52464855
    def grade(s, i):
        if i["plant"]:
            ok = libc.shmget(KEY, 1 << 20, 0o1000 | 0o666) >= 0 and libc.msgget(KEY, 0o1000 | 0o666) >= 0
            return 0.5 if ok else 0.0
        return 1.0 if libc.shmget(KEY, 0, 0) >= 0 or libc.msgget(KEY, 0) >= 0 else 0.0
    """
    assert rewards(batch_py(src, [{"plant": True}, {"plant": False}, {"plant": False}])) == [0.5, 0.0, 0.0]


def test_grader_memfd_beyond_the_cap_fails_with_a_runtime_error():
    # The attack reports how much it wrote: had the cgroup not held, it would return 1.0.
    src = """
    import os
    def grade(s, i):
        if not i["attack"]:
            return i["v"]
        chunk, fds, written = b"x" * (1 << 20), [], 0
        while written < (768 << 20):
            fd = os.memfd_create("rfthack")
            for _ in range(16):
                os.write(fd, chunk)
                written += len(chunk)
            fds.append(fd)
        return written / (768 << 20)
    """
    results = batch_py(src, [{"attack": True}, {"attack": False, "v": 0.5}])
    assert rewards(results) == [0.0, 0.5], results
    assert results[0].errors["python_grader_runtime_error"], results[0]
    assert "memory" in results[0].error_detail, results[0]


def test_grader_exhausting_its_uid_quota_does_not_hurt_another_tenant():
    bomb = """
    import os, time
    def grade(s, i):
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            try:
                if os.fork() == 0:
                    time.sleep(5)
                    os._exit(0)
            except OSError:
                time.sleep(0.01)
        return 0.9
    """
    honest = "import os\ndef grade(s, i):\n    if os.fork() == 0:\n        os._exit(0)\n    os.wait()\n    return i['v']\n"
    values = [{"v": round(0.1 * k, 1)} for k in range(1, 7)]
    a, b = concurrently((0.0, lambda: batch_py(bomb, [{}] * 2, CTX2)), (0.5, lambda: batch_py(honest, values, CTX2)))
    assert rewards(a) == [0.9, 0.9], a  # it may fork as much as its own quota allows
    assert rewards(b) == [v["v"] for v in values], b


def test_grader_cannot_read_another_sandboxs_work():
    writer = """
    import time
    def grade(s, i):
        with open("/work/rfthack-secret", "w") as fh:
            fh.write("tenant A's data")
        time.sleep(1.5)
        return 0.4
    """
    reader = """
    import os
    def grade(s, i):
        for root, dirs, files in os.walk("/"):
            dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/usr", "/opt")]
            if "rfthack-secret" in files:
                return 1.0
        return 0.0 if not os.path.exists("/proc") else 1.0
    """
    a, b = concurrently((0.0, lambda: batch_py(writer, [{}])), (0.6, lambda: batch_py(reader, [{}])))
    assert rewards(a) == [0.4] and rewards(b) == [0.0], (a, b)


# --- the test author against the host: checks and extraction stay cheap -----------------

@pytest.mark.parametrize(
    ("test", "answer", "why"),
    [
        # 10 ** 2000000: seconds of the host's CPU (10 ** 10 ** 9 would be hours).
        ("assert f(1) == round(1, -2000000)", "0", "too costly"),
        # sum() with a list start concatenates quadratically.
        ("assert f(1) == len(sum([[0] * 1000] * 999, []))", "999000", "arithmetic on a list"),
        # Nine million comparisons from a few bytes of shared nested lists.
        ("assert f(1) != [[0] * 3000] * 3000", "0", "too long"),
    ],
    ids=["round-huge-digits", "sum-concatenation", "shared-nested-lists"],
)
def test_costly_host_checks_are_refused(test, answer, why):
    # Found by this suite: these ran in the grading process (the API's, for
    # /graders/run) holding the GIL, and scored 1.0 after seconds; bigger constants hung
    # it for hours or exhausted its memory.
    start = time.monotonic()
    res = run_code(f"def f(x):\n    return {answer}\n", [test])
    assert res.reward == 0.0, res
    assert why in res.error_detail, res
    assert time.monotonic() - start < 5


def test_a_line_of_backticks_is_extracted_in_linear_time():
    # Found by this suite: the fence regex backtracked quadratically over a completion of
    # backticks (45 s of the grading process for 200 kB).
    start = time.monotonic()
    res = grade(code_spec(), {"output_text": "`" * 200_000}, {"tests": DOUBLE_STDIN}, CTX)
    assert res.reward == 0.0
    assert time.monotonic() - start < 5


def test_two_tenants_concurrently_one_attacking_every_sample():
    # Tenant A's batch: every sample attacks (fork bombs, memfd, kill -1, survivors);
    # tenant B's batch, graded at the same time, is half right and must score exactly.
    attacks = [
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        "import os\nfds = [os.memfd_create('x') for _ in range(40)]\nfor fd in fds:\n    os.write(fd, b'x' * (16 << 20))\n",
        "import os, signal\nos.kill(-1, signal.SIGKILL)\n",
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(30)\n",
    ]
    honest = [(HONEST, DOUBLE_STDIN), ("print(int(input()) + 3)\n", DOUBLE_STDIN)] * 3  # 1.0, 0.5 (3 + 3 = 6)
    a, b = concurrently(
        (0.0, lambda: batch_code([(src, DOUBLE_STDIN) for src in attacks], CTX2, timeout_s=1.5)),
        (0.3, lambda: batch_code(honest, CTX2)),
    )
    assert rewards(a) == [0.0] * 4, a
    assert rewards(b) == [1.0, 0.5] * 3, b
