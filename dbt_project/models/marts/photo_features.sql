{{
    config(
        materialized='delta',
        incremental_strategy='merge',
        unique_key='photo_id',
    )
}}

with

{% if is_incremental() %}
{% set loaded_until = lake_watermark('source_ingested_at') %}
{#- Every read of a lake table below is its own scan with its own filter, not a shared CTE (a
    CTE read twice is materialized whole): the watermark, or the range of the photo ids
    recomputed, both literals, reach DuckDB's parquet reader, which skips old files and row
    groups by their statistics.  Image bytes are read from new images, or from the stored row
    when neither the photo nor its image changed, never from all of silver.images. -#}
{% set changed_sql %}
    select photo_id from {{ ref('int_photos_deduplicated') }}
    where ingested_at > {{ loaded_until }}
    union
    select photo_id from {{ ref('int_events_deduplicated') }}
    where photo_id is not null and ingested_at > {{ loaded_until }}
    union
    select photo_id from {{ ref('int_photos_deduplicated') }}
    where image_file in (
        select image_file from {{ ref('int_images_deduplicated') }} where ingested_at > {{ loaded_until }}
    )
{% endset %}
{% set in_range = lake_key_range('photo_id', changed_sql) %}
changed_photos as (

    -- photos whose metadata, image or activity arrived after the last run
    {{ changed_sql }}

),

photos_in_scope as (

    select * from {{ ref('int_photos_deduplicated') }}
    where {{ in_range }} and photo_id in (select photo_id from changed_photos)

),

new_images as (

    select * from {{ ref('int_images_deduplicated') }}
    where ingested_at > {{ loaded_until }}

),

photo_images as (

    -- the image of each photo in scope: one loaded since the last run, or (an edited photo
    -- naming an older image) looked up by name ...
    select photos_in_scope.photo_id, img.image_sha256, img.image_format, img.width, img.height,
        img.image, img.ingested_at
    from photos_in_scope
    inner join (
        select * from new_images
        union all
        select * from {{ ref('int_images_deduplicated') }}
        where image_file in (
            select image_file from photos_in_scope
            where ingested_at > {{ loaded_until }}
              and image_file not in (select image_file from new_images where image_file is not null)
        )
    ) img on img.image_file = photos_in_scope.image_file
    union all
    -- ... or, when neither the photo nor its image changed, the image stored with the photo
    -- (its load time is older than the photo's new events, so it does not move
    -- source_ingested_at)
    select stored.photo_id, stored.image_sha256, stored.image_format, stored.width,
        stored.height, stored.image, cast(null as timestamptz) as ingested_at
    from photos_in_scope
    inner join (
        select * from {{ this }}
        where {{ in_range }} and image_sha256 is not null
    ) stored on stored.photo_id = photos_in_scope.photo_id
    where photos_in_scope.ingested_at <= {{ loaded_until }}
      and photos_in_scope.image_file not in (select image_file from new_images where image_file is not null)

),

events as (

    select * from {{ ref('int_events_deduplicated') }}
    where {{ in_range }} and photo_id in (select photo_id from changed_photos)

),
{% else %}
photos_in_scope as (

    select * from {{ ref('int_photos_deduplicated') }}

),

photo_images as (

    select photos.photo_id, images.image_sha256, images.image_format, images.width,
        images.height, images.image, images.ingested_at
    from {{ ref('int_photos_deduplicated') }} photos
    inner join {{ ref('int_images_deduplicated') }} images on images.image_file = photos.image_file

),

events as (

    select * from {{ ref('int_events_deduplicated') }}

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
    group by photo_id

),

joined as (

    select
        photos_in_scope.photo_id,
        photos_in_scope.user_id,
        photos_in_scope.title,
        photos_in_scope.place,
        photos_in_scope.uploaded_at,
        photo_images.image_sha256,
        photo_images.image_format,
        photo_images.width,
        photo_images.height,
        photo_images.image,
        cast(coalesce(activity.views, 0) as bigint) as views,
        cast(coalesce(activity.likes, 0) as bigint) as likes,
        cast(coalesce(activity.unique_viewers, 0) as bigint) as unique_viewers,
        greatest(photos_in_scope.ingested_at, photo_images.ingested_at, activity.last_event_ingested_at)
            as source_ingested_at

    from photos_in_scope
    left join photo_images on photo_images.photo_id = photos_in_scope.photo_id
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
