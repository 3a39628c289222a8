output "role_arn" {
  description = "Put this in istio/ingressgateway/serviceaccount.yaml (eks.amazonaws.com/role-arn)."
  value       = aws_iam_role.this.arn
}

output "role_name" {
  description = "The IAM role name."
  value       = aws_iam_role.this.name
}

output "service_account_annotation" {
  description = "The annotation, ready to paste."
  value       = { "eks.amazonaws.com/role-arn" = aws_iam_role.this.arn }
}
