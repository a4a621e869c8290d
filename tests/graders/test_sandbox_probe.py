"""A failed sandbox probe is retried, never remembered for the life of the process (a
probe that failed while another tenant exhausted something must not disable python
graders until restart)."""

import time

from graders import sandbox


def test_failed_probe_is_retried_and_success_is_kept(monkeypatch):
    answers = iter([(False, "busy"), (True, "fine")])
    calls = []

    def probe():
        calls.append(1)
        return next(answers)

    monkeypatch.setattr(sandbox, "_run_probe", probe)
    monkeypatch.setattr(sandbox, "_probe", None)
    monkeypatch.setattr(sandbox, "PROBE_RETRY_S", 0.2)  # shrunk from seconds: the test waits it out
    assert sandbox.sandbox_status() == (False, "busy")
    assert sandbox.sandbox_status() == (False, "busy")  # within the retry delay: not re-probed
    assert len(calls) == 1
    time.sleep(0.25)
    assert sandbox.sandbox_status() == (True, "fine")
    time.sleep(0.25)
    assert sandbox.sandbox_status() == (True, "fine")  # a success is kept
    assert len(calls) == 2
