"""Screenshots of the dashboard for docs/img: a live two-node cluster runs a small
pipeline (tasks across both nodes, an actor, a nested fan-out, one failure,
objects in the store), and headless Chromium captures each page.

    python tools/dashboard_screenshots.py OUT_DIR [--optimize]

Needs the dashboard extra, selenium, and Debian's chromium + chromium-driver
(as the browser tests).  ``--optimize`` (needs Pillow) writes 8-bit palette
PNGs, a few tens of KB each, as committed in docs/img.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import numpy as np

import zray
from zray.cluster_utils import Cluster

PAGES = [("overview", "/", "#nodes table"), ("tasks", "/tasks", "#task-table table"),
         ("timeline", "/timeline?window=60", "svg.gantt rect.slice"),
         ("logs", "/logs?pid={trainer_pid}", "#logview"),
         ("actors", "/actors", "#actor-table table")]


@zray.remote
def load_shard(i):
    time.sleep(0.05 + 0.01 * (i % 5))
    if i == 7:
        raise FileNotFoundError(f"shard-{i:05d}.parquet is missing from s3://bucket/train/")
    return np.full(50_000, i, dtype=np.float64)


@zray.remote
def preprocess(shard):
    time.sleep(0.08)
    return float(shard.mean())


@zray.remote
def fan_out(n):
    return sum(zray.get([preprocess.remote(np.ones(10) * i) for i in range(n)]))


@zray.remote
class Trainer:
    def __init__(self):
        self.steps = 0

    def train_step(self, value):
        time.sleep(0.04)
        self.steps += 1
        print(f"step {self.steps:3d}  loss={1.0 / (1 + self.steps + value):.4f}", flush=True)
        return self.steps

    def pid(self):
        return os.getpid()


@zray.remote
def busy(seconds):
    time.sleep(seconds)


def workload():
    trainer = Trainer.options(name="trainer").remote()
    kept = [zray.put(np.zeros(2_000_000)) for _ in range(4)]        # 64 MB in the store
    for round_ in range(3):
        shards = [load_shard.options(scheduling_strategy="SPREAD").remote(i + 10 * round_)
                  for i in range(10)]
        values = []
        for ref in shards:
            try:
                values.append(zray.get(preprocess.remote(ref)))
            except Exception as exc:         # the missing shard, on purpose
                print(f"skipping a shard: {type(exc).__name__}", file=sys.stderr)
        zray.get([trainer.train_step.remote(v) for v in values])
        zray.get(fan_out.remote(4))
    return trainer, kept


def capture(url, out, trainer_pid):
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-proxy-server",
                "--window-size=1280,900", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(shutil.which("chromedriver")),
                              options=options)
    try:
        for name, path, ready in PAGES:
            driver.get(url + path.format(trainer_pid=trainer_pid))
            WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, ready))
            time.sleep(1.0)
            height = driver.execute_script("return document.body.scrollHeight")
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": 1280, "height": max(560, min(int(height), 1100)),
                "deviceScaleFactor": 1, "mobile": False})
            driver.save_screenshot(os.path.join(out, f"dashboard-{name}.png"))
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
            print(f"saved dashboard-{name}.png")
    finally:
        driver.quit()


def optimize(out):
    from PIL import Image
    for name in sorted(os.listdir(out)):
        if name.startswith("dashboard-") and name.endswith(".png"):
            path = os.path.join(out, name)
            image = Image.open(path).convert("RGB")
            image.quantize(colors=96, method=Image.Quantize.MEDIANCUT).save(
                path, optimize=True)
            print(f"{name}: {os.path.getsize(path) // 1024} KB")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--optimize", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True})
    cluster.add_node(num_cpus=2)
    zray.init(address=cluster.address)
    try:
        trainer, kept = workload()
        running = [busy.remote(30) for _ in range(3)]    # CPUs in use on the overview
        time.sleep(8)                                    # a few usage samples
        capture(cluster.dashboard_url, args.out, zray.get(trainer.pid.remote()))
        del running, kept
    finally:
        zray.shutdown()
        cluster.shutdown()
    if args.optimize:
        optimize(args.out)


if __name__ == "__main__":
    main()
