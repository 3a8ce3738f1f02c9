# `terraform test` for the policy module: runs offline (the module has no provider).

variables {
  bucket_name = "lake"
  lake_prefix = "warehouse"
  kms_key_arn = "arn:aws:kms:us-east-1:111122223333:key/test"
}

run "gpu_node_only_reads_shards" {
  command = apply

  assert {
    condition     = jsondecode(output.policy_json["gpu_node"]).Statement[1].Resource == ["arn:aws:s3:::lake/warehouse/shards/*"]
    error_message = "GPU nodes must read shards/ and nothing else."
  }
  assert {
    condition     = alltrue([for st in jsondecode(output.policy_json["gpu_node"]).Statement : !contains(st.Action, "s3:PutObject")])
    error_message = "GPU nodes must not write."
  }
}

run "no_role_gets_a_wildcard" {
  command = apply

  assert {
    condition = alltrue(flatten([
      for role, doc in output.policy_json : [
        for st in jsondecode(doc).Statement : [for a in st.Action : !strcontains(a, "*")]
      ]
    ]))
    error_message = "A policy uses a wildcard action."
  }
}

run "rejects_a_prefix_with_slashes" {
  command = plan

  variables {
    lake_prefix = "/warehouse/"
  }

  expect_failures = [var.lake_prefix]
}
