-- `failure_reason` (Stripe's free text) is left out.
select
    id as payment_id,
    order_id,
    stripe_payment_intent_id,
    status::text as payment_status,
    coalesce(method, 'unknown')::text as payment_method,
    amount_cents::bigint as amount_cents,
    refunded_cents::bigint as refunded_cents,
    lower(currency)::text as currency,
    disputed as is_disputed,
    refunded_after_fulfilment as is_refunded_after_fulfilment,
    created_at,
    succeeded_at,
    coalesce(updated_at, created_at) as updated_at
from {{ source('portal', 'payments') }}
