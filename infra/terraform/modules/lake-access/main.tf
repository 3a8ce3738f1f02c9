# Least-privilege access to the lake, as pure data: no provider and no resources, so the policy
# documents can be rendered (and tested) offline with `terraform apply` on an empty state.
#
# Each role gets object actions only under the lake prefixes it owns, and ListBucket only with an
# s3:prefix condition on the same prefixes.  Layout (see ingest/lake.py): <prefix>/<layer>/<table>
# for the Delta layers and <prefix>/shards/<dataset>/<snapshot> for training shards.

locals {
  root       = var.lake_prefix == "" ? "" : "${var.lake_prefix}/"
  bucket_arn = "arn:${var.partition}:s3:::${var.bucket_name}"

  # Lake-relative prefixes each role may read or write.
  access = {
    ingest_writer = {
      read  = []
      write = ["bronze", "_meta"]
      kms   = ["kms:Decrypt", "kms:GenerateDataKey"]
    }
    transformer = {
      read  = ["bronze"]
      write = ["silver", "gold", "shards", "_meta"]
      kms   = ["kms:Decrypt", "kms:GenerateDataKey"]
    }
    gpu_node = {
      read  = ["shards"]
      write = []
      kms   = ["kms:Decrypt"]
    }
  }

  read_actions  = ["s3:GetObject"]
  write_actions = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]

  policies = {
    for role, a in local.access : role => {
      Version = "2012-10-17"
      Statement = concat(
        [
          {
            Sid      = "ListOwnPrefixes"
            Effect   = "Allow"
            Action   = ["s3:ListBucket"]
            Resource = [local.bucket_arn]
            Condition = {
              StringLike = {
                "s3:prefix" = flatten([
                  for p in concat(a.read, a.write) : ["${local.root}${p}", "${local.root}${p}/*"]
                ])
              }
            }
          },
        ],
        length(a.read) == 0 ? [] : [
          {
            Sid      = "ReadObjects"
            Effect   = "Allow"
            Action   = local.read_actions
            Resource = [for p in a.read : "${local.bucket_arn}/${local.root}${p}/*"]
          },
        ],
        length(a.write) == 0 ? [] : [
          {
            Sid      = "WriteObjects"
            Effect   = "Allow"
            Action   = local.write_actions
            Resource = [for p in a.write : "${local.bucket_arn}/${local.root}${p}/*"]
          },
        ],
        [
          {
            Sid      = "UseLakeKey"
            Effect   = "Allow"
            Action   = a.kms
            Resource = [var.kms_key_arn]
          },
        ],
      )
    }
  }

  # Lifecycle: objects VACUUM (ingest/vacuum.py) deleted become noncurrent versions; purge them
  # after a grace period.  Current objects are never expired: that would corrupt a Delta table.
  noncurrent_days = {
    bronze = 30
    silver = 30
    gold   = 30
    _meta  = 30
    shards = 7 # rebuilt from a pinned snapshot at any time
  }
}
