-- The catalogue with its stock now: units on hand and sellable (available, not past expiry),
-- lots and the next expiry date of sellable stock.
with stock as (
    select
        product_id,
        count(*) as lots_count,
        sum(quantity_on_hand) as units_on_hand,
        sum(quantity_on_hand - quantity_reserved) filter (
            where lot_status = 'available'
                and (expiration_date is null or expiration_date >= {{ as_of_date() }})
        ) as sellable_units,
        min(expiration_date) filter (
            where lot_status = 'available' and expiration_date >= {{ as_of_date() }}
        ) as next_expiration_date
    from {{ ref('stg_portal__lots') }}
    group by product_id
)

select
    products.product_id,
    products.sku,
    products.product_name,
    products.currency,
    products.price_cents,
    products.par_level,
    products.reorder_quantity,
    products.requires_prescription,
    products.is_perishable,
    products.is_active,
    products.created_at,
    coalesce(stock.lots_count, 0) as lots_count,
    coalesce(stock.units_on_hand, 0) as units_on_hand,
    coalesce(stock.sellable_units, 0) as sellable_units,
    stock.next_expiration_date,
    {{ cents_to_dollars('products.price_cents') }} as price_amount
from {{ ref('stg_portal__products') }} as products
left join stock on stock.product_id = products.product_id
