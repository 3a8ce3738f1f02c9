{#- A literal range filter `column between lo and hi` over the integers `query` returns (`false`
    when it returns none), computed when the model compiles.  Like lake_watermark, a literal
    reaches DuckDB's parquet reader as a table filter: files and row groups outside the range
    are skipped, whatever join order the planner picks from its row estimates. -#}
{% macro lake_key_range(column, query) %}
  {% if not execute %}
    {{ return("true") }}
  {% endif %}
  {% set res = run_query("select cast(min(k) as varchar), cast(max(k) as varchar), count(*) from (" ~ query ~ ") keys(k)") %}
  {% set row = res.rows[0] %}
  {% if row[2] == 0 %}
    {{ return("false") }}
  {% endif %}
  {{ return(adapter.quote(column) ~ " between " ~ row[0] ~ " and " ~ row[1]) }}
{% endmacro %}
