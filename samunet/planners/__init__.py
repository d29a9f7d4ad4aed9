"""Planning: dataset fingerprint, the plan (samunet_plans.json) and the cross-validation splits."""
