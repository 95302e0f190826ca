-- No PHI: the free-text notes (encrypted) are left out.
select
    id as order_id,
    patient_id,
    doctor_id,
    doctor_id is null as is_self_order,
    status::text as order_status,
    total_cents::bigint as total_cents,
    lower(currency)::text as currency,
    created_at,
    expires_at,
    paid_at,
    fulfilled_at,
    cancelled_at,
    cancellation_code::text as cancellation_code,
    coalesce(updated_at, created_at) as updated_at
from {{ source('portal', 'orders') }}
