with

source as (

    select * from {{ source('bronze', 'images') }}

),

final as (

    select
        sha256 as image_sha256,
        source_uri,
        regexp_extract(source_uri, '([^/\\]+)$', 1) as image_file,
        lower(format) as image_format,
        cast(width as integer) as width,
        cast(height as integer) as height,
        cast(size_bytes as bigint) as size_bytes,
        content as image,
        cast(ingested_at as timestamptz) as ingested_at

    from source

)

select * from final
