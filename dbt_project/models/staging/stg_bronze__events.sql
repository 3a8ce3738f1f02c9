with

source as (

    select * from {{ source('bronze', 'events') }}

),

final as (

    select
        event_id,
        cast(ts as timestamptz) as event_at,
        cast(cast(ts as timestamptz) as date) as event_date,
        cast(user_id as bigint) as user_id,
        lower(event_type) as event_type,
        cast(photo_id as bigint) as photo_id,
        _source_file as source_file,
        cast(_source_line as bigint) as source_line,
        cast(_ingested_at as timestamptz) as ingested_at

    from source

)

select * from final
