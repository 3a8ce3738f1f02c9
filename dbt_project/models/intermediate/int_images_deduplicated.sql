with

images as (

    select * from {{ ref('stg_bronze__images') }}

),

first_by_file as (

    -- photos name an image by file name; a file whose content changed was ingested again
    -- as a new row, and the newest content is the file as it is now
    select * from images
    qualify row_number() over (
        partition by image_file order by ingested_at desc, image_sha256
    ) = 1

),

final as (

    select * from first_by_file

)

select * from final
