-- Money in and out per day (UTC) and payment method: gross = succeeded payments, on the day
-- they succeeded; refunds on the day they were recorded (see int_refund_events); net = gross
-- minus refunds. Amounts in cents; the *_amount columns are the same in dollars.
with gross as (
    select
        succeeded_date as revenue_date,
        payment_method,
        currency,
        count(*) as payments_count,
        sum(amount_cents) as gross_cents
    from {{ ref('fct_payments') }}
    where payment_status = 'succeeded'
    group by 1, 2, 3
),

refunds as (
    select
        refund_date as revenue_date,
        payment_method,
        currency,
        count(*) as refunds_count,
        sum(amount_cents) as refunds_cents
    from {{ ref('int_refund_events') }}
    group by 1, 2, 3
),

daily as (
    select
        coalesce(gross.revenue_date, refunds.revenue_date) as revenue_date,
        coalesce(gross.payment_method, refunds.payment_method) as payment_method,
        coalesce(gross.currency, refunds.currency) as currency,
        coalesce(gross.payments_count, 0) as payments_count,
        coalesce(refunds.refunds_count, 0) as refunds_count,
        coalesce(gross.gross_cents, 0) as gross_cents,
        coalesce(refunds.refunds_cents, 0) as refunds_cents
    from gross
    full outer join refunds
        on refunds.revenue_date = gross.revenue_date
        and refunds.payment_method = gross.payment_method
        and refunds.currency = gross.currency
)

select
    revenue_date || ':' || payment_method || ':' || currency as revenue_day_key,
    revenue_date,
    payment_method,
    currency,
    payments_count,
    refunds_count,
    gross_cents,
    refunds_cents,
    gross_cents - refunds_cents as net_cents,
    {{ cents_to_dollars('gross_cents') }} as gross_amount,
    {{ cents_to_dollars('refunds_cents') }} as refunds_amount,
    {{ cents_to_dollars('gross_cents - refunds_cents') }} as net_amount
from daily
