"""The node manager: one per host; worker pool, object store, task dispatch."""
