"""The data quality suites, as data: which table each check reads and what it expects.

A suite named `raw_*` reads the portal's own tables (schema `public`); one named `marts_*` the
dbt marts (schema `analytics`). Every check either bounds a column (`ColumnBetween`), wants a
column's values unique and present (`UniqueKey`), or is a query whose rows are the offending
ones (`NoRows`). In a query, `{batch}` is the check's table: great-expectations puts a subquery
there, which a query holding a JOIN must alias itself (`{batch} AS checked`) and any other must
not. Queries return keys and counts, never a value that could be PHI, so a failure can be shown
and alerted as it is.

`{now}` in a query is the validation's clock (a timestamptz literal); `{orders_max_age}` and
`{marts_max_lag}` are the freshness thresholds (an interval literal) from the settings.
"""

from __future__ import annotations

from dataclasses import dataclass

# A column named like a person's details. `product_name` is the catalogue's, not a person's.
PHI_COLUMN_PATTERN = (
    r"(^|_)(name|names|first_name|last_name|email|e_mail|phone|mobile|dob|birth|birthdate|"
    r"date_of_birth|address|street|zip|postcode|note|notes|ssn|patient_id)($|_)"
)
PHI_COLUMN_ALLOWED = ("product_name",)
# Values shaped like an e-mail address or a North American / international phone number.
EMAIL_VALUE_PATTERN = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
PHONE_VALUE_PATTERN = (
    r"(^|[^0-9A-Za-z_])(\+?[0-9]{1,3}[ .-]?)?\(?[0-9]{3}\)?[ .-]?[0-9]{3}[ .-]?[0-9]{4}($|[^0-9])"
)


def _literal(pattern: str) -> str:
    """A regular expression inside a query template: its braces doubled (the template's own
    `{batch}` is filled in by `str.format`)."""
    return pattern.replace("{", "{{").replace("}", "}}")


UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


@dataclass(frozen=True)
class ColumnBetween:
    description: str
    table: str  # schema.table
    column: str
    min_value: int | None = None
    max_value: int | None = None


@dataclass(frozen=True)
class UniqueKey:
    description: str
    table: str
    column: str


@dataclass(frozen=True)
class NoRows:
    description: str
    table: str
    query: str  # rows returned are the failures; `{batch}` is `table`


Check = ColumnBetween | UniqueKey | NoRows


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    checks: tuple[Check, ...]


RAW_INVENTORY = Suite(
    "raw_inventory",
    "Lots and the stock ledger: counters never negative, the ledger's sums are the counters,"
    " nothing sellable past its date.",
    (
        ColumnBetween("no negative stock on hand", "public.lots", "quantity_on_hand", 0),
        ColumnBetween("no negative reservation", "public.lots", "quantity_reserved", 0),
        NoRows(
            "reserved never more than on hand",
            "public.lots",
            "SELECT id FROM {batch} WHERE quantity_reserved > quantity_on_hand",
        ),
        NoRows(
            "each lot's counters equal the sums of its ledger",
            "public.lots",
            "SELECT id FROM {batch} AS checked WHERE id IN (SELECT lots.id FROM public.lots AS lots"
            " LEFT JOIN (SELECT lot_id, sum(delta_on_hand) AS on_hand,"
            " sum(delta_reserved) AS reserved FROM public.stock_movements GROUP BY lot_id)"
            " AS ledger ON ledger.lot_id = lots.id"
            " WHERE coalesce(ledger.on_hand, 0) <> lots.quantity_on_hand"
            " OR coalesce(ledger.reserved, 0) <> lots.quantity_reserved)",
        ),
        NoRows(
            "no available lot past its expiry date",
            "public.lots",
            "SELECT id FROM {batch} WHERE status = 'available'"
            " AND expiration_date < ({now} AT TIME ZONE 'UTC')::date",
        ),
    ),
)

RAW_PAYMENTS = Suite(
    "raw_payments",
    "Payments: a succeeded payment is for its order's total; refunds within the amount.",
    (
        ColumnBetween("payment amounts positive", "public.payments", "amount_cents", 1),
        NoRows(
            "succeeded payments equal their order's total",
            "public.payments",
            "SELECT id FROM {batch} AS checked WHERE status = 'succeeded' AND id IN ("
            "SELECT payments.id FROM public.payments AS payments"
            " JOIN public.orders AS orders ON orders.id = payments.order_id"
            " WHERE payments.amount_cents <> orders.total_cents"
            " OR lower(payments.currency) <> lower(orders.currency))",
        ),
        NoRows(
            "refunds recorded never exceed the payment",
            "public.payments",
            "SELECT id FROM {batch} AS checked WHERE refunded_cents > amount_cents OR id IN ("
            "SELECT refunds.payment_id FROM public.payment_refunds AS refunds"
            " JOIN public.payments AS payments ON payments.id = refunds.payment_id"
            " WHERE refunds.status IN ('pending', 'requires_action', 'succeeded')"
            " GROUP BY refunds.payment_id, payments.refunded_cents"
            " HAVING sum(refunds.amount_cents) > payments.refunded_cents)",
        ),
    ),
)

RAW_FRESHNESS = Suite(
    "raw_freshness",
    "The portal is taking orders: the newest order is recent (QUALITY_ORDERS_MAX_AGE_HOURS).",
    (
        NoRows(
            "the newest order is recent",
            "public.orders",
            "SELECT max(created_at) AS newest FROM {batch}"
            " HAVING max(created_at) < {now} - {orders_max_age}",
        ),
    ),
)

# The patterns are constants; `_literal` doubles their braces for the template.
PHI_COLUMNS_QUERY = (
    (
        "SELECT table_name, column_name FROM {batch} WHERE table_schema = 'analytics'"
        " AND column_name ~* '<column pattern>' AND column_name NOT IN (<allowed>)"
    )
    .replace("<column pattern>", _literal(PHI_COLUMN_PATTERN))
    .replace("<allowed>", ", ".join(f"'{name}'" for name in PHI_COLUMN_ALLOWED))
)
PHI_VALUES_QUERY = (
    (
        # CASE: only text columns are looked into, whatever order the planner picks. Each
        # column's distinct values are matched once (codes repeat a million times); a value that
        # matches is matched again without its UUIDs, as a key that embeds one
        # (`2026-01-05:<product id>`) can hold ten digits in a row.
        "SELECT table_name, column_name FROM {batch} WHERE table_schema = 'analytics'"
        " AND CASE WHEN data_type IN ('text', 'character varying', 'character')"
        " THEN (xpath('/row/n/text()', query_to_xml(format("
        "'SELECT count(*) AS n FROM (SELECT DISTINCT %I::text AS v FROM %I.%I) AS d"
        " WHERE CASE WHEN v ~ %L THEN regexp_replace(v, %L, '''', ''g'') ~ %L ELSE false END',"
        " column_name, table_schema, table_name, '<phi pattern>', '<uuid>', '<phi pattern>'),"
        " false, true, '')))[1]::text::bigint > 0 ELSE false END"
    )
    .replace("<phi pattern>", _literal(f"({EMAIL_VALUE_PATTERN})|({PHONE_VALUE_PATTERN})"))
    .replace("<uuid>", _literal(UUID_PATTERN))
)

MARTS_PHI = Suite(
    "marts_phi",
    "No mart holds PHI: no column named like a person's details, no e-mail- or phone-shaped"
    " value in any text column.",
    (
        NoRows(
            "no column named like PHI (name, e-mail, phone, birth date, address, note)",
            "information_schema.columns",
            PHI_COLUMNS_QUERY,
        ),
        # Each text column of each mart, looked into with one dynamic count per column
        # (query_to_xml), so marts added later are covered without a change here.
        NoRows(
            "no e-mail- or phone-shaped value in a mart",
            "information_schema.columns",
            PHI_VALUES_QUERY,
        ),
    ),
)

MART_KEYS = {
    "fct_orders": "order_id",
    "fct_order_items": "order_item_id",
    "fct_payments": "payment_id",
    "fct_revenue_daily": "revenue_day_key",
    "fct_orders_daily": "order_date",
    "fct_inventory_velocity": "product_id",
    "fct_fulfilment_times": "period_key",
    "fct_lot_expiry": "lot_expiry_key",
    "dim_products": "product_id",
    "dim_date": "date_day",
    "fct_monthly_metrics": "month_start",
}

MARTS_KEYS = Suite(
    "marts_keys",
    "Each mart's key is unique and present.",
    tuple(
        UniqueKey(f"{table}.{column} unique and not null", f"analytics.{table}", column)
        for table, column in MART_KEYS.items()
    ),
)

MARTS_FRESHNESS = Suite(
    "marts_freshness",
    "The marts keep up with the portal: their newest order and payment change are at most"
    " QUALITY_MARTS_MAX_LAG_HOURS behind the source's.",
    (
        NoRows(
            "fct_orders has the newest orders",
            "analytics.fct_orders",
            "SELECT source.newest FROM (SELECT max(created_at) AS newest FROM public.orders)"
            " AS source, (SELECT max(created_at) AS newest FROM {batch}) AS mart"
            " WHERE source.newest > coalesce(mart.newest, '-infinity') + {marts_max_lag}",
        ),
        NoRows(
            "fct_payments has the latest payment changes",
            "analytics.fct_payments",
            "SELECT source.newest FROM"
            " (SELECT max(coalesce(updated_at, created_at)) AS newest FROM public.payments)"
            " AS source, (SELECT max(source_updated_at) AS newest FROM {batch}) AS mart"
            " WHERE source.newest > coalesce(mart.newest, '-infinity') + {marts_max_lag}",
        ),
    ),
)

SUITES: dict[str, Suite] = {
    suite.name: suite
    for suite in (
        RAW_INVENTORY,
        RAW_PAYMENTS,
        RAW_FRESHNESS,
        MARTS_PHI,
        MARTS_KEYS,
        MARTS_FRESHNESS,
    )
}
