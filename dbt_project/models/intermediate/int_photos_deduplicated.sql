with

photos as (

    select * from {{ ref('stg_bronze__photos') }}

),

latest as (

    -- bronze keeps every copy the table ingest saw; the newest edit of a photo wins
    select * from photos
    qualify row_number() over (
        partition by photo_id order by updated_at desc, ingested_at desc
    ) = 1

),

final as (

    select * from latest

)

select * from final
