output "lake_uri" {
  description = "Set LAKEHOUSE_LAKE to this."
  value       = "s3://${aws_s3_bucket.lake.id}/${var.lake_prefix}"
}

output "role_arns" {
  description = "Role ARN per lake role (ingest_writer, transformer, gpu_node)."
  value       = { for k, r in aws_iam_role.lake : k => r.arn }
}

output "gpu_instance_profile" {
  description = "Instance profile to launch GPU training nodes with."
  value       = aws_iam_instance_profile.gpu_node.name
}

output "kms_key_arn" {
  description = "The key that encrypts the lake."
  value       = aws_kms_key.lake.arn
}
