-- Stock that expires, by week of expiry (weeks start on Monday) and product: lots still
-- holding units (available or quarantined) with an expiry date, their units and their value at
-- today's catalogue price. Weeks before `as_of_date`'s are stock already past its date.
with lots as (
    select
        date_trunc('week', lots.expiration_date)::date as expiry_week,
        lots.product_id,
        lots.quantity_on_hand,
        lots.quantity_reserved,
        lots.quantity_on_hand * products.price_cents as value_cents
    from {{ ref('stg_portal__lots') }} as lots
    inner join {{ ref('stg_portal__products') }} as products
        on products.product_id = lots.product_id
    where lots.expiration_date is not null
        and lots.quantity_on_hand > 0
        and lots.lot_status in ('available', 'quarantined')
)

select
    expiry_week || ':' || product_id as lot_expiry_key,
    expiry_week,
    product_id,
    count(*) as lots_count,
    sum(quantity_on_hand) as units_on_hand,
    sum(quantity_reserved) as units_reserved,
    sum(value_cents) as value_cents,
    expiry_week + 6 < {{ as_of_date() }} as is_past,
    {{ cents_to_dollars('sum(value_cents)') }} as value_amount
from lots
group by expiry_week, product_id
