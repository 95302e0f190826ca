-- Each day's net revenue equals the payments that succeeded that day minus the refunds recorded
-- that day, computed again from staging. Rows returned are the days that disagree.
with payments as (
    select
        {{ utc_date('coalesce(succeeded_at, updated_at)') }} as day,
        sum(amount_cents) as cents
    from {{ ref('stg_portal__payments') }}
    where payment_status = 'succeeded'
    group by 1
),

refunds as (
    select refund_date as day, sum(amount_cents) as cents
    from {{ ref('int_refund_events') }}
    group by 1
),

expected as (
    select
        coalesce(payments.day, refunds.day) as day,
        coalesce(payments.cents, 0) - coalesce(refunds.cents, 0) as net_cents
    from payments
    full outer join refunds on refunds.day = payments.day
),

actual as (
    select revenue_date as day, sum(net_cents) as net_cents
    from {{ ref('fct_revenue_daily') }}
    group by 1
)

select expected.day, expected.net_cents as expected_net_cents, actual.net_cents as mart_net_cents
from expected
full outer join actual on actual.day = expected.day
where coalesce(expected.net_cents, 0) <> coalesce(actual.net_cents, 0)
