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

events as (

    select * from {{ ref('int_events_deduplicated') }}

),

{% if is_incremental() %}
watermark as (

    select coalesce(max(source_ingested_at), '-infinity'::timestamptz) as loaded_until
    from {{ this }}

),

changed_photos as (

    -- photos whose metadata, image or activity arrived after the last run
    select photo_id from photos
    where ingested_at > (select loaded_until from watermark)
    union
    select photo_id from events
    where photo_id is not null and ingested_at > (select loaded_until from watermark)
    union
    select photos.photo_id from photos
    inner join images on images.image_file = photos.image_file
    where images.ingested_at > (select loaded_until from watermark)

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
      and photo_id in (select photo_id from changed_photos)
    {% endif %}
    group by photo_id

),

joined as (

    select
        photos.photo_id,
        photos.user_id,
        photos.title,
        photos.place,
        photos.uploaded_at,
        images.image_sha256,
        images.image_format,
        images.width,
        images.height,
        images.image,
        cast(coalesce(activity.views, 0) as bigint) as views,
        cast(coalesce(activity.likes, 0) as bigint) as likes,
        cast(coalesce(activity.unique_viewers, 0) as bigint) as unique_viewers,
        greatest(photos.ingested_at, images.ingested_at, activity.last_event_ingested_at)
            as source_ingested_at

    from photos
    left join images on images.image_file = photos.image_file
    left join activity on activity.photo_id = photos.photo_id
    {% if is_incremental() %}
    where photos.photo_id in (select photo_id from changed_photos)
    {% endif %}

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
