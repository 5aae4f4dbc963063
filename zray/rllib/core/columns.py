"""Names of a sample batch's columns, as in ``ray.rllib.core.columns.Columns``."""


class Columns:
    OBS = "obs"
    ACTIONS = "actions"
    REWARDS = "rewards"
    TERMINATEDS = "terminateds"
    TRUNCATEDS = "truncateds"
    ACTION_DIST_INPUTS = "action_dist_inputs"
    ACTION_LOGP = "action_logp"
    VF_PREDS = "vf_preds"
    EMBEDDINGS = "embeddings"
    ADVANTAGES = "advantages"
    VALUE_TARGETS = "value_targets"
