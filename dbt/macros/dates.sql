{# The day the windowed marts are computed for (var `as_of_date`, default today in UTC). #}
{% macro as_of_date() -%}
    {%- if var('as_of_date') -%}
        date '{{ var("as_of_date") }}'
    {%- else -%}
        (now() at time zone 'UTC')::date
    {%- endif -%}
{%- endmacro %}

{# A timestamptz as its calendar day in UTC, whatever the session's time zone. #}
{% macro utc_date(column_name) -%}
    ({{ column_name }} at time zone 'UTC')::date
{%- endmacro %}

{#
  In an incremental run: the rows of `relation` changed since the newest `updated_at` already
  built, less the look-back (late events, clocks of several writers).
#}
{% macro changed_since_last_run(column_name, this_column='source_updated_at') -%}
    {{ column_name }} >= (
        select coalesce(max({{ this_column }}), '-infinity'::timestamptz)
            - interval '{{ var("lookback_hours") | int }} hours'
        from {{ this }}
    )
{%- endmacro %}
