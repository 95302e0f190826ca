-- The incremental facts hold every source row, and nothing more (a missed late change or a
-- dropped row shows here): counts and sums against staging.
with checks as (
    select 'orders' as fact,
        (select count(*) from {{ ref('fct_orders') }}) as fact_rows,
        (select count(*) from {{ ref('stg_portal__orders') }}) as source_rows,
        (select coalesce(sum(total_cents), 0) from {{ ref('fct_orders') }}) as fact_sum,
        (select coalesce(sum(total_cents), 0) from {{ ref('stg_portal__orders') }}) as source_sum
    union all
    select 'order_items',
        (select count(*) from {{ ref('fct_order_items') }}),
        (select count(*) from {{ ref('stg_portal__order_items') }}),
        (select coalesce(sum(line_total_cents), 0) from {{ ref('fct_order_items') }}),
        (select coalesce(sum(line_total_cents), 0) from {{ ref('stg_portal__order_items') }})
    union all
    select 'payments',
        (select count(*) from {{ ref('fct_payments') }}),
        (select count(*) from {{ ref('stg_portal__payments') }}),
        (select coalesce(sum(refunded_cents), 0) from {{ ref('fct_payments') }}),
        (select coalesce(sum(refunded_cents), 0) from {{ ref('stg_portal__payments') }})
)

select * from checks
where fact_rows <> source_rows or fact_sum <> source_sum
