-- All revenue: gross minus refunds in the mart equals what the payments table says was taken
-- and given back (its `refunded_cents`, the portal's own count).
with mart as (
    select sum(gross_cents) as gross_cents, sum(refunds_cents) as refunds_cents
    from {{ ref('fct_revenue_daily') }}
),

source as (
    select sum(amount_cents) as gross_cents, sum(refunded_cents) as refunds_cents
    from {{ ref('stg_portal__payments') }}
    where payment_status = 'succeeded'
)

select mart.*, source.gross_cents as source_gross_cents, source.refunds_cents as source_refunds_cents
from mart cross join source
where coalesce(mart.gross_cents, 0) <> coalesce(source.gross_cents, 0)
    or coalesce(mart.refunds_cents, 0) <> coalesce(source.refunds_cents, 0)
