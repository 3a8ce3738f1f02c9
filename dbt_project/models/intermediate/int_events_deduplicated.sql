{{
    config(
        materialized='delta',
        schema='silver',
        alias='events',
        incremental_strategy='append',
        unique_key='event_id',
    )
}}

with

events as (

    select * from {{ ref('stg_bronze__events') }}

),

{% if is_incremental() %}
{% set loaded_until = lake_watermark('ingested_at') %}
already_loaded as (

    -- the stored ids among the new rows' ids only: their range reaches the scan of the stored
    -- table (join-filter pushdown) instead of every stored id being hashed
    select event_id from {{ this }}
    where event_id in (
        select event_id from {{ ref('stg_bronze__events') }} where ingested_at > {{ loaded_until }}
    )

),
{% endif %}

new_events as (

    select * from events
    {% if is_incremental() %}
    where ingested_at > {{ loaded_until }}
      and event_id not in (select event_id from already_loaded)
    {% endif %}

),

first_copy as (

    -- a log shipped twice repeats event ids: keep the first copy that was loaded
    select * from new_events
    qualify row_number() over (
        partition by event_id order by ingested_at, source_file, source_line
    ) = 1

),

final as (

    select
        event_id,
        event_at,
        event_date,
        user_id,
        event_type,
        photo_id,
        source_file,
        source_line,
        ingested_at

    from first_copy

)

select * from final
