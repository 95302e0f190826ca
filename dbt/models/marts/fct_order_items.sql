{{
    config(
        materialized='incremental',
        unique_key='order_id',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['order_item_id'], 'unique': True},
            {'columns': ['order_id']},
            {'columns': ['source_updated_at']},
        ],
    )
}}
-- One row per product on an order, with the order's status and dates (for units sold).
--
-- Incremental by order: the lines of every order changed since the last run (an edit replaces
-- them, and bumps the order's updated_at) are deleted and inserted again.
with orders as (
    select
        order_id,
        order_status,
        is_self_order,
        created_at,
        paid_at,
        fulfilled_at,
        updated_at
    from {{ ref('stg_portal__orders') }}
    {% if is_incremental() %}where {{ changed_since_last_run('updated_at') }}{% endif %}
)

select
    items.order_item_id,
    items.order_id,
    items.product_id,
    items.quantity,
    items.unit_price_cents,
    items.line_total_cents,
    orders.order_status,
    orders.is_self_order,
    orders.created_at as order_created_at,
    {{ utc_date('orders.created_at') }} as order_created_date,
    orders.paid_at,
    {{ utc_date('orders.paid_at') }} as paid_date,
    orders.fulfilled_at,
    orders.updated_at as source_updated_at,
    {{ cents_to_dollars('items.line_total_cents') }} as line_total_amount
from {{ ref('stg_portal__order_items') }} as items
inner join orders on orders.order_id = items.order_id
