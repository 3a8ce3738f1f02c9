{#- The newest value of `column` already in this incremental model's lake table, as a SQL
    timestamptz literal ('-infinity' when empty).  A literal, not a subquery, so DuckDB pushes
    the "newer than" filter down into the Delta/Arrow scans and skips old files. -#}
{% macro lake_watermark(column) %}
  {% if not execute %}
    {{ return("'-infinity'::timestamptz") }}
  {% endif %}
  {% set res = run_query("select coalesce(cast(max(" ~ adapter.quote(column) ~ ") as varchar), '-infinity') from " ~ this) %}
  {{ return("'" ~ res.columns[0].values()[0] ~ "'::timestamptz") }}
{% endmacro %}
