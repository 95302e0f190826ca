-- Orders per day (UTC): placed (and what they were worth), paid, fulfilled and cancelled that
-- day, each counted on the day it happened.
with placed as (
    select
        created_date as order_date,
        count(*) as orders_placed,
        count(*) filter (where is_self_order) as self_orders_placed,
        sum(units) as units_placed,
        sum(total_cents) as value_placed_cents
    from {{ ref('fct_orders') }}
    group by 1
),

paid as (
    select paid_date as order_date, count(*) as orders_paid, sum(units) as units_paid
    from {{ ref('fct_orders') }}
    where paid_date is not null
    group by 1
),

fulfilled as (
    select fulfilled_date as order_date, count(*) as orders_fulfilled
    from {{ ref('fct_orders') }}
    where fulfilled_date is not null
    group by 1
),

cancelled as (
    select
        cancelled_date as order_date,
        count(*) as orders_cancelled,
        count(*) filter (where cancellation_code = 'payment_expired') as orders_expired
    from {{ ref('fct_orders') }}
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
    {{ cents_to_dollars('coalesce(placed.value_placed_cents, 0)') }} as value_placed_amount
from days
left join placed on placed.order_date = days.order_date
left join paid on paid.order_date = days.order_date
left join fulfilled on fulfilled.order_date = days.order_date
left join cancelled on cancelled.order_date = days.order_date
