"""GPU detection when num_gpus is not given (unit: no processes)."""

import subprocess

import pytest

from zray._launch import default_resources, detect_gpus

pytestmark = pytest.mark.timeout(10)

LISTING = ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)\n"
           "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-2)\n")


def test_cuda_visible_devices_decides_when_set():
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "0,2,3"}, run=lambda: LISTING) == 3
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": ""}, run=lambda: LISTING) == 0
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "-1"}, run=lambda: LISTING) == 0


def test_nvidia_smi_listing_counts_gpus():
    assert detect_gpus({}, run=lambda: LISTING) == 2


def test_no_nvidia_smi_means_no_gpus():
    def missing():
        raise FileNotFoundError("nvidia-smi")

    def failing():
        raise subprocess.CalledProcessError(9, "nvidia-smi")
    assert detect_gpus({}, run=missing) == 0
    assert detect_gpus({}, run=failing) == 0


def test_an_explicit_num_gpus_wins(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert default_resources(num_cpus=1, num_gpus=0).get("GPU") is None
    assert default_resources(num_cpus=1)["GPU"] == 2.0
    assert default_resources(num_cpus=1, num_gpus=1)["GPU"] == 1.0
