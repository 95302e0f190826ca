-- An order's total is the sum of its lines (quantity x unit price), in the facts as in the
-- portal. Rows returned are the orders that disagree.
select
    orders.order_id,
    orders.total_cents,
    coalesce(sum(items.line_total_cents), 0) as lines_cents
from {{ ref('fct_orders') }} as orders
left join {{ ref('fct_order_items') }} as items on items.order_id = orders.order_id
group by orders.order_id, orders.total_cents
having orders.total_cents <> coalesce(sum(items.line_total_cents), 0)
