variable "region" {
  description = "AWS region of the lake bucket (AWS_REGION for the service)."
  type        = string
  default     = "us-east-1"
}

variable "bucket_name" {
  description = "Lake bucket name: the service then runs with LAKEHOUSE_LAKE=s3://<bucket_name>/<lake_prefix>."
  type        = string
}

variable "lake_prefix" {
  description = "Key prefix of the lake inside the bucket, without slashes at the ends."
  type        = string
  default     = "warehouse"
}

variable "abort_multipart_days" {
  description = "Days after which an unfinished multipart upload (a crashed writer) is aborted."
  type        = number
  default     = 7
}

variable "writer_principals" {
  description = "AWS services allowed to assume the ingest-writer role (where Prefect ingest workers run)."
  type        = list(string)
  default     = ["ecs-tasks.amazonaws.com", "ec2.amazonaws.com"]
}

variable "transformer_principals" {
  description = "AWS services allowed to assume the transformer role (Prefect transform workers, Spark nodes)."
  type        = list(string)
  default     = ["ecs-tasks.amazonaws.com", "ec2.amazonaws.com"]
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default = {
    project = "lakehouse-ingest"
  }
}
