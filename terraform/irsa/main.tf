# IRSA role for the svc-gateway ingress gateway pods.
#
# Trust: only the one ServiceAccount (exact `sub`), only tokens minted for STS (`aud`),
# only through the cluster's OIDC provider. Permissions: read the listed secrets, nothing
# else; with no secrets listed, the role has no permission policy at all.

locals {
  oidc_host = trimprefix(var.oidc_provider_url, "https://")
  subject   = "system:serviceaccount:${var.namespace}:${var.service_account}"
  tags = merge(var.tags, {
    "app.kubernetes.io/name"       = "istio-ingressgateway"
    "app.kubernetes.io/part-of"    = "svc-gateway"
    "app.kubernetes.io/managed-by" = "terraform"
  })
}

data "aws_iam_policy_document" "trust" {
  statement {
    sid     = "GatewayServiceAccountOnly"
    effect  = "Allow"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }

    # StringEquals, never StringLike: a wildcard here would let any ServiceAccount in the
    # namespace (or cluster) assume the role.
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:sub"
      values   = [local.subject]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name                 = var.role_name
  description          = "svc-gateway ingress gateway (IRSA: ${local.subject})"
  assume_role_policy   = data.aws_iam_policy_document.trust.json
  max_session_duration = var.max_session_duration
  permissions_boundary = var.permissions_boundary_arn
  tags                 = local.tags
}

data "aws_iam_policy_document" "permissions" {
  count = length(var.secret_arns) > 0 ? 1 : 0

  statement {
    sid       = "ReadGatewaySecrets"
    effect    = "Allow"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = var.secret_arns
  }

  dynamic "statement" {
    for_each = length(var.kms_key_arns) > 0 ? [1] : []
    content {
      sid       = "DecryptThroughSecretsManagerOnly"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = var.kms_key_arns

      # The key may only be used by Secrets Manager on the role's behalf.
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${data.aws_region.current.name}.amazonaws.com"]
      }
    }
  }
}

data "aws_region" "current" {}

resource "aws_iam_role_policy" "permissions" {
  count  = length(var.secret_arns) > 0 ? 1 : 0
  name   = "${var.role_name}-secrets"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.permissions[0].json
}
