"""The date-of-birth lockout holds under parallel guesses.

Someone holding a patient's link could send many guesses at once; if each request read the
failure count before the others had written theirs, every guess would count as the first and
the link would never lock. A live server (real connections, real transactions) takes 20 wrong
guesses released together by a barrier: exactly the allowed number may be answered "wrong",
every other one must find the link locked, and each failure is counted and audited once.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import text

from app.checkout.service import COOKIE_NAME
from app.config import get_settings
from app.db import make_engine
from tests.checkout.live_server import DATE_OF_BIRTH, Stack, doctors_order

GUESSES = 20


def test_parallel_wrong_dates_of_birth_each_count_and_lock_the_link(stack: Stack) -> None:
    limit = get_settings().checkout_max_failed_attempts
    order = doctors_order(stack)
    opened = httpx.get(order["checkout_url"], follow_redirects=False)
    assert opened.status_code == 303, opened.text
    cookie = opened.cookies[COOKIE_NAME]
    start = threading.Barrier(GUESSES, timeout=30)

    def guess(day: int) -> int:
        with httpx.Client(base_url=stack.base, timeout=30) as client:
            client.get("/healthz")  # connect before the start line
            start.wait()
            answer = client.post(
                "/pay/verify",
                data={"date_of_birth": f"1950-01-{day:02d}"},
                headers={"Cookie": f"{COOKIE_NAME}={cookie}"},
            )
            return answer.status_code

    with ThreadPoolExecutor(GUESSES) as pool:
        statuses = Counter(pool.map(guess, range(1, GUESSES + 1)))

    # limit - 1 "wrong, n left", the limit-th locks, every later guess finds it locked.
    assert statuses == {422: limit - 1, 423: GUESSES - (limit - 1)}, statuses
    engine = make_engine(stack.database.owner_url, pool_size=1)
    try:
        with engine.connect() as connection:
            failed, locked_at = connection.execute(
                text("SELECT failed_attempts, locked_at FROM checkout_links WHERE order_id = :id"),
                {"id": order["id"]},
            ).one()
            audited = connection.scalar(
                text(
                    "SELECT count(*) FROM audit_log"
                    " WHERE action = 'checkout_link.dob_failed' AND entity_id = :id"
                ),
                {"id": order["id"]},
            )
    finally:
        engine.dispose()
    assert (failed, audited) == (limit, limit)
    assert locked_at is not None

    # Even the right answer is refused now.
    late = httpx.post(
        f"{stack.base}/pay/verify",
        data={"date_of_birth": DATE_OF_BIRTH},
        headers={"Cookie": f"{COOKIE_NAME}={cookie}"},
    )
    assert late.status_code == 423
