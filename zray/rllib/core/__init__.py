"""RLModules (the policy/value networks), their action distributions, and the
names of a batch's columns.  Importing ``zray.rllib.core.rl_module`` loads torch."""

from zray.rllib.core.columns import Columns

DEFAULT_MODULE_ID = "default_policy"

__all__ = ["Columns", "DEFAULT_MODULE_ID"]
