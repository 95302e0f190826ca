-- `status_reason` (staff's free text) is left out.
select
    id as lot_id,
    product_id,
    lot_number::text as lot_number,
    expiration_date,
    quantity_on_hand::bigint as quantity_on_hand,
    quantity_reserved::bigint as quantity_reserved,
    status::text as lot_status,
    status_changed_at,
    created_at
from {{ source('portal', 'lots') }}
