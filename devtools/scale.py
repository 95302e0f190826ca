"""Eighteen months of order history at scale, bulk-loaded with COPY (`portal seed scale --orders`).

Everything is synthetic and drawn from one seeded random generator, so the same `--seed` and the
same `now` give the same rows (ids included); only the PHI ciphertexts differ, because every
encryption takes a fresh random nonce, exactly as the application's own writes do.

What it loads, in the order the foreign keys need:

- doctors (`users`), and a pool of patients (one per eight orders), their PHI sealed by
  `app.phi` with the patient service's own contexts and keyed e-mail hash; patients join over
  the whole period and order again, so the encryption (the slow part per row) is paid per
  patient, not per order;
- products with a Zipf-like popularity (a few sell most of the units);
- per calendar month: one lot per product sold that month (received the day before the month
  starts), its receipt, that month's orders with their items, lot allocations and stock
  movements (reservation, then fulfilment or release), payments and refunds.

Orders follow a weekly rhythm (weekdays busy, Sundays quiet), a winter peak and growth over the
period. Outcomes: most are paid (card or ACH) and fulfilled; some expire unpaid
(`payment_expired`), some are cancelled by staff before or after payment (a paid one refunded in
full), some refunded in full at Stripe (`refunded_at_stripe`); fulfilled ones get partial and
full refunds and disputes. The youngest orders are still pending (an ACH debit may be
processing) or paid and not yet shipped.

Invariants that hold after a load (tests/seeds/ checks them): every lot's counters equal the sum
of its movements; on hand >= reserved >= 0; a lot past its expiration date is `expired` (or was
recalled before); a succeeded payment's amount equals its order's total and its refunds never
exceed it; a cancelled order has a reason code; no PHI is stored in clear.
"""

from __future__ import annotations

import bisect
import math
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

import psycopg

from app import phi
from app.config import get_settings
from app.models.status import (
    CancellationReason,
    LotStatus,
    OrderStatus,
    PaymentStatus,
    RefundStatus,
)
from app.orders.service import cancellation_note_context
from app.patients.service import phi_context

HISTORY_DAYS = 548  # 18 months
ACTOR_SUBJECT = "system:seed-scale"
PATIENTS_PER_ORDER = 1 / 8
ORDERS_PER_DOCTOR = 2_500
SELF_REGISTERED_SHARE = 0.1
ACH_SHARE = 0.22
ZIPF_EXPONENT = 1.1
DAY = 86_400
HOUR = 3_600
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

# Weekday factors, Monday first: clinics order on weekdays.
WEEKDAY_FACTOR = (1.15, 1.1, 1.05, 1.0, 0.95, 0.4, 0.25)
# Hour-of-day weights (UTC stands in for the clinics' local time).
HOUR_WEIGHTS = (
    (0.2,) * 7
    + (1.0, 2.0, 3.0, 3.2, 3.0, 2.4, 2.8, 3.0, 2.8, 2.2, 1.6, 1.0)
    + (0.6, 0.4, 0.3, 0.2, 0.2)
)

# Staff cancellations before payment, and their weights.
STAFF_REASONS = (
    (CancellationReason.PATIENT_REQUEST, 35),
    (CancellationReason.PRESCRIBER_CHANGE, 25),
    (CancellationReason.DUPLICATE_ORDER, 15),
    (CancellationReason.ENTERED_IN_ERROR, 10),
    (CancellationReason.OUT_OF_STOCK, 8),
    (CancellationReason.OTHER, 7),
)
STAFF_REASON_CODES = [reason for reason, _ in STAFF_REASONS]
STAFF_REASON_WEIGHTS = [weight for _, weight in STAFF_REASONS]
OTHER_NOTES = (
    "Patient switched to another pharmacy",
    "Therapy paused after follow-up visit",
    "Clinic asked to reorder next month",
)
CARD_DECLINED = "Your card was declined."
ACH_RETURNED = "The bank account could not be debited (R01: insufficient funds)."

FIRST_NAMES = [
    "Avery",
    "Blake",
    "Casey",
    "Drew",
    "Emery",
    "Finley",
    "Harper",
    "Jordan",
    "Kendall",
    "Logan",
    "Morgan",
    "Parker",
    "Quinn",
    "Reese",
    "Riley",
    "Rowan",
    "Sawyer",
    "Skyler",
    "Taylor",
    "Devon",
    "Ellis",
    "Jamie",
    "Kai",
    "Lane",
    "Marlow",
    "Noel",
    "Oakley",
    "Peyton",
    "Remy",
    "Sage",
]
LAST_NAMES = [
    "Example",
    "Sample",
    "Placeholder",
    "Testwell",
    "Mockford",
    "Demoson",
    "Fictive",
    "Synthia",
    "Dummer",
    "Stubbs",
    "Proxy",
    "Standin",
    "Modell",
    "Pattern",
    "Specimen",
    "Templeton",
    "Draftley",
    "Sketch",
    "Outline",
    "Prototype",
]
PRODUCT_KINDS = (
    ("vial", True, True),
    ("pen", True, True),
    ("single dose", True, True),
    ("tablets, 30 count", True, True),
    ("box of 100", False, False),
    ("test strips, 50 count", False, True),
    ("kit", False, False),
)


@dataclass(frozen=True)
class HistoryResult:
    """Rows written per table, and how long the load took."""

    rows: dict[str, int]
    seconds: float
    first_order_at: datetime
    last_order_at: datetime
    seed: int
    foreign_keys: str  # "checked per row" or "checked after the load"

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def rows_per_second(self) -> float:
        return self.total_rows / self.seconds if self.seconds else 0.0


class HistoryAlreadyLoaded(RuntimeError):
    """The products of this seed exist already: ids and SKUs would collide."""


class _IdSequence:
    """UUIDs (version 4 layout) from the seeded generator: a random prefix per table, then a
    counter, so ids are deterministic, unique and cheap (one format per row)."""

    __slots__ = ("count", "prefix")

    def __init__(self, rng: random.Random) -> None:
        h = f"{rng.getrandbits(64):016x}"
        variant = "89ab"[rng.randrange(4)]
        self.prefix = f"{h[:8]}-{h[8:12]}-4{h[12:15]}-{variant}{rng.getrandbits(12):03x}-"
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"{self.prefix}{self.count:012x}"


class _Clock:
    """Epoch seconds -> COPY text of a timestamptz in UTC, with the dates cached."""

    def __init__(self) -> None:
        self._days: dict[int, str] = {}

    def __call__(self, ts: int) -> str:
        day, second = divmod(ts, DAY)
        text = self._days.get(day)
        if text is None:
            text = self._days[day] = date.fromordinal(_EPOCH_ORDINAL + day).isoformat()
        hour, rest = divmod(second, HOUR)
        minute, sec = divmod(rest, 60)
        return f"{text} {hour:02d}:{minute:02d}:{sec:02d}+00"


def _date_of(ts: int) -> date:
    return date.fromordinal(_EPOCH_ORDINAL + ts // DAY)


def _epoch(day: date) -> int:
    return (day.toordinal() - _EPOCH_ORDINAL) * DAY


def _day_weight(day: date, growth: float) -> float:
    doy = day.timetuple().tm_yday
    season = 1 + 0.2 * math.cos(2 * math.pi * (doy - 20) / 365.25)
    # A second bump for the autumn vaccination season.
    season += 0.08 * math.cos(2 * math.pi * (doy - 285) / 182.6)
    return WEEKDAY_FACTOR[day.weekday()] * season * growth


def orders_per_day(orders: int, first: date, days: int) -> list[int]:
    """`orders` spread over `days` days from `first` by weekday, season and growth (exact sum)."""
    weights = [
        _day_weight(first + timedelta(d), 0.75 + 0.5 * d / max(days - 1, 1)) for d in range(days)
    ]
    total = sum(weights)
    exact = [orders * w / total for w in weights]
    counts = [int(x) for x in exact]
    missing = orders - sum(counts)
    by_remainder = sorted(range(days), key=lambda d: (counts[d] - exact[d], d))
    for d in by_remainder[:missing]:
        counts[d] += 1
    return counts


class _Payment(NamedTuple):
    status: str
    failure: str
    refunded: int
    method: str
    disputed: bool
    after_fulfilment: bool
    changed: int  # last change, epoch seconds


@dataclass(slots=True)
class _Life:
    """An order's outcome (times in epoch seconds, 0 when it did not happen)."""

    status: str
    expires: int
    intent_at: int
    paid_at: int
    fulfilled_at: int
    cancelled_at: int
    code: str
    note: str
    payment: _Payment | None
    refunds: list[tuple[int, int, str]]  # (amount, at, status)


@dataclass
class _Lot:
    id: str
    product: int
    reserved_ever: int = 0
    fulfilled: int = 0
    open: int = 0


@dataclass
class _Batch:
    """The COPY text of one calendar month, table by table, in foreign-key order."""

    orders: int
    tables: list[tuple[str, str, int]] = field(default_factory=list)  # (table, text, rows)


COLUMNS = {
    "users": "users (id, email, role, oidc_subject, full_name, active, created_at)",
    "patients": (
        "patients (id, doctor_id, name_encrypted, email_encrypted, phone_encrypted,"
        " date_of_birth_encrypted, email_hash, created_at)"
    ),
    "products": (
        "products (id, sku, name, description, price_cents, par_level, reorder_quantity,"
        " requires_prescription, perishable, created_at)"
    ),
    "lots": (
        "lots (id, product_id, lot_number, expiration_date, quantity_on_hand, quantity_reserved,"
        " status, status_reason, status_changed_at, created_at)"
    ),
    "stock_movements": (
        "stock_movements (id, lot_id, delta_on_hand, delta_reserved, reason, order_id,"
        " actor_subject, created_at)"
    ),
    "orders": (
        "orders (id, patient_id, doctor_id, status, total_cents, expires_at, paid_at,"
        " fulfilled_at, cancelled_at, cancellation_code, cancellation_note_encrypted,"
        " updated_at, created_at)"
    ),
    "order_items": "order_items (id, order_id, product_id, quantity, unit_price_cents)",
    "lot_allocations": "lot_allocations (id, order_item_id, lot_id, quantity)",
    "payments": (
        "payments (id, order_id, stripe_payment_intent_id, status, method, amount_cents,"
        " currency, refunded_cents, failure_reason, disputed, refunded_after_fulfilment,"
        " succeeded_at, updated_at, created_at)"
    ),
    "payment_refunds": (
        "payment_refunds (stripe_refund_id, payment_id, amount_cents, currency, status,"
        " updated_at, created_at)"
    ),
}
N = "\\N"


class _History:
    """The generator: deterministic for a seed and a `now`."""

    def __init__(self, *, orders: int, products: int, seed: int, now: datetime) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.orders = orders
        self.product_count = products
        self.now = int(now.timestamp())
        self.today = _date_of(self.now)
        self.first_day = self.today - timedelta(days=HISTORY_DAYS)
        settings = get_settings()
        self.ttl = settings.order_payment_ttl_hours * HOUR
        self.clock = _Clock()
        rng = self.rng
        self.ids = {name: _IdSequence(rng) for name in COLUMNS}
        self.stripe_prefix = f"{rng.getrandbits(40):010x}"
        self.stripe_count = 0

    # -- people and catalog -----------------------------------------------------------------

    def doctors(self) -> tuple[list[str], str]:
        rng, ts = self.rng, self.clock(_epoch(self.first_day) - 60 * DAY)
        ids = []
        lines = []
        for i in range(max(3, self.orders // ORDERS_PER_DOCTOR)):
            doctor_id = self.ids["users"]()
            email = f"doctor-{self.seed}-{i:05d}@history.example"
            name = f"Dr. {rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
            lines.append(f"{doctor_id}\t{email}\tdoctor\t{email}\t{name}\tt\t{ts}\n")
            ids.append(doctor_id)
        return ids, "".join(lines)

    def patients(self, doctors: list[str]) -> tuple[list[str], list[str], list[int], str]:
        """Patient ids, their doctor ids ("" when self-registered), sorted join times, COPY."""
        rng, clock = self.rng, self.clock
        count = max(20, int(self.orders * PATIENTS_PER_ORDER))
        start, end = _epoch(self.first_day), self.now - DAY
        joined = sorted(
            start - rng.randrange(1, 365 * DAY) if rng.random() < 0.3 else rng.randrange(start, end)
            for _ in range(count)
        )
        keys = phi.phi_keys()
        ids, owners, lines = [], [], []
        for i, ts in enumerate(joined):
            patient_id = self.ids["patients"]()
            doctor = "" if rng.random() < SELF_REGISTERED_SHARE else rng.choice(doctors)
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            email = phi.normalise_email(f"{first}.{last}.{self.seed}.{i}@patients.example")
            born = date(1940, 1, 1) + timedelta(days=rng.randrange(0, 365 * 62))
            values = {
                "name": f"{first} {last}",
                "email": email,
                "phone": f"+1 555 {rng.randrange(100, 1000):03d} {rng.randrange(10_000):04d}",
                "date_of_birth": born.isoformat(),
            }
            sealed = [
                phi.encrypt(values[f], phi_context(uuid.UUID(patient_id), f), keys)
                for f in ("name", "email", "phone", "date_of_birth")
            ]
            lines.append(
                f"{patient_id}\t{doctor or N}\t{sealed[0]}\t{sealed[1]}\t{sealed[2]}\t{sealed[3]}"
                f"\t{phi.lookup_hash(email, keys)}\t{clock(ts)}\n"
            )
            ids.append(patient_id)
            owners.append(doctor)
        return ids, owners, joined, "".join(lines)

    def catalog(self) -> tuple[list[str], list[int], list[bool], list[float], str]:
        """Product ids, prices, perishable flags, cumulative popularity weights, COPY text."""
        rng = self.rng
        ts = self.clock(_epoch(self.first_day) - 90 * DAY)
        ids, prices, perishable, lines = [], [], [], []
        for i in range(self.product_count):
            product_id = self.ids["products"]()
            kind, rx, spoils = PRODUCT_KINDS[rng.randrange(len(PRODUCT_KINDS))]
            tier = rng.random()
            low, high = (
                (500, 3_000) if tier < 0.5 else (3_000, 15_000) if tier < 0.85 else (15_000, 60_000)
            )
            price = rng.randrange(low, high) // 10 * 10 + 9
            lines.append(
                f"{product_id}\tHIST-{self.seed}-{i:06d}\tHistory item {i:06d}, {kind}\t\t{price}"
                f"\t{rng.randrange(0, 40)}\t{rng.randrange(10, 120)}\t{'t' if rx else 'f'}"
                f"\t{'t' if spoils else 'f'}\t{ts}\n"
            )
            ids.append(product_id)
            prices.append(price)
            perishable.append(spoils)
        # Zipf-like popularity over a shuffled rank, so the best sellers are spread in the list.
        ranks = list(range(1, self.product_count + 1))
        rng.shuffle(ranks)
        cumulative, running = [], 0.0
        for rank in ranks:
            running += 1 / rank**ZIPF_EXPONENT
            cumulative.append(running)
        return ids, prices, perishable, cumulative, "".join(lines)

    # -- the months ---------------------------------------------------------------------------

    def months(self) -> Iterator[_Batch]:
        rng, clock, ids, now = self.rng, self.clock, self.ids, self.now
        doctors, users = self.doctors()
        patient_ids, owners, joined, patients = self.patients(doctors)
        product_ids, prices, perishable, cumulative, products = self.catalog()
        popularity_total = cumulative[-1]
        yield _Batch(
            orders=0,
            tables=[
                ("users", users, len(doctors)),
                ("patients", patients, len(patient_ids)),
                ("products", products, len(product_ids)),
            ],
        )
        per_day = orders_per_day(self.orders, self.first_day, HISTORY_DAYS)
        hour_cumulative = []
        running = 0.0
        for w in HOUR_WEIGHTS:
            running += w
            hour_cumulative.append(running)
        new_order, new_item, new_allocation = (
            ids["orders"],
            ids["order_items"],
            ids["lot_allocations"],
        )
        new_movement, new_payment = ids["stock_movements"], ids["payments"]
        random_, randrange = rng.random, rng.randrange
        day = 0
        while day < HISTORY_DAYS:
            month_start = self.first_day + timedelta(days=day)
            month_days = []
            while day < HISTORY_DAYS:
                current = self.first_day + timedelta(days=day)
                if (current.year, current.month) != (month_start.year, month_start.month):
                    break
                month_days.append((current, per_day[day]))
                day += 1
            last_month = day >= HISTORY_DAYS
            received_ts = _epoch(month_start.replace(day=1)) - DAY + 7 * HOUR
            lots: dict[int, _Lot] = {}
            orders_out: list[str] = []
            items_out: list[str] = []
            allocations_out: list[str] = []
            movements_out: list[str] = []
            payments_out: list[str] = []
            refunds_out: list[str] = []
            month_orders = 0
            for current, count in month_days:
                base = _epoch(current)
                stamps = sorted(
                    base
                    + bisect.bisect(hour_cumulative, random_() * running) * HOUR
                    + randrange(HOUR)
                    for _ in range(count)
                )
                for ts in stamps:
                    if ts >= now:
                        ts = now - randrange(1, HOUR)
                    month_orders += 1
                    order_id = new_order()
                    patient = randrange(max(1, bisect.bisect(joined, ts)))
                    doctor = owners[patient] or N
                    # Items: distinct products by popularity, 1-3 per order.
                    lines = 1 if (r := random_()) < 0.6 else 2 if r < 0.88 else 3
                    lines = min(lines, self.product_count)  # distinct products per order
                    chosen: list[int] = []
                    while len(chosen) < lines:
                        product = bisect.bisect(cumulative, random_() * popularity_total)
                        product = min(product, self.product_count - 1)
                        if product not in chosen:
                            chosen.append(product)
                    quantities = [
                        1
                        if (q := random_()) < 0.7
                        else 2
                        if q < 0.9
                        else 3
                        if q < 0.97
                        else randrange(4, 7)
                        for _ in chosen
                    ]
                    total = sum(prices[p] * q for p, q in zip(chosen, quantities, strict=True))
                    life = self._life(order_id, ts, total)
                    status, expires, intent_at = life.status, life.expires, life.intent_at
                    paid_at, fulfilled_at = life.paid_at, life.fulfilled_at
                    cancelled_at, code, note = life.cancelled_at, life.code, life.note
                    payment, refunds = life.payment, life.refunds
                    updated = max(paid_at, fulfilled_at, cancelled_at)
                    orders_out.append(
                        f"{order_id}\t{patient_ids[patient]}\t{doctor}\t{status}\t{total}"
                        f"\t{clock(expires)}\t{clock(paid_at) if paid_at else N}"
                        f"\t{clock(fulfilled_at) if fulfilled_at else N}"
                        f"\t{clock(cancelled_at) if cancelled_at else N}\t{code or N}\t{note or N}"
                        f"\t{clock(updated) if updated else N}\t{clock(ts)}\n"
                    )
                    created = clock(ts)
                    for product, quantity in zip(chosen, quantities, strict=True):
                        lot = lots.get(product)
                        if lot is None:
                            lot = lots[product] = _Lot(ids["lots"](), product)
                        item_id = new_item()
                        items_out.append(
                            f"{item_id}\t{order_id}\t{product_ids[product]}\t{quantity}\t{prices[product]}\n"
                        )
                        allocations_out.append(
                            f"{new_allocation()}\t{item_id}\t{lot.id}\t{quantity}\n"
                        )
                        lot.reserved_ever += quantity
                        movements_out.append(
                            f"{new_movement()}\t{lot.id}\t0\t{quantity}\treservation\t{order_id}"
                            f"\t{ACTOR_SUBJECT}\t{created}\n"
                        )
                        if fulfilled_at:
                            lot.fulfilled += quantity
                            movements_out.append(
                                f"{new_movement()}\t{lot.id}\t{-quantity}\t{-quantity}\tfulfilment"
                                f"\t{order_id}\t{ACTOR_SUBJECT}\t{clock(fulfilled_at)}\n"
                            )
                        elif cancelled_at:
                            movements_out.append(
                                f"{new_movement()}\t{lot.id}\t0\t{-quantity}\trelease\t{order_id}"
                                f"\t{ACTOR_SUBJECT}\t{clock(cancelled_at)}\n"
                            )
                        else:
                            lot.open += quantity
                    if payment is not None:
                        pay_status, failure, refunded, pm, disputed, after_fulfilment, changed = (
                            payment
                        )
                        payment_id = new_payment()
                        self.stripe_count += 1
                        suffix = f"{self.stripe_prefix}{self.stripe_count:014x}"
                        succeeded = pay_status == PaymentStatus.SUCCEEDED
                        payments_out.append(
                            f"{payment_id}\t{order_id}\tpi_{suffix}\t{pay_status}\t{pm or N}"
                            f"\t{total}\tusd\t{refunded}\t{failure or N}"
                            f"\t{'t' if disputed else 'f'}"
                            f"\t{'t' if after_fulfilment else 'f'}"
                            f"\t{clock(paid_at) if succeeded else N}"
                            f"\t{clock(changed)}\t{clock(intent_at)}\n"
                        )
                        for n, (amount, at, refund_status) in enumerate(refunds):
                            refunds_out.append(
                                f"re_{suffix}{n}\t{payment_id}\t{amount}\tusd\t{refund_status}"
                                f"\t{clock(at)}\t{clock(at)}\n"
                            )
            if last_month:  # every product has a current lot on the shelf
                for product in range(self.product_count):
                    if product not in lots:
                        lots[product] = _Lot(ids["lots"](), product)
            lots_out, receipts_out = self._lots(
                lots, month_start, received_ts, product_ids, perishable
            )
            yield _Batch(
                orders=month_orders,
                tables=[
                    ("lots", lots_out, len(lots)),
                    ("stock_movements", receipts_out, len(lots)),
                    ("orders", "".join(orders_out), len(orders_out)),
                    ("order_items", "".join(items_out), len(items_out)),
                    ("lot_allocations", "".join(allocations_out), len(allocations_out)),
                    ("stock_movements", "".join(movements_out), len(movements_out)),
                    ("payments", "".join(payments_out), len(payments_out)),
                    ("payment_refunds", "".join(refunds_out), len(refunds_out)),
                ],
            )

    def _life(self, order_id: str, ts: int, total: int) -> _Life:
        """What happens to an order placed at `ts`, up to now: its status and times, its payment
        (card or ACH) and refunds. The youngest orders are still on their way."""
        rng, now, ttl = self.rng, self.now, self.ttl
        random_, randrange, choices = rng.random, rng.randrange, rng.choices
        ach = random_() < ACH_SHARE
        method = "us_bank_account" if ach else "card"
        intent_at = ts + randrange(60, 6 * HOUR)
        pay_at = intent_at + (randrange(2 * DAY, 4 * DAY) if ach else randrange(10, 300))
        expires = ts + ttl
        status = OrderStatus.PENDING
        paid_at = fulfilled_at = cancelled_at = 0
        code = note = ""
        payment: _Payment | None = None
        refunds: list[tuple[int, int, str]] = []
        outcome = random_()
        if outcome < 0.075:  # never paid: expires (or is still waiting)
            if expires + 60 <= now:
                status, cancelled_at = OrderStatus.CANCELLED, expires + randrange(60)
                code = CancellationReason.PAYMENT_EXPIRED
            if random_() < 0.4:
                failure = ACH_RETURNED if ach else CARD_DECLINED
                payment = _Payment(
                    PaymentStatus.REQUIRES_PAYMENT_METHOD,
                    failure,
                    0,
                    method,
                    False,
                    False,
                    intent_at,
                )
        elif outcome < 0.105:  # cancelled by staff before payment
            cancel_at = ts + randrange(600, 2 * DAY)
            if cancel_at <= now:
                status, cancelled_at = OrderStatus.CANCELLED, cancel_at
                code = choices(STAFF_REASON_CODES, STAFF_REASON_WEIGHTS)[0]
                if code == CancellationReason.OTHER:
                    note = phi.encrypt(
                        rng.choice(OTHER_NOTES),
                        cancellation_note_context(uuid.UUID(order_id)),
                    )
        elif pay_at > now:  # payment under way
            if ach:
                payment = _Payment(
                    PaymentStatus.PROCESSING,
                    "",
                    0,
                    method,
                    False,
                    False,
                    intent_at,
                )
            elif random_() < 0.5:
                payment = _Payment(
                    PaymentStatus.REQUIRES_PAYMENT_METHOD,
                    "",
                    0,
                    "",
                    False,
                    False,
                    intent_at,
                )
        else:
            status, paid_at = OrderStatus.PAID, pay_at
            refunded, disputed, after_fulfilment = 0, False, False
            if outcome < 0.122:  # paid, then refunded in full and cancelled
                cancel_at = pay_at + randrange(HOUR, 3 * DAY)
                if cancel_at <= now:
                    status, cancelled_at, refunded = (
                        OrderStatus.CANCELLED,
                        cancel_at,
                        total,
                    )
                    if outcome < 0.115:  # by staff: the portal's refund
                        code = (
                            CancellationReason.PATIENT_REQUEST
                            if random_() < 0.6
                            else CancellationReason.PRESCRIBER_CHANGE
                        )
                        refunds.append(
                            (
                                total,
                                cancel_at + randrange(5, 120),
                                RefundStatus.SUCCEEDED,
                            )
                        )
                    else:  # at Stripe (the Dashboard): the order follows
                        code = CancellationReason.REFUNDED_AT_STRIPE
                        refunds.append(
                            (
                                total,
                                cancel_at - randrange(1, 30),
                                RefundStatus.SUCCEEDED,
                            )
                        )
            else:
                fulfil_at = pay_at + randrange(4 * HOUR, 3 * DAY)
                if fulfil_at <= now:
                    status, fulfilled_at = OrderStatus.FULFILLED, fulfil_at
                    after = random_()
                    refund_at = fulfil_at + randrange(DAY, 20 * DAY)
                    if after < 0.02 and refund_at <= now and total > 1:
                        part = max(1, total * rng.choice((10, 20, 25, 50)) // 100)
                        refunds.append((part, refund_at, RefundStatus.SUCCEEDED))
                        refunded = part
                    elif after < 0.025 and refund_at <= now:
                        refunds.append((total, refund_at, RefundStatus.SUCCEEDED))
                        refunded, after_fulfilment = total, True
                    elif after < 0.028:
                        disputed = True
            last = max(cancelled_at, fulfilled_at, paid_at, *(r[1] for r in refunds))
            payment = _Payment(
                PaymentStatus.SUCCEEDED,
                "",
                refunded,
                method,
                disputed,
                after_fulfilment,
                last,
            )
        return _Life(
            status,
            expires,
            intent_at,
            paid_at,
            fulfilled_at,
            cancelled_at,
            code,
            note,
            payment,
            refunds,
        )

    def _lots(
        self,
        lots: dict[int, _Lot],
        month_start: date,
        received_ts: int,
        product_ids: list[str],
        perishable: list[bool],
    ) -> tuple[str, str]:
        """The month's lots with their final counters, and their receipt movements."""
        rng, clock = self.rng, self.clock
        received_day = _date_of(received_ts)
        received = clock(received_ts)
        lot_lines, receipt_lines = [], []
        for product in sorted(lots):
            lot = lots[product]
            quantity = lot.reserved_ever + rng.randrange(0 if lot.reserved_ever else 1, 30)
            if perishable[product]:
                expiry: date | None = received_day + timedelta(days=rng.randrange(60, 730))
            else:
                expiry = (
                    None
                    if rng.random() < 0.5
                    else received_day + timedelta(days=rng.randrange(700, 1_500))
                )
            status, reason, changed = LotStatus.AVAILABLE.value, "", 0
            # After the month's last fulfilment: a recalled lot ships nothing more.
            recall_at = received_ts + rng.randrange(45 * DAY, 200 * DAY)
            if (
                lot.open == 0
                and rng.random() < 0.004
                and recall_at < self.now
                and (expiry is None or recall_at < _epoch(expiry))
            ):
                status, reason, changed = (
                    LotStatus.RECALLED.value,
                    "Manufacturer recall (synthetic)",
                    recall_at,
                )
            elif expiry is not None and expiry < self.today:
                if lot.open:  # open reservations are days old: their lot cannot be past expiry
                    expiry = self.today + timedelta(days=rng.randrange(30, 365))
                else:
                    status, reason = LotStatus.EXPIRED.value, "Past its expiration date"
                    changed = min(_epoch(expiry) + DAY + 2 * HOUR, self.now)
            lot_lines.append(
                f"{lot.id}\t{product_ids[product]}\tH{month_start:%Y%m}-{product:06d}"
                f"\t{expiry.isoformat() if expiry else N}\t{quantity - lot.fulfilled}\t{lot.open}"
                f"\t{status}\t{reason or N}\t{clock(changed) if changed else N}\t{received}\n"
            )
            receipt_lines.append(
                f"{self.ids['stock_movements']()}\t{lot.id}\t{quantity}\t0\treceipt\t{N}"
                f"\t{ACTOR_SUBJECT}\t{received}\n"
            )
        return "".join(lot_lines), "".join(receipt_lines)


def _produce(history: _History, out: queue.Queue[_Batch | BaseException | None]) -> None:
    try:
        for batch in history.months():
            out.put(batch)
        out.put(None)
    except BaseException as exc:  # handed to the writer, which re-raises it
        out.put(exc)


def _foreign_keys_after_load(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Skip the per-row foreign-key triggers during the load when the role may (a superuser,
    e.g. the migration URL on a development server): they cost about 40 % of the load. Every
    foreign key is then checked in one set-based query per key before the commit
    (`_check_foreign_keys`). Other roles load with the triggers on."""
    try:
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
    except psycopg.errors.InsufficientPrivilege:
        return False
    return True


def _check_foreign_keys(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Every foreign key of the loaded tables holds (a violation rolls the whole load back)."""
    from app.models import Base

    conn.execute("SET LOCAL session_replication_role = origin")
    for name in COLUMNS:
        for fk in Base.metadata.tables[name].foreign_keys:
            child, parent = fk.parent, fk.column
            orphans = conn.execute(
                f"SELECT count(*) FROM {name} c WHERE c.{child.name} IS NOT NULL"  # noqa: S608 (names from the models)
                f" AND NOT EXISTS (SELECT 1 FROM {parent.table.name} p"
                f" WHERE p.{parent.name} = c.{child.name})"
            ).fetchone()
            if orphans is None or orphans[0]:
                raise RuntimeError(f"{name}.{child.name}: rows without their {parent.table.name}")


def seed_history(
    url: str,
    *,
    orders: int,
    products: int,
    seed: int = 7,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> HistoryResult:
    """Load `orders` orders over the 18 months before `now` (default: this hour), in one
    transaction. `progress` is called with the number of orders of each month written.

    A generator thread builds each month's COPY text while this thread streams the previous
    month to PostgreSQL, so Python and the server work at the same time.
    """
    if orders < 1 or products < 1:
        raise ValueError("orders and products must be at least 1")
    now = now or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    history = _History(orders=orders, products=products, seed=seed, now=now)
    started = time.perf_counter()
    rows = dict.fromkeys(COLUMNS, 0)
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        checked_after = _foreign_keys_after_load(conn)
        taken = cur.execute(
            "SELECT 1 FROM products WHERE sku = %s", (f"HIST-{seed}-{0:06d}",)
        ).fetchone()
        if taken is not None:
            raise HistoryAlreadyLoaded(
                f"the history of seed {seed} is loaded already; use another --seed"
            )
        batches: queue.Queue[_Batch | BaseException | None] = queue.Queue(maxsize=2)
        producer = threading.Thread(target=_produce, args=(history, batches), daemon=True)
        producer.start()
        while (batch := batches.get()) is not None:
            if isinstance(batch, BaseException):
                raise batch
            for table, text, count in batch.tables:
                if count:
                    with cur.copy(f"COPY {COLUMNS[table]} FROM STDIN") as copy:
                        copy.write(text)
                    rows[table] += count
            if progress and batch.orders:
                progress(batch.orders)
        producer.join()
        if checked_after:
            _check_foreign_keys(conn)
        conn.commit()
    seconds = time.perf_counter() - started
    first = datetime.combine(history.first_day, datetime.min.time(), UTC)
    return HistoryResult(
        rows=rows,
        seconds=seconds,
        first_order_at=first,
        last_order_at=now,
        seed=seed,
        foreign_keys="checked after the load" if checked_after else "checked per row",
    )


# What must hold in any portal database, loaded or not: each query counts the rows that break
# one rule (the data-quality suites check the same rules). Zero everywhere is a healthy database.
INVARIANTS: dict[str, str] = {
    "lot counters equal the sum of their movements": """
        SELECT count(*) FROM lots l
        LEFT JOIN (
            SELECT lot_id, sum(delta_on_hand) AS on_hand, sum(delta_reserved) AS reserved
            FROM stock_movements GROUP BY lot_id
        ) m ON m.lot_id = l.id
        WHERE l.quantity_on_hand <> coalesce(m.on_hand, 0)
           OR l.quantity_reserved <> coalesce(m.reserved, 0)""",
    "no negative stock, reserved within on hand": """
        SELECT count(*) FROM lots
        WHERE quantity_on_hand < 0 OR quantity_reserved < 0
           OR quantity_reserved > quantity_on_hand""",
    "no available lot past its expiry": """
        SELECT count(*) FROM lots
        WHERE status = 'available' AND expiration_date < current_date""",
    "a lot's reservations are its open orders' allocations": """
        SELECT count(*) FROM lots l
        LEFT JOIN (
            SELECT a.lot_id, sum(a.quantity) AS units
            FROM lot_allocations a
            JOIN order_items i ON i.id = a.order_item_id
            JOIN orders o ON o.id = i.order_id
            WHERE o.status IN ('pending', 'paid')
            GROUP BY a.lot_id
        ) r ON r.lot_id = l.id
        WHERE l.quantity_reserved <> coalesce(r.units, 0)""",
    "each item is allocated in full": """
        SELECT count(*) FROM order_items i
        LEFT JOIN (
            SELECT order_item_id, sum(quantity) AS units FROM lot_allocations GROUP BY 1
        ) a ON a.order_item_id = i.id
        WHERE coalesce(a.units, 0) <> i.quantity""",
    "order totals equal their items": """
        SELECT count(*) FROM orders o
        LEFT JOIN (
            SELECT order_id, sum(quantity * unit_price_cents) AS total FROM order_items GROUP BY 1
        ) i ON i.order_id = o.id
        WHERE o.total_cents <> coalesce(i.total, 0)""",
    "a succeeded payment's amount equals its order's total": """
        SELECT count(*) FROM payments p JOIN orders o ON o.id = p.order_id
        WHERE p.status = 'succeeded' AND p.amount_cents <> o.total_cents""",
    "paid and fulfilled orders have a succeeded payment": """
        SELECT count(*) FROM orders o
        WHERE o.status IN ('paid', 'fulfilled')
          AND NOT EXISTS (
              SELECT 1 FROM payments p WHERE p.order_id = o.id AND p.status = 'succeeded'
          )""",
    "refunded amounts equal the payment's refunds": """
        SELECT count(*) FROM payments p
        LEFT JOIN (
            SELECT payment_id, sum(amount_cents) AS cents FROM payment_refunds
            WHERE status IN ('pending', 'succeeded') GROUP BY 1
        ) r ON r.payment_id = p.id
        WHERE p.refunded_cents <> coalesce(r.cents, 0) OR p.refunded_cents > p.amount_cents""",
    "a paid order refunded in full is cancelled": """
        SELECT count(*) FROM orders o JOIN payments p ON p.order_id = o.id
        WHERE o.status = 'paid' AND p.status = 'succeeded' AND p.refunded_cents = p.amount_cents""",
    "a cancelled order has a reason code and a time": """
        SELECT count(*) FROM orders
        WHERE (status = 'cancelled')
           <> (cancellation_code IS NOT NULL AND cancelled_at IS NOT NULL)""",
    "timestamps follow the order's life": """
        SELECT count(*) FROM orders
        WHERE paid_at < created_at OR fulfilled_at < paid_at OR cancelled_at < created_at
           OR (status = 'fulfilled') <> (fulfilled_at IS NOT NULL)
           OR created_at > now()""",
}


def check_invariants(url: str) -> dict[str, int]:
    """Rows breaking each invariant (all zero when the data is sound)."""
    with psycopg.connect(url) as conn:
        counts = {}
        for name, query in INVARIANTS.items():
            row = conn.execute(query).fetchone()
            counts[name] = int(row[0]) if row else -1
        return counts
