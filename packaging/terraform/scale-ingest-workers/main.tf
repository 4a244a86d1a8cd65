# Runbook: scale central's ingest workers to drain a RabbitMQ backlog.
#
# Raised by incidents of kind CentralIngestLagHigh. It works out how many
# ingest worker replicas drain the backlog within the target time, and
# renders the Helm values override for central's chart. It uses only
# Terraform's built-ins (terraform_data, locals, outputs), so `init` and
# `plan` need no provider download and run offline; the Helm upgrade itself
# is a deliberate step an operator takes with the rendered values.

terraform {
  required_version = ">= 1.4.0" # terraform_data; OpenTofu >= 1.6 has it too
}

variable "backlog_records" {
  type        = number
  description = "Records waiting in the ingest queue (from the alert or the queue's metrics)."
  validation {
    condition     = var.backlog_records >= 0
    error_message = "backlog_records must not be negative."
  }
}

variable "current_replicas" {
  type        = number
  description = "Ingest worker replicas running now."
  default     = 2
}

variable "records_per_worker_per_s" {
  type        = number
  description = "Sustained records per second one worker writes to Cassandra."
  default     = 2000
  validation {
    condition     = var.records_per_worker_per_s > 0
    error_message = "records_per_worker_per_s must be positive."
  }
}

variable "target_drain_s" {
  type        = number
  description = "Drain the backlog within this many seconds."
  default     = 600
}

variable "min_replicas" {
  type    = number
  default = 2
}

variable "max_replicas" {
  type        = number
  description = "Upper bound: RabbitMQ and Cassandra capacity, not just the queue, limit useful workers."
  default     = 16
}

locals {
  needed  = ceil(var.backlog_records / (var.records_per_worker_per_s * var.target_drain_s))
  desired = min(var.max_replicas, max(var.min_replicas, var.current_replicas, local.needed))
  capped  = local.needed > var.max_replicas
  values  = yamlencode({ ingest = { replicas = local.desired } })
}

resource "terraform_data" "ingest_replicas" {
  input = {
    replicas = local.desired
    backlog  = var.backlog_records
  }
}

output "desired_replicas" {
  value = local.desired
}

output "capped_at_max" {
  value       = local.capped
  description = "True when the backlog needs more workers than max_replicas allows."
}

output "helm_values" {
  value       = local.values
  description = "Values override for `helm upgrade central packaging/helm/central -f -`."
}
