{#-
  `delta`: build the model in DuckDB, then store it as a Delta table in the lake through the
  lake plugin (transforms/dbt_plugin.py).  The model's DuckDB relation is then a view over the
  lake table, so data tests check what was written.

  config:
    lake_table            layer.name to write (default: <schema>.<alias>, e.g. gold.photo_features)
    incremental_strategy  'merge' -> when is_incremental(), the model selects only new/changed
                          rows and they are upserted by unique_key; 'append' -> the new rows are
                          appended (the model guarantees they are new); otherwise one overwrite
                          commit
    unique_key            merge key column(s)
-#}
{% materialization delta, adapter='duckdb' %}
  {%- set lake_table = config.get('lake_table') or (this.schema ~ '.' ~ this.identifier) -%}
  {%- set plugin = config.get('plugin', 'lake') -%}
  {%- set strategy = config.get('incremental_strategy') or 'merge' -%}
  {%- if strategy not in ['merge', 'append'] -%}
    {{ exceptions.raise_compiler_error("delta models support incremental_strategy merge or append, not " ~ strategy) }}
  {%- endif -%}
  {%- set mode = strategy if is_incremental() else 'overwrite' -%}
  {%- set staging = this.incorporate(path={"identifier": this.identifier ~ '__delta_stage'}, type='table') -%}
  {%- set target_relation = this.incorporate(type='view') -%}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {% call statement('drop_stage') -%}
    drop table if exists {{ staging }}
  {%- endcall %}
  {% call statement('main') -%}
    create table {{ staging }} as (
      {{ sql }}
    )
  {%- endcall %}
  {% if mode == 'overwrite' %}
    {#- a previous DuckDB table/view of this name is replaced by the plugin's view -#}
    {% set existing = adapter.get_relation(this.database, this.schema, this.identifier) %}
    {% if existing is not none and existing.type == 'table' %}
      {{ adapter.drop_relation(existing) }}
    {% endif %}
  {% endif %}
  {{ adapter.commit() }}

  {% do adapter.store_relation(plugin, staging, [], lake_table, mode, config) %}

  {% call statement('drop_stage_after') -%}
    drop table if exists {{ staging }}
  {%- endcall %}

  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {{ adapter.commit() }}
  {{ run_hooks(post_hooks, inside_transaction=False) }}

  {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}
