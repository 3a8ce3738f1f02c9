{{
    config(
        materialized='delta',
        schema='silver',
        alias='photos',
        incremental_strategy='merge',
        unique_key='photo_id',
    )
}}

with

photos as (

    select * from {{ ref('stg_bronze__photos') }}

),

{% if is_incremental() %}
current_photos as (

    select * from {{ this }}

),

new_rows as (

    select * from photos
    where ingested_at > {{ lake_watermark('ingested_at') }}

),

candidates as (

    -- a late copy of an older edit must not replace a newer one: compete with what is stored
    select * from new_rows
    union all by name
    select * from current_photos
    where photo_id in (select photo_id from new_rows)

),
{% else %}
candidates as (

    select * from photos

),
{% endif %}

latest as (

    -- bronze keeps every copy the table ingest saw; the newest edit of a photo wins
    select * from candidates
    qualify row_number() over (
        partition by photo_id order by updated_at desc, ingested_at desc
    ) = 1

),

final as (

    select
        photo_id,
        user_id,
        title,
        place,
        uploaded_at,
        image_file,
        updated_at,
        ingested_at

    from latest

)

select * from final
