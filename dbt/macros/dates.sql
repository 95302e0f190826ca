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
  In an incremental run: the rows changed since the watermark of the model being built (the
  newest `source_updated_at` it holds), less the margin `lookback_minutes` (transactions that
  committed late, clocks of several writers); a constant when the model runs.
#}
{% macro changed_since_last_run(column_name, this_column='source_updated_at') -%}
    {{ column_name }} >= {{ watermark(this_column) }}
{%- endmacro %}

{#
  One value computed when the model runs (after the models it reads are built), as SQL text
  to inline: the planner then sees a constant, not a subquery it must guess about. `sql`
  returns one text row; NULL (or nothing, or at parse time) gives `default`.
#}
{% macro inline_value(sql, default='null') -%}
    {%- if execute -%}
        {%- set result = run_query(sql) -%}
        {%- set value = result.columns[0].values()[0] if result.rows | length else none -%}
        {{- value if value is not none else default -}}
    {%- else -%}
        {{- default -}}
    {%- endif -%}
{%- endmacro %}

{#
  The watermark of the model being built (its newest `source_updated_at`) less the margin
  `lookback_minutes`, as a timestamptz literal.
#}
{% macro watermark(this_column='source_updated_at') -%}
    {{ inline_value(
        "select quote_literal((coalesce(max(" ~ this_column ~ "), '-infinity'::timestamptz)"
        ~ " - interval '" ~ (var('lookback_minutes') | int) ~ " minutes')::text)"
        ~ " from " ~ this,
        "'-infinity'",
    ) }}::timestamptz
{%- endmacro %}

{#
  The distinct dates `sql` (a query of one date column) returns, as the text of an SQL list
  of date literals for `in (...)`; `(null::date)` when there are none.
#}
{% macro date_list(sql) -%}
    ({{ inline_value(
        "select string_agg(distinct quote_literal(d::text) || '::date', ', ') from (" ~ sql
        ~ ") as dates(d) where d is not null",
        'null::date',
    ) }})
{%- endmacro %}
