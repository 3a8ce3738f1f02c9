{{
    config(
        materialized='delta',
        incremental_strategy='merge',
        unique_key='activity_date',
    )
}}

with

events as (

    select * from {{ ref('int_events_deduplicated') }}

),

{% if is_incremental() %}
changed_days as (

    -- days that received events since the last run are recomputed whole
    -- (its own read of the table, not the `events` CTE: a CTE read twice is materialized whole)
    select distinct event_date from {{ ref('int_events_deduplicated') }}
    where ingested_at > {{ lake_watermark('source_ingested_at') }}

),
{% endif %}

daily as (

    select
        event_date as activity_date,
        count(*) as events,
        count(*) filter (where event_type = 'login') as logins,
        count(*) filter (where event_type = 'view') as views,
        count(*) filter (where event_type = 'like') as likes,
        count(distinct user_id) as active_users,
        count(distinct photo_id) filter (where event_type = 'view') as photos_viewed,
        max(ingested_at) as source_ingested_at

    from events
    {% if is_incremental() %}
    where event_date in (select event_date from changed_days)
    {% endif %}
    group by event_date

),

final as (

    select
        activity_date,
        events,
        logins,
        views,
        likes,
        active_users,
        photos_viewed,
        case when views > 0 then likes / views else 0.0 end as like_rate,
        source_ingested_at

    from daily

)

select * from final
