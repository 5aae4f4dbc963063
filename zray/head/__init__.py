"""The head: the cluster's broker (membership, scheduling, objects, lineage)."""
