-- The catalogue's description is free text nobody analyses: left out.
select
    id as product_id,
    sku::text as sku,
    name::text as product_name,
    price_cents::bigint as price_cents,
    lower(currency)::text as currency,
    par_level,
    reorder_quantity,
    requires_prescription,
    perishable as is_perishable,
    active as is_active,
    created_at
from {{ source('portal', 'products') }}
