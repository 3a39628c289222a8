variable "role_name" {
  description = "IAM role name; referenced by the eks.amazonaws.com/role-arn annotation of istio/ingressgateway/serviceaccount.yaml."
  type        = string
  default     = "svc-gateway-ingressgateway"
}

variable "oidc_provider_arn" {
  description = "ARN of the EKS cluster's IAM OIDC provider (aws_iam_openid_connect_provider.arn, from infra-terraform)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/", var.oidc_provider_arn))
    error_message = "oidc_provider_arn must be an IAM OIDC provider ARN."
  }
}

variable "oidc_provider_url" {
  description = "Issuer URL of the cluster's OIDC provider, with or without https:// (e.g. oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE)."
  type        = string
}

variable "namespace" {
  description = "Namespace of the gateway's ServiceAccount."
  type        = string
  default     = "gateway"
}

variable "service_account" {
  description = "Name of the gateway's ServiceAccount."
  type        = string
  default     = "istio-ingressgateway"
}

variable "secret_arns" {
  description = "Secrets Manager secrets the gateway may read (e.g. shared HS keys of an issuer). Empty: the role grants nothing beyond the trust."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.secret_arns : can(regex("^arn:aws[a-z-]*:secretsmanager:", a))])
    error_message = "secret_arns must be Secrets Manager ARNs (no wildcards across services)."
  }
}

variable "kms_key_arns" {
  description = "Customer-managed KMS keys that encrypt secret_arns (decrypt only via Secrets Manager)."
  type        = list(string)
  default     = []
}

variable "permissions_boundary_arn" {
  description = "Optional permissions boundary required by the account's guardrails."
  type        = string
  default     = null
}

variable "max_session_duration" {
  description = "Seconds; one hour matches the projected token's expiry."
  type        = number
  default     = 3600
}

variable "tags" {
  description = "Tags for the role and its policy."
  type        = map(string)
  default     = {}
}
