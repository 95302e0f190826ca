select
    id as order_item_id,
    order_id,
    product_id,
    quantity::bigint as quantity,
    unit_price_cents::bigint as unit_price_cents,
    quantity::bigint * unit_price_cents::bigint as line_total_cents
from {{ source('portal', 'order_items') }}
