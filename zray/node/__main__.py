"""``python -m zray.node``: the fork server starts first, then the node manager."""

import sys

from zray.node.forkserver import spawn_for_node

early_forkserver = spawn_for_node(sys.argv[1:])   # its imports overlap ours below

from zray.node.main import main  # noqa: E402

main(early_forkserver=early_forkserver)
