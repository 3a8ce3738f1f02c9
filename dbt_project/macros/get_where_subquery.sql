{#- What a data test reads.  Overrides dbt's global macro of this name (which applies a test's
    `where` config) so that an incremental run tests what it changed, not every stored row.

    Scoping is on only when the previous whole-project run succeeded and no run failed since
    (transforms/dbt_plugin.py: last_tested_run); full builds, full refreshes and pinned runs
    read whole relations.  Then:
    * a lake model an incremental run wrote (`lake_changes.<layer>__<table>`, exposed by the
      plugin): `unique` reads every stored row whose key this run wrote, so a new row that
      repeats an old key still fails; other column tests (`not_null`, `accepted_values`,
      `relationships`, whose parent side is read whole) read the written rows;
    * a staging view over one source with `meta.loaded_at_column`: rows loaded at or after the
      earliest load time among the source's files added since the last tested run (from Delta
      file statistics, so old files are skipped, and nothing new is never missed);
    * anything else, and singular tests: the whole relation.
    A test's own `where` config still applies on top. -#}
{% macro get_where_subquery(relation) -%}
  {%- set where = config.get('where', '') -%}
  {%- set scoped = lake_test_scope(relation) -%}
  {%- if where -%}
    {%- do return("(select * from " ~ scoped ~ " where " ~ where ~ ") dbt_subquery") -%}
  {%- endif -%}
  {%- do return(scoped) -%}
{%- endmacro %}


{% macro lake_test_scope(relation) -%}
  {%- set meta = model.get('test_metadata') or {} if execute else {} -%}
  {%- set column = (meta.get('kwargs') or {}).get('column_name') -%}
  {%- if not meta or not column -%}
    {%- do return(relation) -%}
  {%- endif -%}
  {%- set changed = relation.schema ~ '__' ~ relation.identifier -%}
  {%- set source = lake_test_source(model) -%}
  {%- set found = run_query("select name, since from lake_changes.scope where name in ('"
                            ~ changed ~ "', '" ~ source ~ "')") -%}
  {%- if found.rows | length == 0 -%}
    {%- do return(relation) -%}
  {%- endif -%}
  {%- if found.rows[0][0] == changed -%}
    {%- set changes = '"lake_changes"."' ~ changed ~ '"' -%}
    {%- if meta.get('name') == 'unique' -%}
      {%- do return("(select * from " ~ relation ~ " where " ~ column ~ " in (select " ~ column
                    ~ " from " ~ changes ~ ")) lake_changed_keys") -%}
    {%- endif -%}
    {%- do return("(select * from " ~ changes ~ ") lake_changed_rows") -%}
  {%- endif -%}
  {%- set loaded_at = lake_test_node(model).get('config', {}).get('meta', {}).get('loaded_at_column') -%}
  {%- if not loaded_at or meta.get('name') == 'unique' -%}
    {%- do return(relation) -%}
  {%- endif -%}
  {%- do return("(select * from " ~ relation ~ " where " ~ adapter.quote(loaded_at) ~ " >= '"
                ~ found.rows[0][1] ~ "'::timestamptz) lake_new_rows") -%}
{%- endmacro %}


{#- The model a generic test is attached to, as a graph node ({} if none). -#}
{% macro lake_test_node(test) -%}
  {%- do return(graph.nodes.get(test.get('attached_node') or '', {})) -%}
{%- endmacro %}


{#- The lake table of the one source the test's model reads ('' if not exactly one). -#}
{% macro lake_test_source(test) -%}
  {%- set uids = [] -%}
  {%- for uid in lake_test_node(test).get('depends_on', {}).get('nodes', []) if uid.startswith('source.') -%}
    {%- do uids.append(uid) -%}
  {%- endfor -%}
  {%- if uids | length != 1 -%}
    {%- do return('') -%}
  {%- endif -%}
  {%- set src = graph.sources.get(uids[0], {}) -%}
  {%- do return(src.get('config', {}).get('meta', {}).get('table') or (src.get('source_name', '') ~ '.' ~ src.get('name', ''))) -%}
{%- endmacro %}
