{{
    config(
        materialized='delta',
        schema='silver',
        alias='images',
        incremental_strategy='merge',
        unique_key='image_file',
    )
}}

with

images as (

    select * from {{ ref('stg_bronze__images') }}

),

new_images as (

    select * from images
    {% if is_incremental() %}
    where ingested_at > {{ lake_watermark('ingested_at') }}
    {% endif %}

),

newest_by_file as (

    -- photos name an image by file name; a file whose content changed was ingested again
    -- as a new row, and the newest content is the file as it is now
    select * from new_images
    qualify row_number() over (
        partition by image_file order by ingested_at desc, image_sha256
    ) = 1

),

final as (

    select
        image_file,
        image_sha256,
        image_format,
        width,
        height,
        size_bytes,
        image,
        source_uri,
        ingested_at

    from newest_by_file

)

select * from final
