-- Money given back, one row per refund and the day it counts on.
--
-- Refunds count as the portal counts them (app.payments.service.COUNTED_REFUNDS: pending,
-- requires_action, succeeded), dated when Stripe's refund was first recorded. A payment's
-- `refunded_cents` is the portal's authority: when it is more than its recorded refunds (Stripe
-- told only the charge's total, or said the amount was already refunded), the remainder is a
-- row of its own, dated when the payment last changed. So the refunds of every payment sum to
-- its `refunded_cents`.
with payments as (
    select payment_id, payment_method, currency, refunded_cents, updated_at
    from {{ ref('stg_portal__payments') }}
    where payment_status = 'succeeded' and refunded_cents > 0
),

recorded as (
    select r.refund_id, r.payment_id, r.amount_cents, r.created_at
    from {{ ref('stg_portal__payment_refunds') }} as r
    where r.refund_status in ('pending', 'requires_action', 'succeeded')
),

recorded_per_payment as (
    select payment_id, sum(amount_cents) as recorded_cents
    from recorded
    group by payment_id
),

events as (
    select
        recorded.refund_id,
        recorded.payment_id,
        recorded.amount_cents,
        recorded.created_at as refunded_at,
        false as is_unattributed
    from recorded
    inner join payments on payments.payment_id = recorded.payment_id

    union all

    select
        'remainder:' || payments.payment_id::text as refund_id,
        payments.payment_id,
        payments.refunded_cents - coalesce(recorded_per_payment.recorded_cents, 0) as amount_cents,
        payments.updated_at as refunded_at,
        true as is_unattributed
    from payments
    left join recorded_per_payment on recorded_per_payment.payment_id = payments.payment_id
    where payments.refunded_cents > coalesce(recorded_per_payment.recorded_cents, 0)
)

select
    events.refund_id,
    events.payment_id,
    payments.payment_method,
    payments.currency,
    events.amount_cents,
    events.refunded_at,
    {{ utc_date('events.refunded_at') }} as refund_date,
    events.is_unattributed
from events
inner join payments on payments.payment_id = events.payment_id
