output "policy_json" {
  description = "IAM policy document (JSON) per role: ingest_writer, transformer, gpu_node."
  value       = { for role, doc in local.policies : role => jsonencode(doc) }
}

output "role_prefixes" {
  description = "Lake-relative prefixes each role reads and writes (for documentation and tests)."
  value       = { for role, a in local.access : role => { read = a.read, write = a.write } }
}

output "lifecycle_prefixes" {
  description = "Bucket key prefix -> days a noncurrent (vacuumed or overwritten) object is kept."
  value       = { for layer, days in local.noncurrent_days : "${local.root}${layer}/" => days }
}
