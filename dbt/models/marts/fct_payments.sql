{{
    config(
        materialized='incremental',
        unique_key='payment_id',
        incremental_strategy='merge',
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['payment_id'], 'unique': True},
            {'columns': ['source_updated_at']},
        ],
    )
}}
-- One row per Stripe PaymentIntent with what was refunded of it.
--
-- Incremental: payments changed (status, refunds, disputes) or whose refunds changed since the
-- last run, less the look-back, are merged again.
with payments as (
    select * from {{ ref('stg_portal__payments') }}
    {% if is_incremental() %}
    where {{ changed_since_last_run('updated_at') }}
        or payment_id in (
            select payment_id from {{ ref('stg_portal__payment_refunds') }}
            where {{ changed_since_last_run('updated_at') }}
        )
    {% endif %}
),

refunds as (
    select
        payment_id,
        count(*) as refunds_count,
        max(updated_at) as updated_at
    from {{ ref('stg_portal__payment_refunds') }}
    where refund_status in ('pending', 'requires_action', 'succeeded')
    {% if is_incremental() %}and payment_id in (select payment_id from payments){% endif %}
    group by payment_id
)

select
    payments.payment_id,
    payments.order_id,
    payments.stripe_payment_intent_id,
    payments.payment_status,
    payments.payment_method,
    payments.currency,
    payments.amount_cents,
    payments.refunded_cents,
    case when payments.payment_status = 'succeeded'
        then payments.amount_cents - payments.refunded_cents else 0 end as net_cents,
    coalesce(refunds.refunds_count, 0) as refunds_count,
    payments.is_disputed,
    payments.is_refunded_after_fulfilment,
    payments.created_at,
    payments.succeeded_at,
    case when payments.payment_status = 'succeeded'
        then {{ utc_date('coalesce(payments.succeeded_at, payments.updated_at)') }}
    end as succeeded_date,
    greatest(payments.updated_at, refunds.updated_at) as source_updated_at,
    {{ cents_to_dollars('payments.amount_cents') }} as amount,
    {{ cents_to_dollars('payments.refunded_cents') }} as refunded_amount
from payments
left join refunds on refunds.payment_id = payments.payment_id
