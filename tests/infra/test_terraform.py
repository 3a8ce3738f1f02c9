"""infra/terraform: formatted, the policy module renders with real Terraform, and the rendered
IAM documents are least-privilege when evaluated against sample lake keys."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from stackfiles import ROOT

TF_DIR = ROOT / "infra" / "terraform"
MODULE = TF_DIR / "modules" / "lake-access"
BUCKET, PREFIX = "lake", "warehouse"  # as in LAKEHOUSE_LAKE=s3://lake/warehouse
KMS = "arn:aws:kms:us-east-1:111122223333:key/0000-test"
LAYERS = ("bronze", "silver", "gold", "shards", "_meta")


def terraform() -> str:
    found = shutil.which("terraform")
    if not found:
        pytest.skip("terraform binary not on PATH (the dev/CI machine image ships it in /usr/local/bin)")
    return found


def tf(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null", "TF_IN_AUTOMATION": "1",
           "CHECKPOINT_DISABLE": "1", "TF_DATA_DIR": str(cwd / ".terraform")}
    proc = subprocess.run([terraform(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"terraform {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The module's outputs from `terraform apply` on an empty state (no provider, no network)."""
    work = tmp_path_factory.mktemp("tf")
    shutil.copytree(MODULE, work / "lake-access")
    (work / "main.tf").write_text(
        f'module "access" {{\n  source = "./lake-access"\n  bucket_name = "{BUCKET}"\n'
        f'  lake_prefix = "{PREFIX}"\n  kms_key_arn = "{KMS}"\n}}\n'
        'output "policy_json" { value = module.access.policy_json }\n'
        'output "role_prefixes" { value = module.access.role_prefixes }\n'
        'output "lifecycle_prefixes" { value = module.access.lifecycle_prefixes }\n'
    )
    tf(["init", "-input=false", "-backend=false"], work)
    tf(["validate"], work)
    tf(["apply", "-auto-approve", "-input=false", f"-state={work / 'tfstate'}"], work)
    out = json.loads(tf(["output", "-json", f"-state={work / 'tfstate'}"], work).stdout)
    return {k: v["value"] for k, v in out.items()}


def policies(rendered: dict) -> dict[str, dict]:
    return {role: json.loads(doc) for role, doc in rendered["policy_json"].items()}


# -- a small IAM evaluator (Allow statements, Action/Resource wildcards, StringLike on s3:prefix) --
def allowed(policy: dict, action: str, resource: str, context: dict[str, str] | None = None) -> bool:
    context = context or {}
    for st in policy["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if not any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in actions):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in resources):
            continue
        ok = True
        for op, conds in (st.get("Condition") or {}).items():
            if op != "StringLike":
                raise ValueError(f"evaluator does not know condition {op}")
            for key, patterns in conds.items():
                patterns = patterns if isinstance(patterns, list) else [patterns]
                value = context.get(key)
                ok &= value is not None and any(fnmatch.fnmatchcase(value, p) for p in patterns)
        if ok:
            if st["Effect"] != "Allow":
                return False
            return True
    return False


def obj(key: str) -> str:
    return f"arn:aws:s3:::{BUCKET}/{PREFIX}/{key}"


def can(policy: dict, verb: str, key: str) -> bool:
    action = {"get": "s3:GetObject", "put": "s3:PutObject", "delete": "s3:DeleteObject"}
    if verb == "list":
        return allowed(policy, "s3:ListBucket", f"arn:aws:s3:::{BUCKET}", {"s3:prefix": f"{PREFIX}/{key}"})
    return allowed(policy, action[verb], obj(key))


# -- tests --------------------------------------------------------------------------------------
def test_terraform_files_are_formatted() -> None:
    tf(["fmt", "-check", "-recursive", "-diff", str(TF_DIR)], ROOT)


MATRIX = {
    # role: {layer: verbs allowed}; every verb not listed must be denied.
    "ingest_writer": {"bronze": {"get", "put", "delete", "list"}, "_meta": {"get", "put", "delete", "list"}},
    "transformer": {
        "bronze": {"get", "list"},
        **{layer: {"get", "put", "delete", "list"} for layer in ("silver", "gold", "shards", "_meta")},
    },
    "gpu_node": {"shards": {"get", "list"}},
}


@pytest.mark.parametrize("role", sorted(MATRIX))
def test_role_can_do_exactly_its_job(rendered: dict, role: str) -> None:
    policy = policies(rendered)[role]
    samples = {
        "bronze": "bronze/images/part-00000.parquet",
        "silver": "silver/photos_clean/_delta_log/00000000000000000001.json",
        "gold": "gold/photo_features/part-00001.snappy.parquet",
        "shards": "shards/photo_popularity/snap-1/shard-000000.tar",
        "_meta": "_meta/runs/_delta_log/00000000000000000000.json",
    }
    for layer, key in samples.items():
        for verb in ("get", "put", "delete", "list"):
            want = verb in MATRIX[role].get(layer, set())
            assert can(policy, verb, key) is want, f"{role} {verb} {key}: expected {'allow' if want else 'deny'}"


@pytest.mark.parametrize("role", sorted(MATRIX))
def test_no_access_outside_the_lake_prefix(rendered: dict, role: str) -> None:
    policy = policies(rendered)[role]
    for resource in (f"arn:aws:s3:::{BUCKET}/bronze/x", f"arn:aws:s3:::{BUCKET}/other/{PREFIX}/shards/x",
                     f"arn:aws:s3:::other-bucket/{PREFIX}/shards/x", f"arn:aws:s3:::{BUCKET}/{PREFIX}/shardsX/y"):
        assert not allowed(policy, "s3:GetObject", resource), f"{role} can read {resource}"
    assert not allowed(policy, "s3:ListBucket", f"arn:aws:s3:::{BUCKET}"), "unconditioned ListBucket"
    assert not allowed(policy, "s3:ListBucket", f"arn:aws:s3:::{BUCKET}", {"s3:prefix": ""})
    for action in ("s3:DeleteBucket", "s3:PutBucketPolicy", "s3:PutLifecycleConfiguration", "iam:PassRole", "kms:ScheduleKeyDeletion"):
        assert not allowed(policy, action, f"arn:aws:s3:::{BUCKET}") and not allowed(policy, action, KMS)


def test_no_wildcard_actions_or_resources(rendered: dict) -> None:
    for role, policy in policies(rendered).items():
        for st in policy["Statement"]:
            assert st["Effect"] == "Allow", role
            for action in st["Action"]:
                assert "*" not in action, f"{role}: wildcard action {action}"
            for resource in st["Resource"]:
                assert resource != "*" and not resource.endswith(":*"), f"{role}: wildcard resource {resource}"
                assert resource.startswith((f"arn:aws:s3:::{BUCKET}/{PREFIX}/", KMS)) or resource == f"arn:aws:s3:::{BUCKET}", resource


def test_key_usage_is_minimal(rendered: dict) -> None:
    p = policies(rendered)
    assert allowed(p["gpu_node"], "kms:Decrypt", KMS) and not allowed(p["gpu_node"], "kms:GenerateDataKey", KMS)
    for writer in ("ingest_writer", "transformer"):
        assert allowed(p[writer], "kms:GenerateDataKey", KMS) and allowed(p[writer], "kms:Decrypt", KMS)
        assert not allowed(p[writer], "kms:Decrypt", "arn:aws:kms:us-east-1:111122223333:key/other")


def test_prefixes_follow_the_lake_layout(rendered: dict) -> None:
    """The prefixes are ingest.lake's layers plus shards, under the lake prefix."""
    from ingest.lake import LAYERS as LAKE_LAYERS, Lake
    from ingest.settings import S3Settings

    lake = Lake(f"s3://{BUCKET}/{PREFIX}", s3=S3Settings())
    layers_used = {p for r in rendered["role_prefixes"].values() for p in r["read"] + r["write"]}
    assert layers_used == set(LAKE_LAYERS) | {"shards"}
    for layer in layers_used:
        assert f"{lake.key(layer)}/" in rendered["lifecycle_prefixes"]
    assert lake.key("bronze", "images") == f"{PREFIX}/bronze/images"


def test_lifecycle_only_expires_noncurrent_versions(rendered: dict) -> None:
    days = rendered["lifecycle_prefixes"]
    assert set(days) == {f"{PREFIX}/{layer}/" for layer in LAYERS}
    assert all(isinstance(d, int) and d >= 1 for d in days.values())
    assert days[f"{PREFIX}/shards/"] <= days[f"{PREFIX}/gold/"]


def test_empty_prefix_renders_bucket_root_policies(tmp_path: Path) -> None:
    """A lake at the bucket root (s3://lake) still scopes every role to its layers."""
    shutil.copytree(MODULE, tmp_path / "m")
    (tmp_path / "main.tf").write_text(
        f'module "a" {{\n  source = "./m"\n  bucket_name = "{BUCKET}"\n  lake_prefix = ""\n  kms_key_arn = "{KMS}"\n}}\n'
        'output "p" { value = module.a.policy_json }\n'
    )
    tf(["init", "-input=false", "-backend=false"], tmp_path)
    tf(["apply", "-auto-approve", "-input=false", f"-state={tmp_path / 's'}"], tmp_path)
    out = json.loads(tf(["output", "-json", f"-state={tmp_path / 's'}"], tmp_path).stdout)
    gpu = json.loads(out["p"]["value"]["gpu_node"])
    assert allowed(gpu, "s3:GetObject", f"arn:aws:s3:::{BUCKET}/shards/ds/s1/shard-0.tar")
    assert not allowed(gpu, "s3:GetObject", f"arn:aws:s3:::{BUCKET}/gold/t/part-0.parquet")


# -- the root module, structurally (its AWS provider cannot be installed offline) ----------------
@pytest.fixture(scope="module")
def root_hcl() -> dict:
    hcl2 = pytest.importorskip("hcl2")
    from hcl2 import SerializationOptions

    opts = SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
    merged: dict[str, list] = {}
    for path in sorted(TF_DIR.glob("*.tf")):
        with path.open() as fh:
            for key, value in hcl2.load(fh, serialization_options=opts).items():
                merged.setdefault(key, []).extend(value)
    return merged


def resource(root_hcl: dict, rtype: str, name: str = "lake") -> dict:
    for block in root_hcl["resource"]:
        if rtype in block and name in block[rtype]:
            return block[rtype][name]
    raise AssertionError(f"resource {rtype}.{name} missing")


def test_bucket_is_versioned_encrypted_and_private(root_hcl: dict) -> None:
    assert resource(root_hcl, "aws_s3_bucket_versioning")["versioning_configuration"][0]["status"] == "Enabled"
    sse = resource(root_hcl, "aws_s3_bucket_server_side_encryption_configuration")["rule"][0]
    default = sse["apply_server_side_encryption_by_default"][0]
    assert default["sse_algorithm"] == "aws:kms" and "aws_kms_key.lake.arn" in default["kms_master_key_id"]
    assert sse["bucket_key_enabled"] is True
    assert resource(root_hcl, "aws_kms_key")["enable_key_rotation"] is True
    pab = resource(root_hcl, "aws_s3_bucket_public_access_block")
    for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert pab[flag] is True, flag
    assert resource(root_hcl, "aws_s3_bucket_ownership_controls")["rule"][0]["object_ownership"] == "BucketOwnerEnforced"
    policy = resource(root_hcl, "aws_s3_bucket_policy")["policy"]
    assert "aws:SecureTransport" in policy and "Deny" in policy


def test_lifecycle_rules_expire_only_old_versions_and_uploads(root_hcl: dict) -> None:
    lc = resource(root_hcl, "aws_s3_bucket_lifecycle_configuration")
    assert "aws_s3_bucket_versioning.lake" in str(lc["depends_on"])
    (abort,) = lc["rule"]
    assert "abort_incomplete_multipart_upload" in abort and "expiration" not in abort
    (dyn,) = lc["dynamic"]
    rule = dyn["rule"]
    assert "module.access.lifecycle_prefixes" in rule["for_each"]
    content = rule["content"][0]
    assert content["filter"][0]["prefix"] == "${rule.key}"
    assert content["noncurrent_version_expiration"][0]["noncurrent_days"] == "${rule.value}"
    # Current objects must never expire (a Delta table would lose live data files).
    assert set(content["expiration"][0]) <= {"expired_object_delete_marker", "__is_block__"}
    assert content["expiration"][0]["expired_object_delete_marker"] is True


def test_three_roles_use_the_rendered_policies(root_hcl: dict) -> None:
    roles = next(b["roles"] for b in root_hcl["locals"] if "roles" in b)
    assert set(roles) == set(MATRIX)
    assert roles["gpu_node"]["principals"] == ["ec2.amazonaws.com"]
    pol = resource(root_hcl, "aws_iam_policy")
    assert pol["for_each"] == "${local.roles}" and "module.access.policy_json[each.key]" in pol["policy"]
    attach = resource(root_hcl, "aws_iam_role_policy_attachment")
    assert "aws_iam_policy.lake[each.key].arn" in attach["policy_arn"]
    (module,) = [m["access"] for m in root_hcl["module"] if "access" in m]
    assert module["source"] == "./modules/lake-access"
    assert "aws_kms_key.lake.arn" in module["kms_key_arn"] and "aws_s3_bucket.lake" in module["bucket_name"]
    # No inline policies that could widen access behind the module's back.
    assert not any("aws_iam_role_policy" in b for b in root_hcl["resource"])


def test_module_native_terraform_tests_pass(tmp_path: Path) -> None:
    """modules/lake-access/tests/*.tftest.hcl, including the lake_prefix validation rule."""
    shutil.copytree(MODULE, tmp_path / "m")
    tf(["init", "-input=false", "-backend=false"], tmp_path / "m")
    out = tf(["test", "-no-color"], tmp_path / "m").stdout
    import re

    m = re.search(r"(\d+) passed, (\d+) failed", out)
    assert m and int(m.group(1)) >= 3 and m.group(2) == "0", out
    assert 'run "rejects_a_prefix_with_slashes"... pass' in out
