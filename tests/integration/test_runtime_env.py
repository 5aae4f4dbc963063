"""runtime_env working_dir / py_modules / env_vars on a real two-node cluster."""

from __future__ import annotations

import os

import pytest

import zray
from zray.cluster_utils import Cluster
from zray.exceptions import RayTaskError

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def two_nodes():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1,
                                                            "resources": {"head": 1}})
    other = cluster.add_node(num_cpus=2, resources={"nodeB": 1})
    yield cluster, other
    if zray.is_initialized():
        zray.shutdown()
    cluster.shutdown()


@pytest.fixture
def driver(two_nodes):
    cluster, _ = two_nodes

    def connect(**kwargs):
        return zray.init(address=cluster.address, **kwargs)
    yield connect
    if zray.is_initialized():
        zray.shutdown()


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@zray.remote
def probe(module_name):
    import importlib
    module = importlib.import_module(module_name)
    return (module.VALUE, os.getcwd(), zray.get_runtime_context().get_node_id(),
            sorted(os.listdir(".")), os.environ.get("A"), os.environ.get("B"))


def test_working_dir_is_shipped_to_every_node(two_nodes, driver, tmp_path):
    cluster, other = two_nodes
    wd = tmp_path / "wd"
    _write(wd / "only_in_wd.py", "VALUE = 'wd-module'\n")
    _write(wd / "data" / "keep.txt", "k")
    _write(wd / "data" / "skip.log", "x")
    _write(wd / "build" / "artifact.bin", "x")
    _write(wd / ".gitignore", "*.log\n")
    driver(runtime_env={"working_dir": str(wd), "excludes": ["build/"],
                        "env_vars": {"A": "job"}})
    here = zray.get(probe.options(resources={"head": 1}).remote("only_in_wd"))
    there = zray.get(probe.options(resources={"nodeB": 1}).remote("only_in_wd"))
    assert here[0] == there[0] == "wd-module"
    assert here[2] == cluster.head_node.node_id and there[2] == other.node_id
    # each node unpacked its own copy, under its own cache, and works there
    assert here[1] != there[1]
    assert f"node-{other.node_id[:12]}" in there[1] and os.path.isdir(there[1])
    assert here[3] == there[3] == [".gitignore", "data", "only_in_wd.py"]
    assert os.listdir(os.path.join(there[1], "data")) == ["keep.txt"]
    assert here[4] == there[4] == "job"


def test_py_modules_and_env_vars_merge_per_task(driver, tmp_path):
    _write(tmp_path / "mods" / "my_pkg" / "__init__.py", "VALUE = 'pkg'\n")
    driver(runtime_env={"env_vars": {"A": "job", "B": "job"}})
    task = probe.options(runtime_env={"py_modules": [str(tmp_path / "mods" / "my_pkg")],
                                      "env_vars": {"B": "task"}})
    value, _, _, _, a, b = zray.get(task.remote("my_pkg"))
    assert (value, a, b) == ("pkg", "job", "task")
    with pytest.raises(RayTaskError, match="No module named 'my_pkg'"):
        zray.get(probe.remote("my_pkg"))      # a plain task: its own workers


@zray.remote
class Holder:
    def value(self):
        import only_in_wd
        return only_in_wd.VALUE, os.getcwd()


def test_two_environments_at_once_do_not_mix(driver, tmp_path):
    for name in ("one", "two"):
        _write(tmp_path / name / "same_name.py", f"VALUE = {name!r}\n")
        _write(tmp_path / name / f"only_{name}.py", "VALUE = 1\n")
    driver()
    envs = {name: {"working_dir": str(tmp_path / name)} for name in ("one", "two")}
    refs = [(name, probe.options(runtime_env=envs[name]).remote("same_name"))
            for _ in range(6) for name in ("one", "two")]
    for name, ref in refs:
        assert zray.get(ref)[0] == name
    with pytest.raises(RayTaskError, match="No module named 'only_two'"):
        zray.get(probe.options(runtime_env=envs["one"]).remote("only_two"))
    with pytest.raises(RayTaskError, match="No module named 'only_one'"):
        zray.get(probe.options(runtime_env=envs["two"]).remote("only_one"))

    _write(tmp_path / "actor" / "only_in_wd.py", "VALUE = 'actor-wd'\n")
    actor = Holder.options(runtime_env={"working_dir": str(tmp_path / "actor")}).remote()
    value, cwd = zray.get(actor.value.remote())
    assert value == "actor-wd" and cwd != str(tmp_path / "actor")


def test_pip_installs_once_per_node_into_its_own_folder(driver, tmp_path):
    project = tmp_path / "proj"
    _write(project / "pyproject.toml",
           '[build-system]\nrequires = ["setuptools"]\n'
           'build-backend = "setuptools.build_meta"\n'
           '[project]\nname = "zray-pip-probe"\nversion = "0.1"\n'
           '[tool.setuptools]\npackages = ["zray_pip_probe"]\n')
    _write(project / "zray_pip_probe" / "__init__.py", "VALUE = 'pip'\n")
    driver()
    env = {"pip": ["--no-index", "--no-build-isolation", str(project)]}
    value, _, _, _, _, _ = zray.get(probe.options(runtime_env=env,
                                                  resources={"nodeB": 1}).remote(
        "zray_pip_probe"), timeout=60)
    assert value == "pip"
    with pytest.raises(RayTaskError, match="No module named 'zray_pip_probe'"):
        zray.get(probe.options(resources={"nodeB": 1}).remote("zray_pip_probe"))
    bad = probe.options(runtime_env={"pip": ["--no-index", "no-such-package-zr"]})
    with pytest.raises(RayTaskError, match="RuntimeEnvSetupError.*pip install"):
        zray.get(bad.remote("x"), timeout=60)


def test_bad_runtime_envs_say_what_to_do(driver, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="does not exist: give a local directory"):
        driver(runtime_env={"working_dir": str(tmp_path / "missing")})
    assert not zray.is_initialized()
    with pytest.raises(ValueError, match="Unknown runtime_env field"):
        probe.options(runtime_env={"workdir": "."})
    with pytest.raises(NotImplementedError, match="supports"):
        probe.options(runtime_env={"uv": ["requests"]})
    with pytest.raises(TypeError, match="pip"):
        probe.options(runtime_env={"pip": [1]})
    with pytest.raises(NotImplementedError, match="conda"):
        probe.options(runtime_env={"conda": "env"})
    with pytest.raises(TypeError, match="py_modules"):
        probe.options(runtime_env={"py_modules": "not-a-list"})
    big = tmp_path / "big"
    _write(big / "blob.bin", "").write_bytes(os.urandom(200_000))
    monkeypatch.setenv("ZRAY_RUNTIME_ENV_MAX_PACKAGE_BYTES", "100000")
    driver()
    with pytest.raises(ValueError, match="over the 100000 bytes limit: add 'excludes'"):
        probe.options(runtime_env={"working_dir": str(big)}).remote("x")
    ok = probe.options(runtime_env={"working_dir": str(big), "excludes": ["*.bin"]})
    with pytest.raises(RayTaskError, match="No module named 'x'"):
        zray.get(ok.remote("x"))
