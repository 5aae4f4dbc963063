"""Jobs against a cluster started with `zray start --head`, by CLI and by client."""

from __future__ import annotations

import asyncio
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

import zray
from zray.job_submission import JobStatus, JobSubmissionClient
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(60)


def zray_cli(*args, temp_dir, timeout_s=45, env=None):
    environ = dict(os.environ, ZRAY_TEMP_DIR=str(temp_dir), **(env or {}))
    return subprocess.run([sys.executable, "-m", "zray", *args], capture_output=True,
                          text=True, timeout=timeout_s, env=environ)


@pytest.fixture(scope="module")
def head():
    temp_dir = pathlib.Path(tempfile.mkdtemp(prefix="zj", dir="/tmp"))
    started = zray_cli("start", "--head", "--port", "0", "--node-ip-address", "127.0.0.1",
                       "--num-cpus", "2", temp_dir=temp_dir)
    assert started.returncode == 0, started.stderr
    address = re.search(r"zray head started at (\S+)", started.stdout).group(1)
    yield address, temp_dir
    if zray.is_initialized():
        zray.shutdown()
    zray_cli("stop", "--grace-s", "5", temp_dir=temp_dir)
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def client(head, monkeypatch):
    address, temp_dir = head
    monkeypatch.setenv("ZRAY_TEMP_DIR", str(temp_dir))       # where the key is recorded
    job_client = JobSubmissionClient(address)
    yield job_client
    job_client.close()


def wait_status(client, submission_id, timeout_s=20):
    assert wait_for(lambda: client.get_job_status(submission_id).is_terminal(), timeout_s)
    return client.get_job_info(submission_id)


def test_cli_submit_with_working_dir_succeeds_with_logs(head, tmp_path):
    address, temp_dir = head
    (tmp_path / "helper_mod.py").write_text("GREETING = 'hello from the working_dir'\n")
    (tmp_path / "main.py").write_text(
        "import zray, helper_mod\n"
        "zray.init()\n"
        "@zray.remote\n"
        "def f():\n"
        "    import helper_mod\n"
        "    return helper_mod.GREETING.upper()\n"
        "print(helper_mod.GREETING)\n"
        "print(zray.get(f.remote()))\n")
    done = zray_cli("job", "submit", "--address", address, "--working-dir", str(tmp_path),
                    "--submission-id", "cli-ok", "--", "python", "main.py",
                    temp_dir=temp_dir)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "Job 'cli-ok' submitted successfully" in done.stdout
    assert "hello from the working_dir\nHELLO FROM THE WORKING_DIR\n" in done.stdout
    assert "Job 'cli-ok' succeeded" in done.stdout
    status = zray_cli("job", "status", "--address", address, "cli-ok", temp_dir=temp_dir)
    assert "Status for job 'cli-ok': SUCCEEDED" in status.stdout
    logs = zray_cli("job", "logs", "--address", address, "cli-ok", temp_dir=temp_dir)
    assert logs.stdout == "hello from the working_dir\nHELLO FROM THE WORKING_DIR\n"
    listed = zray_cli("job", "list", "--address", address, temp_dir=temp_dir)
    assert re.search(r"cli-ok\s+SUCCEEDED\s+python main.py", listed.stdout)


def test_failing_entrypoint_is_failed_with_its_output(client):
    submission_id = client.submit_job(
        entrypoint="python -c \"import sys; print('about to fail'); sys.exit(3)\"",
        metadata={"owner": "tests"}, runtime_env={"env_vars": {"X": "1"}})
    info = wait_status(client, submission_id)
    assert info.status is JobStatus.FAILED and info.driver_exit_code == 3
    assert "exit code 3" in info.message and "about to fail" in info.message
    assert info.metadata == {"owner": "tests"}
    assert info.start_time <= info.end_time
    assert submission_id in [j.submission_id for j in client.list_jobs()]
    assert client.delete_job(submission_id)
    with pytest.raises(Exception, match="does not exist"):
        client.get_job_info(submission_id)


def test_stop_kills_the_entrypoint_tree_and_its_actors(client, tmp_path):
    pids = tmp_path / "pids"
    script = tmp_path / "long.py"
    script.write_text(
        "import os, subprocess, sys, time, zray\n"
        "zray.init()\n"
        "@zray.remote\n"
        "class A:\n"
        "    def pid(self):\n"
        "        return os.getpid()\n"
        "a = A.remote()\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        f"open({str(pids)!r} + '.tmp', 'w').write(f'{{os.getpid()}} {{child.pid}} "
        "{zray.get(a.pid.remote())}')\n"
        f"os.replace({str(pids)!r} + '.tmp', {str(pids)!r})\n"
        "time.sleep(300)\n")
    submission_id = client.submit_job(entrypoint=f"{sys.executable} {script}")
    assert wait_for(pids.exists, 20)
    assert client.get_job_status(submission_id) is JobStatus.RUNNING
    with pytest.raises(Exception, match="non-terminal"):
        client.delete_job(submission_id)
    assert client.stop_job(submission_id)
    info = wait_status(client, submission_id)
    assert info.status is JobStatus.STOPPED
    def gone(pid):
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    for pid in map(int, pids.read_text().split()):
        assert wait_for(lambda: gone(pid), 10), f"pid {pid} outlived its stopped job"
    assert not client.stop_job(submission_id)         # already over


def test_state_outlives_the_submitter_and_logs_stream(head, client):
    address, temp_dir = head
    submitted = zray_cli("job", "submit", "--address", address, "--no-wait",
                         "--submission-id", "detached-1", "--",
                         "python -c \"import time; print('one', flush=True); "
                         "time.sleep(0.5); print('two')\"", temp_dir=temp_dir)
    assert submitted.returncode == 0, submitted.stderr       # that client is gone now

    async def collect():
        return "".join([text async for text in client.tail_job_logs("detached-1")])
    assert asyncio.run(collect()) == "one\ntwo\n"
    assert client.get_job_status("detached-1") is JobStatus.SUCCEEDED


def test_bad_input_and_no_key_are_refused_in_one_line(head, client, tmp_path):
    address, temp_dir = head
    with pytest.raises(ValueError, match="does not exist"):
        client.submit_job(entrypoint="true", runtime_env={"working_dir": str(tmp_path / "x")})
    with pytest.raises(ValueError, match="no HTTP job endpoint"):
        JobSubmissionClient("http://127.0.0.1:8265")
    with pytest.raises(ValueError, match="names the job's log file"):
        client.submit_job(entrypoint="true", submission_id="../escape")
    client.submit_job(entrypoint="true", submission_id="dup")
    with pytest.raises(Exception, match="already exists"):
        client.submit_job(entrypoint="true", submission_id="dup")
    bad = zray_cli("job", "submit", "--address", address, "--runtime-env-json", "{oops",
                   "--", "true", temp_dir=temp_dir)
    assert bad.returncode != 0 and "not JSON" in bad.stderr and "Traceback" not in bad.stderr
    # another cluster's key: the head refuses the CURVE handshake
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    from zray.security import create_key_file
    create_key_file(str(other / "cluster.key"))
    refused = zray_cli("job", "list", "--address", address, temp_dir=other,
                       env={"ZRAY_CLUSTER_KEY_FILE": str(other / "cluster.key"),
                            "ZRAY_STARTUP_TIMEOUT_S": "2"})
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "cluster key" in refused.stderr and "dup" not in refused.stdout
    nokey = zray_cli("job", "list", "--address", address, temp_dir=other)
    assert nokey.returncode == 1 and "needs its key file" in nokey.stderr


def _one_line_error(done, *fragments):
    """The CLI failed with exit 1 and one line on stderr holding ``fragments``."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_cli_bad_input_is_one_line_that_says_what_to_do(head, tmp_path):
    address, temp_dir = head
    marker = tmp_path / "ran"

    def submit(*args, env=None):
        return zray_cli("job", "submit", "--address", address, *args, "--", "touch",
                        str(marker), temp_dir=temp_dir, env=env)
    _one_line_error(submit("--working-dir", str(tmp_path / "missing")),
                    "does not exist", "give a local directory")
    _one_line_error(submit("--runtime-env-json", "{'working_dir': '.'}"),
                    "--runtime-env-json is not JSON", "write it like")
    _one_line_error(submit("--runtime-env-json", '{"workdir": "."}'),
                    "Unknown runtime_env field(s) ['workdir']",
                    "did you mean 'working_dir' for 'workdir'?", "zray supports")
    _one_line_error(submit("--runtime-env-json", '{"conda": "env"}'),
                    "not supported by zray", "use pip")
    big = tmp_path / "big"
    big.mkdir()
    (big / "blob.bin").write_bytes(os.urandom(200_000))
    _one_line_error(submit("--working-dir", str(big),
                           env={"ZRAY_RUNTIME_ENV_MAX_PACKAGE_BYTES": "100000"}),
                    "over the 100000 bytes limit", "add 'excludes' patterns")
    import socket
    with socket.socket() as probe:       # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    started = time.monotonic()
    _one_line_error(zray_cli("job", "submit", "--address", f"127.0.0.1:{free}", "--",
                             "true", temp_dir=temp_dir),
                    f"cannot reach the cluster at 127.0.0.1:{free}", "check the address")
    assert time.monotonic() - started < 15          # not the 30 s startup timeout
    _one_line_error(zray_cli("job", "status", "--address", address, "no-such-job",
                             temp_dir=temp_dir), "does not exist")
    assert not marker.exists()


def _gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_job_records_survive_the_supervisor_dying(client):
    ended = client.submit_job(entrypoint="echo kept", submission_id="before-crash")
    assert wait_status(client, ended).status is JobStatus.SUCCEEDED
    running = client.submit_job(
        entrypoint=f"{sys.executable} -c \"import time; print('up', flush=True); "
                   "time.sleep(300)\"")
    assert wait_for(lambda: "up" in client.get_job_logs(running), 20)
    driver_pid = client.get_job_info(running).driver_pid
    supervisor = psutil.Process(driver_pid).parent()
    supervisor.kill()                            # its worker dies: the head restarts it

    def status(submission_id):
        try:
            return client.get_job_status(submission_id)
        except Exception:                        # while the actor restarts
            return None
    assert wait_for(lambda: status(running) is JobStatus.FAILED, 30)
    info = client.get_job_info(running)
    assert info.error_type == "JOB_SUPERVISOR" and "supervisor's process died" in info.message
    assert info.end_time >= info.start_time
    assert wait_for(lambda: _gone(driver_pid), 10)
    assert client.get_job_status(ended) is JobStatus.SUCCEEDED      # read back
    assert client.get_job_logs(ended) == "kept\n"
    again = client.submit_job(entrypoint="echo again")
    assert wait_status(client, again).status is JobStatus.SUCCEEDED
    assert client.delete_job(ended)


def test_cli_entrypoint_words_are_quoted_as_ray_does(head):
    address, temp_dir = head
    done = zray_cli("job", "submit", "--address", address, "--", "python", "-c",
                    "print('two words', flush=True)", temp_dir=temp_dir)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "two words\n" in done.stdout
    piped = zray_cli("job", "submit", "--address", address, "--",
                     "echo one | tr a-z A-Z", temp_dir=temp_dir)   # one word: a shell command
    assert piped.returncode == 0 and "ONE\n" in piped.stdout, (piped.stdout, piped.stderr)
