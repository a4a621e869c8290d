"""``/graders/run`` against a real ``rft serve``: slots shared fairly between projects,
quick graders never wait, and a client that goes away gives its slot back."""

from __future__ import annotations

import logging
import time

import anyio
import httpx
import pytest

from graders.sandbox import sandbox_status
from tests.server import start_server

log = logging.getLogger(__name__)

RUN = "/v1/fine_tuning/alpha/graders/run"
SLOTS, PER_PROJECT = 8, 2  # the defaults, spelled out: the timings below depend on them
STRING_CHECK = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}


def sleeper(seconds: float) -> dict:
    """A python grader whose grade() sleeps ``seconds`` then scores 1."""
    source = f"import time\n\ndef grade(sample, item):\n    time.sleep({seconds})\n    return 1.0\n"
    return {"type": "python", "name": f"sleep{seconds:g}", "source": source}


def body(grader: dict) -> dict:
    return {"grader": grader, "model_sample": "Paris", "item": {"answer": "Paris"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ok, reason = sandbox_status()
    if not ok:
        pytest.skip(f"python graders need the sandbox: {reason}")
    root = tmp_path_factory.mktemp("graders-fairness")
    srv = start_server(
        root / "data",
        env={
            "RFT_GRADER_RUN_SLOTS": str(SLOTS),
            "RFT_GRADER_RUN_SLOTS_PER_PROJECT": str(PER_PROJECT),
        },
    )
    yield srv
    srv.stop()


def server_log(srv) -> str:
    return (srv.data_dir.parent / f"serve-{srv.port}.log").read_text(errors="replace")


def test_one_project_flooding_slow_runs_does_not_hold_up_another(server):
    # A floods /run with slow python gradings. With one global FIFO limiter of 8 slots,
    # B's string_check would wait about a SLEEP and B's python run about 3 * SLEEP (16 A
    # runs ahead of it); with round-robin alone (no per-project cap) its python run
    # would still wait for one of A's, about 2 * SLEEP. Fairly shared, B's quick grader
    # runs at once and its python run takes one SLEEP plus a sandbox start.
    SLEEP, FLOOD = 3.0, 16
    base = f"http://127.0.0.1:{server.port}"
    key_a, key_b = server.key("flood-a"), server.key("polite-b")

    async def main() -> tuple[float, float, dict]:
        async with (
            httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {key_a}"}, timeout=120
            ) as a,
            httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {key_b}"}, timeout=30
            ) as b,
            anyio.create_task_group() as tg,
        ):
            for _ in range(FLOOD):
                tg.start_soon(lambda: a.post(RUN, json=body(sleeper(SLEEP))))
            await anyio.sleep(0.7)  # A's runs reach the server and take their slots
            start = time.monotonic()
            quick = await b.post(RUN, json=body(STRING_CHECK))
            quick_s = time.monotonic() - start
            assert quick.status_code == 200, quick.text
            assert quick.json()["reward"] == 1.0
            start = time.monotonic()
            slow = await b.post(RUN, json=body(sleeper(SLEEP)))
            slow_s = time.monotonic() - start
            tg.cancel_scope.cancel()  # A hangs up: its sandboxes are killed
        return quick_s, slow_s, slow.json()

    quick_s, slow_s, slow = anyio.run(main)
    log.info("B under A's flood: string_check %.2fs, python %.2fs", quick_s, slow_s)
    assert slow["reward"] == 1.0, slow
    assert quick_s < 1.5, f"string_check took {quick_s:.2f}s behind another project's slow runs"
    assert slow_s < 1.6 * SLEEP, f"B's python run took {slow_s:.2f}s: it waited behind A's runs"


def test_a_client_that_goes_away_gives_its_slot_back(server):
    # C starts PER_PROJECT long gradings (holding all of C's slots) and two more that
    # wait for one, and hangs up on all of them. C's next run must get a slot at once.
    # The held slots come back only because the sandbox kills itself on the request's
    # CancelToken (graders.sandbox registers Sandbox.kill); without that this run
    # would wait for the 15 s sleeps.
    HANG_UP_S = 1.5  # long enough for the sandboxes to have started
    base = f"http://127.0.0.1:{server.port}"
    headers = {"Authorization": f"Bearer {server.key('hangs-up-c')}"}
    before = server_log(server).count("client left /graders/run")

    async def hang_up() -> None:
        async with httpx.AsyncClient(base_url=base, headers=headers) as c:
            try:
                await c.post(RUN, json=body(sleeper(15)), timeout=HANG_UP_S)
            except httpx.TimeoutException:
                return
            raise AssertionError("the 15 s grading answered before the client hung up")

    async def main() -> float:
        async with anyio.create_task_group() as tg:
            for _ in range(PER_PROJECT + 2):
                tg.start_soon(hang_up)
        start = time.monotonic()
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as c:
            res = await c.post(RUN, json=body(sleeper(0)))
        assert res.status_code == 200 and res.json()["reward"] == 1.0, res.text
        return time.monotonic() - start

    took = anyio.run(main)
    log.info("C's run after its hang-ups: %.2fs", took)
    assert took < 5.0, f"C's run waited {took:.1f}s: the abandoned requests kept their slots"
    # Every hang-up was noticed and logged, and none of them made a traceback.
    deadline = time.monotonic() + 5
    while server_log(server).count("client left /graders/run") < before + PER_PROJECT + 2:
        assert time.monotonic() < deadline, server_log(server)[-3000:]
        time.sleep(0.1)
    assert "Traceback" not in server_log(server)
