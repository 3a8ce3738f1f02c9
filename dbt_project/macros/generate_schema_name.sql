{#- Lake layers are schema names as-is (gold, silver), not "<target>_gold". -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ (custom_schema_name or target.schema) | trim }}
{%- endmacro %}
