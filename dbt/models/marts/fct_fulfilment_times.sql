-- How long orders take, per day (UTC) and per month: created -> paid over the orders paid that
-- day, paid -> fulfilled and created -> fulfilled over the orders fulfilled that day; p50, p90
-- and p99 in hours. `period` is 'day' or 'month'.
{% set grains = ['day', 'month'] %}
with orders as (
    select paid_date, fulfilled_date, hours_to_pay, hours_paid_to_fulfilled,
        hours_created_to_fulfilled
    from {{ ref('fct_orders') }}
    where paid_date is not null
),

{% for grain in grains %}
paid_{{ grain }} as (
    select
        date_trunc('{{ grain }}', paid_date)::date as period_start,
        count(*) as orders_paid,
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
        fulfilled.p99_hours_created_to_fulfilled
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
