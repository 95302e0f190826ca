{# Money is integer cents everywhere; dollars appear only in the marts' last select. #}
{% macro cents_to_dollars(column_name, scale=2) -%}
    round(({{ column_name }})::numeric / 100, {{ scale }})
{%- endmacro %}
