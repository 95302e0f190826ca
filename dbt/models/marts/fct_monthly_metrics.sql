{{
    config(
        materialized='incremental',
        unique_key='month_start',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        indexes=[{'columns': ['month_start'], 'unique': True}],
    )
}}
-- One row per month (UTC): the source of the monthly CSV export. Orders placed, paid,
-- fulfilled, cancelled; units sold (on orders paid that month); gross, refunds and net revenue
-- (fct_revenue_daily summed); average order value (gross over payments that succeeded); new
-- patients and doctors who ordered (counts only: no patient appears in any mart).
--
-- Incremental: every month is written again, but only the costly counts (doctors who ordered,
-- over every order; new patients) are counted again, and only for the months in which an
-- order changed or a patient was created since the last run; the other months keep the counts
-- they have. The sums of the daily marts are cheap and always taken whole.
-- `source_updated_at` is the newest order change or patient creation counted (the watermark).
{% if is_incremental() %}
    {% set months %}
        select date_trunc('month', created_date)::date
        from {{ ref('fct_orders') }}
        where {{ changed_since_last_run('source_updated_at') }}
        union
        select date_trunc('month', {{ utc_date('created_at') }})::date
        from {{ ref('stg_portal__patients') }}
        where {{ changed_since_last_run('created_at') }}
    {% endset %}
    {% set touched = date_list(months) %}
    {% set first_month = inline_value(
        "select quote_literal(min(d)::text) from (" ~ months ~ ") as x(d)", "'infinity'") %}
{% endif %}
with
{% if is_incremental() %}
kept as (
    select month_start, new_patients, new_self_registered_patients, ordering_doctors,
        source_updated_at
    from {{ this }}
    where month_start not in {{ touched }}
),
{% endif %}

revenue as (
    select
        date_trunc('month', revenue_date)::date as month_start,
        sum(payments_count) as payments_count,
        sum(refunds_count) as refunds_count,
        sum(gross_cents) as gross_cents,
        sum(refunds_cents) as refunds_cents,
        sum(net_cents) as net_cents
    from {{ ref('fct_revenue_daily') }}
    group by 1
),

orders as (
    select
        date_trunc('month', order_date)::date as month_start,
        sum(orders_placed) as orders_placed,
        sum(self_orders_placed) as self_orders_placed,
        sum(orders_paid) as orders_paid,
        sum(units_paid) as units_sold,
        sum(orders_fulfilled) as orders_fulfilled,
        sum(orders_cancelled) as orders_cancelled
    from {{ ref('fct_orders_daily') }}
    group by 1
),

doctors as (
    select
        date_trunc('month', orders.created_date)::date as month_start,
        count(distinct orders.doctor_id) filter (where users.staff_role = 'doctor')
            as ordering_doctors,
        max(orders.source_updated_at) as source_updated_at
    from {{ ref('fct_orders') }} as orders
    left join {{ ref('stg_portal__users') }} as users on users.user_id = orders.doctor_id
    {% if is_incremental() %}
    where orders.created_date >= {{ first_month }}::date
        and date_trunc('month', orders.created_date)::date in {{ touched }}
    {% endif %}
    group by 1
),

patients as (
    select
        date_trunc('month', {{ utc_date('created_at') }})::date as month_start,
        count(*) as new_patients,
        count(*) filter (where is_self_registered) as new_self_registered_patients,
        max(created_at) as source_updated_at
    from {{ ref('stg_portal__patients') }}
    {% if is_incremental() %}
    where created_at >= ({{ first_month }}::date::timestamp at time zone 'UTC')
        and date_trunc('month', {{ utc_date('created_at') }})::date in {{ touched }}
    {% endif %}
    group by 1
),

counted as (
    select
        coalesce(doctors.month_start, patients.month_start) as month_start,
        coalesce(patients.new_patients, 0) as new_patients,
        coalesce(patients.new_self_registered_patients, 0) as new_self_registered_patients,
        coalesce(doctors.ordering_doctors, 0) as ordering_doctors,
        greatest(doctors.source_updated_at, patients.source_updated_at) as source_updated_at
    from doctors
    full outer join patients on patients.month_start = doctors.month_start
    {% if is_incremental() %}
    union all
    select * from kept
    {% endif %}
),

months as (
    select month_start from revenue
    union select month_start from orders
    union select month_start from counted
),

monthly as (
    select
        months.month_start,
        coalesce(orders.orders_placed, 0) as orders_placed,
        coalesce(orders.self_orders_placed, 0) as self_orders_placed,
        coalesce(orders.orders_paid, 0) as orders_paid,
        coalesce(orders.orders_fulfilled, 0) as orders_fulfilled,
        coalesce(orders.orders_cancelled, 0) as orders_cancelled,
        coalesce(orders.units_sold, 0) as units_sold,
        coalesce(revenue.payments_count, 0) as payments_count,
        coalesce(revenue.refunds_count, 0) as refunds_count,
        coalesce(revenue.gross_cents, 0) as gross_cents,
        coalesce(revenue.refunds_cents, 0) as refunds_cents,
        coalesce(revenue.net_cents, 0) as net_cents,
        coalesce(counted.new_patients, 0) as new_patients,
        coalesce(counted.new_self_registered_patients, 0) as new_self_registered_patients,
        coalesce(counted.ordering_doctors, 0) as ordering_doctors,
        counted.source_updated_at
    from months
    left join revenue on revenue.month_start = months.month_start
    left join orders on orders.month_start = months.month_start
    left join counted on counted.month_start = months.month_start
)

select
    month_start,
    to_char(month_start, 'YYYY-MM') as month,
    orders_placed,
    self_orders_placed,
    orders_paid,
    orders_fulfilled,
    orders_cancelled,
    units_sold,
    payments_count,
    refunds_count,
    gross_cents,
    refunds_cents,
    net_cents,
    case when payments_count > 0 then round(gross_cents::numeric / payments_count) end
        as average_order_value_cents,
    case when gross_cents > 0 then round(refunds_cents::numeric / gross_cents, 4) end
        as refund_rate,
    new_patients,
    new_self_registered_patients,
    ordering_doctors,
    {{ cents_to_dollars('gross_cents') }} as gross_amount,
    {{ cents_to_dollars('refunds_cents') }} as refunds_amount,
    {{ cents_to_dollars('net_cents') }} as net_amount,
    {{ cents_to_dollars('case when payments_count > 0 then gross_cents::numeric / payments_count end') }}
        as average_order_value_amount,
    source_updated_at
from monthly
