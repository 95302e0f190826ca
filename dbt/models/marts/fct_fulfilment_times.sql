{{
    config(
        materialized='incremental',
        unique_key='period_key',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        indexes=[{'columns': ['period_key'], 'unique': True}],
    )
}}
-- How long orders take, per day (UTC) and per month: created -> paid over the orders paid that
-- day, paid -> fulfilled and created -> fulfilled over the orders fulfilled that day; p50, p90
-- and p99 in hours. `period` is 'day' or 'month'.
--
-- Incremental by period: the days and months in which an order changed since the last run was
-- paid or fulfilled are computed again, whole, from every order of those periods (percentiles
-- cannot be merged); the others are kept. `source_updated_at` is the newest change of an order
-- of the period (the watermark). An order's paid and fulfilled days are set once (never moved
-- to another day), so no other period can change.
{% set grains = ['day', 'month'] %}
{% if is_incremental() %}
    {% set changed %}
        select paid_date, fulfilled_date from {{ ref('fct_orders') }}
        where {{ changed_since_last_run('source_updated_at') }} and paid_date is not null
    {% endset %}
    {% set days %}
        select paid_date from ({{ changed }}) as c
        union select fulfilled_date from ({{ changed }}) as c
    {% endset %}
    {% set touched_days = date_list(days) %}
    {% set touched_months = date_list("select date_trunc('month', d)::date from (" ~ days ~ ") as x(d)") %}
    {% set first_month = inline_value(
        "select quote_literal(min(date_trunc('month', d))::date::text) from (" ~ days ~ ") as x(d)",
        "'infinity'") %}
{% endif %}
with
orders as (
    select paid_date, fulfilled_date, hours_to_pay, hours_paid_to_fulfilled,
        hours_created_to_fulfilled, source_updated_at
    from {{ ref('fct_orders') }}
    where paid_date is not null
    {% if is_incremental() %}
    -- every order paid or fulfilled in a touched month: a superset of each touched period's
    and (paid_date >= {{ first_month }}::date or fulfilled_date >= {{ first_month }}::date)
    and (
        date_trunc('month', paid_date)::date in {{ touched_months }}
        or date_trunc('month', fulfilled_date)::date in {{ touched_months }}
    )
    {% endif %}
),

{% for grain in grains %}
paid_{{ grain }} as (
    select
        date_trunc('{{ grain }}', paid_date)::date as period_start,
        count(*) as orders_paid,
        max(source_updated_at) as source_updated_at,
        percentile_cont(0.5) within group (order by hours_to_pay) as p50_hours_to_pay,
        percentile_cont(0.9) within group (order by hours_to_pay) as p90_hours_to_pay,
        percentile_cont(0.99) within group (order by hours_to_pay) as p99_hours_to_pay
    from orders
    group by 1
),

fulfilled_{{ grain }} as (
    select
        date_trunc('{{ grain }}', fulfilled_date)::date as period_start,
        count(*) as orders_fulfilled,
        max(source_updated_at) as source_updated_at,
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
    from orders
    where fulfilled_date is not null
    group by 1
),

by_{{ grain }} as (
    select
        '{{ grain }}'::text as period,
        coalesce(paid.period_start, fulfilled.period_start) as period_start,
        coalesce(paid.orders_paid, 0) as orders_paid,
        coalesce(fulfilled.orders_fulfilled, 0) as orders_fulfilled,
        paid.p50_hours_to_pay,
        paid.p90_hours_to_pay,
        paid.p99_hours_to_pay,
        fulfilled.p50_hours_paid_to_fulfilled,
        fulfilled.p90_hours_paid_to_fulfilled,
        fulfilled.p99_hours_paid_to_fulfilled,
        fulfilled.p50_hours_created_to_fulfilled,
        fulfilled.p90_hours_created_to_fulfilled,
        fulfilled.p99_hours_created_to_fulfilled,
        greatest(paid.source_updated_at, fulfilled.source_updated_at) as source_updated_at
    from paid_{{ grain }} as paid
    full outer join fulfilled_{{ grain }} as fulfilled
        on fulfilled.period_start = paid.period_start
){% if not loop.last %},{% endif %}
{% endfor %}

select period || ':' || period_start as period_key, *
from (
    {% for grain in grains %}
    select * from by_{{ grain }}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}
) as periods
{% if is_incremental() %}
where (period = 'day' and period_start in {{ touched_days }})
    or (period = 'month' and period_start in {{ touched_months }})
{% endif %}
