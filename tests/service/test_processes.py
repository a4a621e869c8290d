"""The supervisor's restart backoff."""

from service.processes import FIRST_BACKOFF_S, HEALTHY_RUN_S, MAX_BACKOFF_S, next_backoff


def test_backoff_doubles_for_a_child_that_dies_at_start_and_is_capped():
    waits = []
    wait = 0.0
    for _ in range(10):
        wait = next_backoff(wait, ran_seconds=0.5)
        waits.append(wait)
    assert waits[:4] == [FIRST_BACKOFF_S, 2 * FIRST_BACKOFF_S, 4 * FIRST_BACKOFF_S, 8 * FIRST_BACKOFF_S]
    assert waits[-1] == MAX_BACKOFF_S


def test_a_child_that_ran_healthy_restarts_at_once_again():
    assert next_backoff(MAX_BACKOFF_S, ran_seconds=HEALTHY_RUN_S + 1) == FIRST_BACKOFF_S
    assert next_backoff(MAX_BACKOFF_S, ran_seconds=HEALTHY_RUN_S - 1) == MAX_BACKOFF_S
