with

images as (

    select * from {{ ref('stg_bronze__images') }}

),

first_by_file as (

    -- photos name an image by file name; one file name -> the first content seen under it
    select * from images
    qualify row_number() over (
        partition by image_file order by ingested_at, image_sha256
    ) = 1

),

final as (

    select * from first_by_file

)

select * from final
