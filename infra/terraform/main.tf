# Cloud deployment of the lake: one bucket, one KMS key and three least-privilege roles.
# Policies are rendered by ./modules/lake-access (pure, provider-free) so tests evaluate the exact
# documents offline; this file wires them to AWS resources.

locals {
  roles = {
    ingest_writer = { name = "lakehouse-ingest-writer", principals = var.writer_principals }
    transformer   = { name = "lakehouse-transformer", principals = var.transformer_principals }
    gpu_node      = { name = "lakehouse-gpu-node", principals = ["ec2.amazonaws.com"] }
  }
}

# --- encryption key -----------------------------------------------------------------------------
resource "aws_kms_key" "lake" {
  description             = "Encrypts the lakehouse bucket ${var.bucket_name}"
  enable_key_rotation     = true
  deletion_window_in_days = 30
}

resource "aws_kms_alias" "lake" {
  name          = "alias/lakehouse-${var.bucket_name}"
  target_key_id = aws_kms_key.lake.key_id
}

# --- bucket -------------------------------------------------------------------------------------
resource "aws_s3_bucket" "lake" {
  bucket = var.bucket_name
}

resource "aws_s3_bucket_ownership_controls" "lake" {
  bucket = aws_s3_bucket.lake.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "lake" {
  bucket                  = aws_s3_bucket.lake.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# Versioning: an overwritten or vacuumed Delta file stays recoverable until lifecycle purges it.
resource "aws_s3_bucket_versioning" "lake" {
  bucket = aws_s3_bucket.lake.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "lake" {
  bucket = aws_s3_bucket.lake.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.lake.arn
    }
    bucket_key_enabled = true
  }
}

# Lifecycle for old Delta files: only noncurrent versions (what VACUUM and overwrites leave behind)
# and orphaned delete markers expire; current objects never do, or tables would lose data files.
resource "aws_s3_bucket_lifecycle_configuration" "lake" {
  bucket     = aws_s3_bucket.lake.id
  depends_on = [aws_s3_bucket_versioning.lake]

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_multipart_days
    }
  }

  dynamic "rule" {
    for_each = module.access.lifecycle_prefixes
    content {
      id     = "expire-noncurrent-${trimsuffix(rule.key, "/")}"
      status = "Enabled"
      filter {
        prefix = rule.key
      }
      noncurrent_version_expiration {
        noncurrent_days = rule.value
      }
      expiration {
        expired_object_delete_marker = true
      }
    }
  }
}

# Deny anything not over TLS, whoever the caller is.
resource "aws_s3_bucket_policy" "lake" {
  bucket     = aws_s3_bucket.lake.id
  depends_on = [aws_s3_bucket_public_access_block.lake]
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "DenyInsecureTransport"
        Effect    = "Deny"
        Principal = { AWS = "*" }
        Action    = ["s3:*"]
        Resource  = [aws_s3_bucket.lake.arn, "${aws_s3_bucket.lake.arn}/*"]
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
    ]
  })
}

# --- least-privilege roles ----------------------------------------------------------------------
module "access" {
  source      = "./modules/lake-access"
  bucket_name = aws_s3_bucket.lake.id
  lake_prefix = var.lake_prefix
  kms_key_arn = aws_kms_key.lake.arn
}

resource "aws_iam_role" "lake" {
  for_each = local.roles
  name     = each.value.name
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Effect    = "Allow"
        Action    = ["sts:AssumeRole"]
        Principal = { Service = each.value.principals }
      },
    ]
  })
}

resource "aws_iam_policy" "lake" {
  for_each    = local.roles
  name        = "${each.value.name}-lake-access"
  description = "Least-privilege lake access for ${each.key} on s3://${var.bucket_name}/${var.lake_prefix}"
  policy      = module.access.policy_json[each.key]
}

resource "aws_iam_role_policy_attachment" "lake" {
  for_each   = local.roles
  role       = aws_iam_role.lake[each.key].name
  policy_arn = aws_iam_policy.lake[each.key].arn
}

# GPU nodes are EC2 instances: they pick the role up through an instance profile.
resource "aws_iam_instance_profile" "gpu_node" {
  name = "lakehouse-gpu-node"
  role = aws_iam_role.lake["gpu_node"].name
}
