"""working_dir and jobs across simulated hosts (network namespaces, each host with
its own temp dir), started with the real CLI (tools/many_hosts.py)."""

from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "tools"))
from many_hosts import ZrayHosts  # noqa: E402
from netns_harness import available  # noqa: E402

AVAILABLE, REASON = available()
pytestmark = [pytest.mark.skipif(not AVAILABLE, reason=REASON), pytest.mark.timeout(120)]

DRIVER = """
@zray.remote
def where():
    import host_mod
    return host_mod.VALUE, os.getcwd(), zray.get_runtime_context().get_node_id()

refs = [where.options(scheduling_strategy="SPREAD").remote() for _ in range(8)]
print(json.dumps(sorted(set(map(tuple, zray.get(refs))))))
"""


def test_working_dir_reaches_every_host_and_a_job_runs_from_another_host(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "host_mod.py").write_text("VALUE = 'shipped'\n")
    with ZrayHosts(n_hosts=2) as cluster:
        body = f"zray.shutdown()\nzray.init(address=os.environ['ZRAY_TEST_HEAD'], " \
               f"runtime_env={{'working_dir': {str(wd)!r}}})\n" + DRIVER
        seen = json.loads(cluster.run_driver(1, body).strip().splitlines()[-1])
        assert {value for value, _, _ in seen} == {"shipped"}
        assert len({node for _, _, node in seen}) == 2           # both hosts ran it
        for host in cluster.hosts:                                # each unpacked its own
            assert any(cwd.startswith(cluster.temp_dir(host.index)) for _, cwd, _ in seen)
        (wd / "main.py").write_text("import json, os, zray, host_mod\nzray.init()\n" + DRIVER)
        out = cluster._zray(1, "job", "submit", "--address", cluster.address,
                            "--working-dir", str(wd), "--", "python", "main.py")
        assert "shipped" in out and "succeeded" in out
