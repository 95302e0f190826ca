{{
    config(
        materialized='incremental',
        unique_key='order_id',
        incremental_strategy='merge',
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['order_id'], 'unique': True},
            {'columns': ['source_updated_at']},
            {'columns': ['created_date']},
            {'columns': ['paid_date']},
            {'columns': ['fulfilled_date']},
            {'columns': ['cancelled_date']},
        ],
    )
}}
-- One row per order: its life (created, paid, fulfilled, cancelled), its lines and what was
-- paid and refunded for it. No patient: analysts count patients in fct_monthly_metrics.
--
-- Incremental: orders changed (status, items) or whose payments changed (a refund, a dispute)
-- since the newest row built, less the look-back, are merged again.
with
{% if is_incremental() %}
changed as (
    select order_id from {{ ref('stg_portal__orders') }}
    where {{ changed_since_last_run('updated_at') }}
    union
    select order_id from {{ ref('stg_portal__payments') }}
    where {{ changed_since_last_run('updated_at') }}
),
{% endif %}

orders as (
    select * from {{ ref('stg_portal__orders') }}
    {% if is_incremental() %}where order_id in (select order_id from changed){% endif %}
),

items as (
    select
        order_id,
        count(*) as items_count,
        sum(quantity) as units,
        sum(line_total_cents) as items_total_cents
    from {{ ref('stg_portal__order_items') }}
    {% if is_incremental() %}where order_id in (select order_id from orders){% endif %}
    group by order_id
),

payments as (
    select
        order_id,
        count(*) as payments_count,
        coalesce(sum(amount_cents) filter (where payment_status = 'succeeded'), 0) as paid_cents,
        coalesce(sum(refunded_cents) filter (where payment_status = 'succeeded'), 0)
            as refunded_cents,
        -- An order normally has one succeeded payment; with more (a double payment), one
        -- method is shown, without an ordered aggregate that would sort every payment.
        max(payment_method) filter (where payment_status = 'succeeded') as payment_method,
        bool_or(is_disputed) as is_disputed,
        max(updated_at) as updated_at
    from {{ ref('stg_portal__payments') }}
    {% if is_incremental() %}where order_id in (select order_id from orders){% endif %}
    group by order_id
)

select
    orders.order_id,
    orders.doctor_id,
    orders.is_self_order,
    orders.order_status,
    orders.cancellation_code,
    orders.currency,
    orders.total_cents,
    coalesce(items.items_count, 0) as items_count,
    coalesce(items.units, 0) as units,
    coalesce(items.items_total_cents, 0) as items_total_cents,
    coalesce(payments.payments_count, 0) as payments_count,
    coalesce(payments.paid_cents, 0) as paid_cents,
    coalesce(payments.refunded_cents, 0) as refunded_cents,
    coalesce(payments.paid_cents, 0) - coalesce(payments.refunded_cents, 0) as net_paid_cents,
    payments.payment_method,
    coalesce(payments.is_disputed, false) as is_disputed,
    orders.created_at,
    {{ utc_date('orders.created_at') }} as created_date,
    orders.paid_at,
    {{ utc_date('orders.paid_at') }} as paid_date,
    orders.fulfilled_at,
    {{ utc_date('orders.fulfilled_at') }} as fulfilled_date,
    orders.cancelled_at,
    {{ utc_date('orders.cancelled_at') }} as cancelled_date,
    extract(epoch from orders.paid_at - orders.created_at) / 3600.0 as hours_to_pay,
    extract(epoch from orders.fulfilled_at - orders.paid_at) / 3600.0 as hours_paid_to_fulfilled,
    extract(epoch from orders.fulfilled_at - orders.created_at) / 3600.0
        as hours_created_to_fulfilled,
    greatest(orders.updated_at, payments.updated_at) as source_updated_at,
    {{ cents_to_dollars('orders.total_cents') }} as total_amount,
    {{ cents_to_dollars('coalesce(payments.paid_cents, 0) - coalesce(payments.refunded_cents, 0)') }}
        as net_paid_amount
from orders
left join items on items.order_id = orders.order_id
left join payments on payments.order_id = orders.order_id
