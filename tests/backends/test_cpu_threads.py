"""Threads under DJL: its start script's OMP_NUM_THREADS=1 is not the user's choice."""

from __future__ import annotations

import os

import torch

from djl_python.backends.pytorch.cpu_policy import cpu_threads, threads_from_djl_start_script

# What DJL Serving's start script leaves a worker that the user gave no thread setting
# (djl-serving v0.28.0 serving/build.gradle:141-152; 0.34-0.36 serving/build.gradle.kts:134-143).
START_SCRIPT = {"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "1",
                "APP_HOME": "/usr/local/djl-serving-0.36.0"}


def allowed_cpus() -> int:
    return len(os.sched_getaffinity(0))


def test_the_start_scripts_one_thread_is_recognised():
    assert threads_from_djl_start_script(START_SCRIPT)
    assert not threads_from_djl_start_script({**START_SCRIPT, "NO_OMP_NUM_THREADS": "1"})  # DJL's own switch
    assert not threads_from_djl_start_script({**START_SCRIPT, "OMP_NUM_THREADS": "2"})
    assert not threads_from_djl_start_script({"OMP_NUM_THREADS": "1"})  # not launched by the script


def test_under_the_start_script_every_allowed_cpu_serves(caplog):
    """Not torch's count (OMP_NUM_THREADS=1 made it 1) but the CPUs this process may use."""
    with caplog.at_level("INFO", logger="djl_python.backends.pytorch.cpu_policy"):
        threads = cpu_threads(START_SCRIPT)
    assert 1 <= threads <= allowed_cpus()
    assert f"comes from DJL Serving's start script, not from you: using the {threads} CPU(s)" in caplog.text


def test_a_users_setting_wins():
    assert cpu_threads({**START_SCRIPT, "NO_OMP_NUM_THREADS": "1"}) == torch.get_num_threads()
    assert cpu_threads({"OMP_NUM_THREADS": "1"}) == torch.get_num_threads()
