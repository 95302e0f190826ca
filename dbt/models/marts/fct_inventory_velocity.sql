-- Per product, as of `as_of_date`: units sold (paid, not cancelled) over the last 7, 30 and 90
-- days, units per day over each window, sellable stock (available lots not past their expiry:
-- on hand minus reserved) and days of cover at the 30-day pace (null when nothing sold).
with sold as (
    select
        product_id,
        sum(quantity) filter (where paid_date > {{ as_of_date() }} - 7) as units_7d,
        sum(quantity) filter (where paid_date > {{ as_of_date() }} - 30) as units_30d,
        sum(quantity) as units_90d
    from {{ ref('fct_order_items') }}
    where paid_date > {{ as_of_date() }} - 90
        and paid_date <= {{ as_of_date() }}
        and order_status in ('paid', 'fulfilled')
    group by product_id
),

stock as (
    select
        product_id,
        sum(quantity_on_hand - quantity_reserved) as sellable_units
    from {{ ref('stg_portal__lots') }}
    where lot_status = 'available'
        and (expiration_date is null or expiration_date >= {{ as_of_date() }})
    group by product_id
),

velocity as (
    select
        products.product_id,
        coalesce(sold.units_7d, 0) as units_sold_7d,
        coalesce(sold.units_30d, 0) as units_sold_30d,
        coalesce(sold.units_90d, 0) as units_sold_90d,
        coalesce(stock.sellable_units, 0) as sellable_units,
        products.par_level
    from {{ ref('stg_portal__products') }} as products
    left join sold on sold.product_id = products.product_id
    left join stock on stock.product_id = products.product_id
)

select
    product_id,
    {{ as_of_date() }} as as_of_date,
    units_sold_7d,
    units_sold_30d,
    units_sold_90d,
    round(units_sold_7d / 7.0, 3) as units_per_day_7d,
    round(units_sold_30d / 30.0, 3) as units_per_day_30d,
    round(units_sold_90d / 90.0, 3) as units_per_day_90d,
    sellable_units,
    par_level,
    sellable_units <= par_level as is_at_or_under_par,
    case when units_sold_30d > 0
        then round(sellable_units / (units_sold_30d / 30.0), 1) end as days_of_cover_30d,
    case when units_sold_7d > 0
        then round(sellable_units / (units_sold_7d / 7.0), 1) end as days_of_cover_7d
from velocity
