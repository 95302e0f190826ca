{{
    config(
        materialized='incremental',
        unique_key='order_date',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        indexes=[{'columns': ['order_date'], 'unique': True}],
    )
}}
-- Orders per day (UTC): placed (and what they were worth), paid, fulfilled and cancelled that
-- day, each counted on the day it happened.
--
-- Incremental by day: the days on which an order changed since the last run was placed, paid,
-- fulfilled or cancelled are counted again, whole, from every order of those days; the other
-- days are kept. `source_updated_at` is the newest change of an order counted that day (the
-- watermark). An order's days are set once (never moved to another day).
{% if is_incremental() %}
    {% set changed %}
        select created_date, paid_date, fulfilled_date, cancelled_date
        from {{ ref('fct_orders') }}
        where {{ changed_since_last_run('source_updated_at') }}
    {% endset %}
    {% set touched = date_list(
        "select created_date from (" ~ changed ~ ") as c"
        ~ " union select paid_date from (" ~ changed ~ ") as c"
        ~ " union select fulfilled_date from (" ~ changed ~ ") as c"
        ~ " union select cancelled_date from (" ~ changed ~ ") as c") %}
{% endif %}
with

orders as (
    select created_date, paid_date, fulfilled_date, cancelled_date, is_self_order, units,
        total_cents, cancellation_code, source_updated_at
    from {{ ref('fct_orders') }}
    {% if is_incremental() %}
    where created_date in {{ touched }}
        or paid_date in {{ touched }}
        or fulfilled_date in {{ touched }}
        or cancelled_date in {{ touched }}
    {% endif %}
),

placed as (
    select
        created_date as order_date,
        count(*) as orders_placed,
        count(*) filter (where is_self_order) as self_orders_placed,
        sum(units) as units_placed,
        sum(total_cents) as value_placed_cents,
        max(source_updated_at) as source_updated_at
    from orders
    group by 1
),

paid as (
    select
        paid_date as order_date,
        count(*) as orders_paid,
        sum(units) as units_paid,
        max(source_updated_at) as source_updated_at
    from orders
    where paid_date is not null
    group by 1
),

fulfilled as (
    select
        fulfilled_date as order_date,
        count(*) as orders_fulfilled,
        max(source_updated_at) as source_updated_at
    from orders
    where fulfilled_date is not null
    group by 1
),

cancelled as (
    select
        cancelled_date as order_date,
        count(*) as orders_cancelled,
        count(*) filter (where cancellation_code = 'payment_expired') as orders_expired,
        max(source_updated_at) as source_updated_at
    from orders
    where cancelled_date is not null
    group by 1
),

days as (
    select order_date from placed
    union select order_date from paid
    union select order_date from fulfilled
    union select order_date from cancelled
)

select
    days.order_date,
    coalesce(placed.orders_placed, 0) as orders_placed,
    coalesce(placed.self_orders_placed, 0) as self_orders_placed,
    coalesce(placed.units_placed, 0) as units_placed,
    coalesce(placed.value_placed_cents, 0) as value_placed_cents,
    coalesce(paid.orders_paid, 0) as orders_paid,
    coalesce(paid.units_paid, 0) as units_paid,
    coalesce(fulfilled.orders_fulfilled, 0) as orders_fulfilled,
    coalesce(cancelled.orders_cancelled, 0) as orders_cancelled,
    coalesce(cancelled.orders_expired, 0) as orders_expired,
    {{ cents_to_dollars('coalesce(placed.value_placed_cents, 0)') }} as value_placed_amount,
    greatest(
        placed.source_updated_at,
        paid.source_updated_at,
        fulfilled.source_updated_at,
        cancelled.source_updated_at
    ) as source_updated_at
from days
left join placed on placed.order_date = days.order_date
left join paid on paid.order_date = days.order_date
left join fulfilled on fulfilled.order_date = days.order_date
left join cancelled on cancelled.order_date = days.order_date
{% if is_incremental() %}
where days.order_date in {{ touched }}
{% endif %}
