-- The monthly export is the days added up: revenue from fct_revenue_daily, orders from
-- fct_orders_daily. Rows returned are the months that disagree.
with days as (
    select date_trunc('month', revenue_date)::date as month_start, sum(net_cents) as net_cents,
        sum(gross_cents) as gross_cents
    from {{ ref('fct_revenue_daily') }}
    group by 1
),

orders as (
    select date_trunc('month', order_date)::date as month_start, sum(orders_placed) as placed
    from {{ ref('fct_orders_daily') }}
    group by 1
)

select monthly.month_start
from {{ ref('fct_monthly_metrics') }} as monthly
left join days on days.month_start = monthly.month_start
left join orders on orders.month_start = monthly.month_start
where monthly.net_cents <> coalesce(days.net_cents, 0)
    or monthly.gross_cents <> coalesce(days.gross_cents, 0)
    or monthly.orders_placed <> coalesce(orders.placed, 0)
