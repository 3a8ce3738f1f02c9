variable "bucket_name" {
  description = "The lake bucket (the bucket in LAKEHOUSE_LAKE=s3://BUCKET/PREFIX)."
  type        = string
}

variable "lake_prefix" {
  description = "The key prefix of the lake inside the bucket (the PREFIX in LAKEHOUSE_LAKE), without slashes at the ends; empty for a lake at the bucket root."
  type        = string
  default     = "warehouse"

  validation {
    condition     = !startswith(var.lake_prefix, "/") && !endswith(var.lake_prefix, "/")
    error_message = "The lake_prefix must not start or end with a slash (write warehouse, not /warehouse/)."
  }
}

variable "kms_key_arn" {
  description = "The KMS key that encrypts the bucket; every role gets only the key operations it needs."
  type        = string
}

variable "partition" {
  description = "AWS partition for ARNs (aws, aws-cn, aws-us-gov)."
  type        = string
  default     = "aws"
}
