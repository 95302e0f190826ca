"""The dbt marts (`analytics.*`), read as the read-only analyst role (UI_ANALYTICS_DATABASE_URL).

Never the portal's own tables: the analyst role may read `analytics` and nothing else, and
every query here names only `analytics.` relations. Answers are cached for UI_CACHE_SECONDS
(`st.cache_data`), so a page opened again within that time does not query at all.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
import psycopg
import streamlit as st

from dashboards.settings import get_ui_settings

# Every schema-qualified relation a mart query reads must be in `analytics` (the analyst
# role's grants are the real guarantee; this catches a mistake before it reaches the server).
_RELATION = re.compile(r"\b(?:from|join)\s+([a-z_]\w*\.[a-z_]\w*)", re.IGNORECASE)
STATEMENT_TIMEOUT_MS = 10_000


class MartsUnavailable(Exception):
    """No analytics database configured, or it cannot be read; the page says so plainly."""


def _check_relations(sql: str) -> None:
    for relation in _RELATION.findall(sql):
        if not relation.lower().startswith("analytics."):
            raise ValueError(f"mart queries read analytics.* only, not {relation}")


def _connect() -> psycopg.Connection[Any]:
    url = get_ui_settings().ui_analytics_database_url
    if not url:
        raise MartsUnavailable("Analytics are not configured (UI_ANALYTICS_DATABASE_URL is unset).")
    try:
        return psycopg.connect(
            url,
            connect_timeout=5,
            options=(
                f"-c default_transaction_read_only=on -c statement_timeout={STATEMENT_TIMEOUT_MS}"
            ),
        )
    except psycopg.Error as exc:
        raise MartsUnavailable("The analytics database cannot be reached.") from exc


@st.cache_data(ttl=get_ui_settings().ui_cache_seconds, show_spinner=False)
def query(sql: str, params: tuple[Any, ...] | dict[str, Any] | None = None) -> pd.DataFrame:
    """Rows of a query over `analytics.*` as a DataFrame (cached)."""
    _check_relations(sql)
    with _connect() as conn:
        try:
            cursor = conn.execute(sql, params)
        except psycopg.errors.UndefinedTable as exc:
            raise MartsUnavailable(
                "The marts are not built yet (the dbt run has not happened)."
            ) from exc
        except psycopg.errors.InsufficientPrivilege as exc:
            raise MartsUnavailable("The analyst role may not read this mart.") from exc
        columns = [c.name for c in cursor.description or []]
        return pd.DataFrame(cursor.fetchall(), columns=columns)


def mart(sql: str, params: tuple[Any, ...] | dict[str, Any] | None = None) -> pd.DataFrame | None:
    """`query`, or None after telling the user why the numbers are missing."""
    try:
        return query(sql, params)
    except MartsUnavailable as exc:
        st.info(str(exc), icon=":material/database_off:")
        return None


# --- The queries of the analytics pages (also timed by benchmarks/portal_pages.py) -----------
# Days are the marts' days (UTC dates); money stays in cents until the page formats it.

ORDERS_PER_DAY = """
select order_date, orders_placed, orders_paid, orders_fulfilled, orders_cancelled,
    value_placed_cents
from analytics.fct_orders_daily
where order_date between %(start)s and %(end)s
order by order_date
"""

REVENUE_PER_DAY = """
select revenue_date, sum(gross_cents)::bigint as gross_cents,
    sum(refunds_cents)::bigint as refunds_cents, sum(net_cents)::bigint as net_cents
from analytics.fct_revenue_daily
where revenue_date between %(start)s and %(end)s
group by revenue_date
order by revenue_date
"""

ORDERS_BY_STATUS = """
select order_status, count(*) as orders, sum(total_cents)::bigint as total_cents
from analytics.fct_orders
where created_date between %(start)s and %(end)s
group by order_status
order by orders desc
"""

FULFILMENT_PERCENTILES = """
select count(*) as orders_fulfilled,
    percentile_cont(0.5) within group (order by hours_to_pay) as p50_hours_to_pay,
    percentile_cont(0.9) within group (order by hours_to_pay) as p90_hours_to_pay,
    percentile_cont(0.5) within group (order by hours_paid_to_fulfilled)
        as p50_hours_paid_to_fulfilled,
    percentile_cont(0.9) within group (order by hours_paid_to_fulfilled)
        as p90_hours_paid_to_fulfilled,
    percentile_cont(0.99) within group (order by hours_paid_to_fulfilled)
        as p99_hours_paid_to_fulfilled,
    percentile_cont(0.5) within group (order by hours_created_to_fulfilled)
        as p50_hours_created_to_fulfilled,
    percentile_cont(0.9) within group (order by hours_created_to_fulfilled)
        as p90_hours_created_to_fulfilled,
    percentile_cont(0.99) within group (order by hours_created_to_fulfilled)
        as p99_hours_created_to_fulfilled
from analytics.fct_orders
where fulfilled_date between %(start)s and %(end)s
"""

FULFILMENT_PER_DAY = """
select period_start as fulfilled_date, p50_hours_created_to_fulfilled,
    p90_hours_created_to_fulfilled
from analytics.fct_fulfilment_times
where period = 'day' and period_start between %(start)s and %(end)s
order by period_start
"""

# Low stock: sellable at or under par, with days of cover at the 30-day pace.
LOW_STOCK = """
select products.sku, products.product_name, velocity.sellable_units, velocity.par_level,
    products.reorder_quantity, velocity.units_sold_30d, velocity.days_of_cover_30d,
    products.next_expiration_date
from analytics.fct_inventory_velocity as velocity
join analytics.dim_products as products on products.product_id = velocity.product_id
where products.is_active and velocity.is_at_or_under_par
order by velocity.days_of_cover_30d nulls first, velocity.sellable_units, products.sku
limit 500
"""

# Stock expiring within the window (not past), and stock already past its date, by product.
EXPIRING = """
select products.sku, products.product_name, min(expiry.expiry_week) as first_expiry_week,
    sum(expiry.lots_count)::bigint as lots, sum(expiry.units_on_hand)::bigint as units_on_hand,
    sum(expiry.value_cents)::bigint as value_cents, bool_or(expiry.is_past) as expired
from analytics.fct_lot_expiry as expiry
join analytics.dim_products as products on products.product_id = expiry.product_id
where expiry.expiry_week <= %(horizon)s
group by products.sku, products.product_name
order by bool_or(expiry.is_past) desc, min(expiry.expiry_week), products.sku
limit 500
"""

MONTHLY_METRICS = """
select month, orders_placed, self_orders_placed, orders_paid, orders_fulfilled,
    orders_cancelled, units_sold, payments_count, refunds_count, gross_cents, refunds_cents,
    net_cents, average_order_value_cents, refund_rate, new_patients,
    new_self_registered_patients, ordering_doctors
from analytics.fct_monthly_metrics
where month_start between %(start)s and %(end)s
order by month_start
"""

MARTS_BUILT_AT = """
select max(source_updated_at) as newest_change from analytics.fct_orders
"""
