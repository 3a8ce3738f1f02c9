{{
    config(
        materialized='delta',
        incremental_strategy='merge',
        unique_key='photo_id',
    )
}}

with

photos as (

    select * from {{ ref('int_photos_deduplicated') }}

),

images as (

    select * from {{ ref('int_images_deduplicated') }}

),

image_loads as (

    -- only the keys: a CTE used twice is materialized, and images carry their bytes
    select image_file, ingested_at from {{ ref('int_images_deduplicated') }}

),

events as (

    select * from {{ ref('int_events_deduplicated') }}

),

{% if is_incremental() %}
{% set loaded_until = lake_watermark('source_ingested_at') %}
changed_photos as (

    -- photos whose metadata, image or activity arrived after the last run
    select photo_id from photos
    where ingested_at > {{ loaded_until }}
    union
    select photo_id from events
    where photo_id is not null and ingested_at > {{ loaded_until }}
    union
    select photos.photo_id from photos
    inner join image_loads on image_loads.image_file = photos.image_file
    where image_loads.ingested_at > {{ loaded_until }}

),

photos_in_scope as (

    select * from photos
    where photo_id in (select photo_id from changed_photos)

),
{% else %}
photos_in_scope as (

    select * from photos

),
{% endif %}

activity as (

    select
        photo_id,
        count(*) filter (where event_type = 'view') as views,
        count(*) filter (where event_type = 'like') as likes,
        count(distinct user_id) filter (where event_type = 'view') as unique_viewers,
        max(ingested_at) as last_event_ingested_at

    from events
    where photo_id is not null
    {% if is_incremental() %}
      and photo_id in (select photo_id from photos_in_scope)
    {% endif %}
    group by photo_id

),

joined as (

    select
        photos_in_scope.photo_id,
        photos_in_scope.user_id,
        photos_in_scope.title,
        photos_in_scope.place,
        photos_in_scope.uploaded_at,
        images.image_sha256,
        images.image_format,
        images.width,
        images.height,
        images.image,
        cast(coalesce(activity.views, 0) as bigint) as views,
        cast(coalesce(activity.likes, 0) as bigint) as likes,
        cast(coalesce(activity.unique_viewers, 0) as bigint) as unique_viewers,
        greatest(photos_in_scope.ingested_at, images.ingested_at, activity.last_event_ingested_at)
            as source_ingested_at

    from photos_in_scope
    left join images on images.image_file = photos_in_scope.image_file
    left join activity on activity.photo_id = photos_in_scope.photo_id

),

final as (

    select
        photo_id,
        user_id,
        title,
        place,
        uploaded_at,
        image_sha256,
        image_format,
        width,
        height,
        image,
        views,
        likes,
        unique_viewers,
        case when views > 0 then likes / views else 0.0 end as like_rate,
        case
            when likes >= {{ var('popular_min_likes') }}
             and (case when views > 0 then likes / views else 0.0 end) >= {{ var('popular_min_like_rate') }}
                then 'popular'
            else 'not_popular'
        end as popularity_label,
        source_ingested_at

    from joined

)

select * from final
