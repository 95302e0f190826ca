{#
  Marts land in `analytics` (the schema analysts can read); staging and intermediate models in
  `analytics_staging` / `analytics_intermediate`, which they cannot. A `+schema` of `analytics`
  means the target schema itself, not `analytics_analytics`.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- set default_schema = target.schema -%}
    {%- if custom_schema_name is none or custom_schema_name | trim == default_schema -%}
        {{ default_schema }}
    {%- else -%}
        {{ default_schema }}_{{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
