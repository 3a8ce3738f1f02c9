{#- The newest value of `column` already in this incremental model's lake table (or the
    late-arrival cutoff, if earlier), as a SQL timestamptz literal ('-infinity' when empty).
    A literal, not a subquery, so DuckDB pushes the "newer than" filter down into the
    Delta/Arrow scans and skips old files. -#}
{% macro lake_watermark(column) %}
  {% if not execute %}
    {{ return("'-infinity'::timestamptz") }}
  {% endif %}
  {#- lake_late_cutoff() (set by the lake plugin from the run log) reaches back for batches
      that committed after the last transform read, though stamped before it; NULL normally -#}
  {% set newest = "max(" ~ adapter.quote(column) ~ ")" %}
  {% set res = run_query("select coalesce(cast(least(" ~ newest ~ ", coalesce(lake_late_cutoff(), " ~ newest ~ ")) as varchar), '-infinity') from " ~ this) %}
  {{ return("'" ~ res.columns[0].values()[0] ~ "'::timestamptz") }}
{% endmacro %}
