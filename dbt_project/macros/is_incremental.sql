{#- Also true for `delta` models with incremental_strategy merge/append whose lake table exists
    (the lake plugin exposes it as the view {{ this }}). -#}
{% macro is_incremental() %}
  {% if not execute %}
    {{ return(False) }}
  {% endif %}
  {% set relation = adapter.get_relation(this.database, this.schema, this.table) %}
  {% if model.config.materialized == 'delta' %}
    {{ return(relation is not none
              and config.get('incremental_strategy') in ('merge', 'append')
              and not should_full_refresh()) }}
  {% endif %}
  {{ return(relation is not none
            and relation.type == 'table'
            and model.config.materialized == 'incremental'
            and not should_full_refresh()) }}
{% endmacro %}
