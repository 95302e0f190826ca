-- One row per calendar day from the first order (or two years before `as_of_date`, whichever
-- is earlier) to a year after `as_of_date`.
with bounds as (
    select
        least(
            (select min({{ utc_date('created_at') }}) from {{ ref('stg_portal__orders') }}),
            {{ as_of_date() }} - 730
        ) as first_day,
        {{ as_of_date() }} + 365 as last_day
),

days as (
    select generate_series(first_day, last_day, interval '1 day')::date as date_day
    from bounds
)

select
    date_day,
    extract(year from date_day)::int as year,
    extract(quarter from date_day)::int as quarter,
    extract(month from date_day)::int as month,
    to_char(date_day, 'FMMonth') as month_label,
    date_trunc('month', date_day)::date as month_start,
    date_trunc('week', date_day)::date as week_start,
    extract(isoyear from date_day)::int as iso_year,
    extract(week from date_day)::int as iso_week,
    extract(isodow from date_day)::int as iso_day_of_week,
    extract(isodow from date_day) in (6, 7) as is_weekend
from days
