"""``zray job ...``: Ray's ``ray job`` commands over zray's authenticated channel.

    zray job submit --address HOST:PORT [--working-dir DIR] [--runtime-env-json JSON |
        --runtime-env FILE.yaml] [--submission-id ID] [--no-wait] -- python script.py
    zray job status|logs [--follow]|stop|delete ID     zray job list
"""

from __future__ import annotations

import asyncio
import json
import sys

import click

ADDRESS = click.option("--address", envvar="ZRAY_ADDRESS", show_envvar=True,
                       help="The cluster's HOST:PORT (default: the cluster started on this "
                            "host).")


def _fail(message: str):
    """Exit 1 with ``message`` as one line on stderr (``Error: ...``)."""
    raise click.ClickException(" ".join(str(message).split()))


def _client(address):
    from zray.job_submission import JobSubmissionClient
    from zray.exceptions import RayError
    from zray.security import KeyFileError
    _check_reachable(address)
    try:
        return JobSubmissionClient(address)
    except (KeyFileError, RayError, ValueError, ConnectionError, TimeoutError) as exc:
        _fail(f"cannot reach the cluster at {address or 'auto'}: {exc}")


def _check_reachable(address, timeout_s: float = 5.0) -> None:
    """Fail at once, saying what to do, when nothing listens at a HOST:PORT
    address (ZeroMQ itself would retry silently until the startup timeout)."""
    import socket
    if not address or address == "auto" or address.startswith(("ipc://", "http://",
                                                                "https://")):
        return
    host, sep, port = address[len("tcp://"):].rpartition(":") \
        if address.startswith("tcp://") else address.rpartition(":")
    if not sep or not port.isdigit():
        return              # JobSubmissionClient says what is wrong with it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else \
            (exc.strerror or str(exc))
        _fail(f"cannot reach the cluster at {address} ({reason}): check the address "
              "(`zray start --head` prints it; --address or ZRAY_ADDRESS) and that the "
              "head runs and its port is open from this host")


def _call(function, *args):
    try:
        return function(*args)
    except Exception as exc:      # a RayTaskError wraps the supervisor's ValueError etc.
        cause = getattr(exc, "cause", None) or exc
        _fail(str(cause).strip().splitlines()[-1] if str(cause).strip() else repr(cause))


@click.group("job")
def job():
    """Submit and manage jobs (driver scripts run on the head's host)."""


def _runtime_env(runtime_env_json, runtime_env_file, working_dir) -> dict | None:
    if runtime_env_json and runtime_env_file:
        _fail("give one of --runtime-env-json and --runtime-env, not both")
    env = None
    if runtime_env_json:
        try:
            env = json.loads(runtime_env_json)
        except ValueError as exc:
            _fail(f"--runtime-env-json is not JSON ({exc}); write it like "
                  "'{\"env_vars\": {\"A\": \"1\"}}'")
    elif runtime_env_file:
        import yaml
        try:
            with open(runtime_env_file) as f:
                env = yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as exc:
            _fail(f"cannot read --runtime-env {runtime_env_file}: {exc}")
    if env is not None and not isinstance(env, dict):
        _fail("the runtime_env must be a JSON/YAML mapping, like {\"working_dir\": \".\"}")
    if working_dir:
        env = dict(env or {}, working_dir=working_dir)
    if env:
        _check_runtime_env(env)
    return env


def _check_runtime_env(env: dict) -> None:
    """Refuse a bad runtime_env before connecting: unknown or unsupported keys,
    wrong types, a working_dir or py_module that is not a local directory."""
    from zray import options as opts
    from zray.runtime_env.packaging import check_local_paths
    try:
        opts.validate({"runtime_env": env}, opts.TASK_OPTIONS, "the job's runtime_env")
        check_local_paths(env)
    except (ValueError, TypeError, NotImplementedError) as exc:
        _fail(str(exc))


@job.command(context_settings={"ignore_unknown_options": True})
@ADDRESS
@click.option("--working-dir", help="Local directory shipped as the job's working_dir.")
@click.option("--runtime-env-json", help="The job's runtime_env as JSON.")
@click.option("--runtime-env", "runtime_env_file", help="The job's runtime_env, a YAML file.")
@click.option("--submission-id", help="The job's id (default: a new one).")
@click.option("--metadata-json", help="Metadata, a JSON object of str -> str.")
@click.option("--entrypoint-num-cpus", type=float, help="Recorded; not reserved by zray.")
@click.option("--no-wait", is_flag=True, help="Return once submitted; do not follow logs.")
@click.argument("entrypoint", nargs=-1, type=click.UNPROCESSED, required=True)
def submit(address, working_dir, runtime_env_json, runtime_env_file, submission_id,
           metadata_json, entrypoint_num_cpus, no_wait, entrypoint):
    """Run ENTRYPOINT (after --; several words are quoted and joined as Ray does,
    one word is taken as a shell command) as a job."""
    runtime_env = _runtime_env(runtime_env_json, runtime_env_file, working_dir)
    metadata = None
    if metadata_json:
        try:
            metadata = json.loads(metadata_json)
        except ValueError as exc:
            _fail(f"--metadata-json is not JSON ({exc})")
    client = _client(address)
    submission_id = _call(lambda: client.submit_job(
        entrypoint=entrypoint_command(entrypoint), runtime_env=runtime_env,
        submission_id=submission_id, metadata=metadata,
        entrypoint_num_cpus=entrypoint_num_cpus))
    click.echo(f"Job '{submission_id}' submitted successfully")
    if no_wait:
        click.echo(f"Query the logs with: zray job logs {submission_id}")
        return
    _follow(client, submission_id)
    status = _call(client.get_job_status, submission_id)
    click.echo(f"Job '{submission_id}' {status.value.lower()}")
    sys.exit(0 if status.value == "SUCCEEDED" else 1)


def entrypoint_command(words) -> str:
    """The shell command for ENTRYPOINT's words: several are quoted and joined
    (shlex.join, as Ray's CLI does: `-- python -c "print(1)"` works); a single
    word is taken as a shell command as it is (`-- "python x.py | tee out"`)."""
    import shlex
    return words[0] if len(words) == 1 else shlex.join(words)


def _follow(client, submission_id) -> None:
    async def run():
        async for text in client.tail_job_logs(submission_id):
            click.echo(text, nl=False)
    _call(lambda: asyncio.run(run()))


@job.command()
@ADDRESS
@click.argument("submission_id")
def status(address, submission_id):
    """Print a job's status (and its message)."""
    info = _call(_client(address).get_job_info, submission_id)
    click.echo(f"Status for job '{submission_id}': {info.status.value}")
    if info.message:
        click.echo(f"Status message: {info.message}")


@job.command()
@ADDRESS
@click.option("--follow", "-f", is_flag=True, help="Follow the logs until the job ends.")
@click.argument("submission_id")
def logs(address, follow, submission_id):
    """Print a job's output."""
    client = _client(address)
    if follow:
        _follow(client, submission_id)
    else:
        click.echo(_call(client.get_job_logs, submission_id), nl=False)


@job.command()
@ADDRESS
@click.argument("submission_id")
def stop(address, submission_id):
    """Stop a job: its entrypoint's process group, and with it its tasks and actors."""
    client = _client(address)
    if _call(client.stop_job, submission_id):
        click.echo(f"Job '{submission_id}' is being stopped")
    else:
        click.echo(f"Job '{submission_id}' had already ended")


@job.command()
@ADDRESS
@click.argument("submission_id")
def delete(address, submission_id):
    """Forget an ended job and delete its log."""
    _call(_client(address).delete_job, submission_id)
    click.echo(f"Job '{submission_id}' deleted")


@job.command("list")
@ADDRESS
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def list_jobs(address, fmt):
    """List the cluster's jobs."""
    jobs = _call(_client(address).list_jobs)
    if fmt == "json":
        click.echo(json.dumps([j.to_dict() for j in jobs], indent=1))
        return
    for j in jobs:
        click.echo(f"{j.submission_id}  {j.status.value:9}  {j.entrypoint}")
    if not jobs:
        click.echo("(no jobs)")
