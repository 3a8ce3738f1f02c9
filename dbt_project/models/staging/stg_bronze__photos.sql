with

source as (

    select * from {{ source('bronze', 'photos') }}

),

final as (

    select
        cast(photo_id as bigint) as photo_id,
        cast(user_id as bigint) as user_id,
        title,
        place,
        cast(uploaded_at as timestamptz) as uploaded_at,
        image_file,
        cast(updated_at as timestamptz) as updated_at,
        cast(_ingested_at as timestamptz) as ingested_at

    from source

)

select * from final
