select
    stripe_refund_id as refund_id,
    payment_id,
    amount_cents::bigint as amount_cents,
    lower(currency)::text as currency,
    status::text as refund_status,
    created_at,
    coalesce(updated_at, created_at) as updated_at
from {{ source('portal', 'payment_refunds') }}
