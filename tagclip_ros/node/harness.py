"""Running the tagger as a real process and talking to it over DDS with rclpy.

Used by the integration tests and the node benchmark. The node is started with the command line
`launch/tagger.launch.py` produces: the `tagger_node` executable, `--ros-args`, the params
file, `-p` overrides and remaps.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TAGGER = os.path.join(os.path.dirname(sys.executable), "tagger_node")
PARAMS_FILE = os.path.join(REPO, "config", "tagger.yaml")
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def tagger_command(namespace: str, image_topic: str, params: dict[str, Any]) -> list[str]:
    """What `ros2 launch tagclip_ros tagger.launch.py namespace:=NS image:=TOPIC ...` runs."""
    command = [TAGGER, "--ros-args", "-r", f"__ns:={namespace}", "--params-file", PARAMS_FILE]
    for name, value in params.items():
        command += ["-p", f"{name}:={value}"]
    return command + ["-r", f"image:={image_topic}", "-r", f"image/compressed:={image_topic}/compressed"]


class TaggerProcess:
    """A tagger node in its own process, with its log captured to a file."""

    def __init__(self, namespace: str, log_path: str, params: dict[str, Any],
                 ros_args: tuple[str, ...] = ()) -> None:
        self.namespace = namespace
        self.log_path = log_path
        self.command = tagger_command(namespace, f"{namespace}/camera", params) + list(ros_args)
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self, signum: int = signal.SIGINT, timeout: float = 20.0) -> int:
        """Send `signum` (default SIGINT, like Ctrl-C in a launch terminal) and return the exit
        status; a node still running after `timeout` s is killed (status -9). A node that
        has already exited is not signalled: its status is returned, so stop() is idempotent."""
        status = stop_process(self.process, self.log_path, signum, timeout)
        self._log.close()
        return status


def dump_stacks(pid: int, log_path: str, why: str) -> None:
    """Append a process's thread stacks, Python and native (py-spy, from requirements/test.txt),
    to its log, so that a node or feeder that outlives its stop leaves where it waits, not only
    its -9."""
    spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    if spy is None:
        return
    try:
        dump = subprocess.run([spy, "dump", "--native", "--pid", str(pid)], capture_output=True,
                              text=True, timeout=60)
        stacks = dump.stdout + dump.stderr
    except (OSError, subprocess.TimeoutExpired) as error:
        stacks = f"py-spy failed: {error}"
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n[harness] {why}; its stacks (py-spy dump):\n{stacks}\n")


def stop_process(process: subprocess.Popen, log_path: str, signum: int = signal.SIGINT,
                 timeout: float = 20.0) -> int:
    """Send `signum` (default SIGINT, Ctrl-C) to a process whose output goes to `log_path` and
    return its exit status; one still running after `timeout` s gets its stacks dumped into that
    log and is killed (status -9). One that has exited is not signalled (idempotent)."""
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            dump_stacks(process.pid, log_path,
                        f"still running {timeout:.0f} s after {signal.Signals(signum).name}")
            process.kill()
    return process.wait()


class Client:
    """An rclpy node in the test process, spun on a background thread."""

    def __init__(self) -> None:
        self.node: Node = rclpy.create_node(f"tagclip_test_{os.getpid()}")
        self.executor = MultiThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def collect(self, msg_type: type, topic: str, qos: QoSProfile | int = 10) -> list:
        """Subscribe and return the list that received messages are appended to."""
        received: list = []
        self.node.create_subscription(msg_type, topic, received.append, qos)
        return received

    def call(self, srv_type: type, name: str, request: Any, timeout: float = 30.0) -> Any:
        client = self.node.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {name} did not appear")
        future = client.call_async(request)
        wait_until(future.done, timeout, f"no answer from {name}")
        return future.result()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


class Camera:
    """A publisher into a tagger's image topic that waits until the tagger listens."""

    def __init__(self, ros: Client, topic: str, msg_type: type = Image, qos=10) -> None:
        self.ros = ros
        self.publisher = ros.node.create_publisher(msg_type, topic, qos)
        wait_until(lambda: self.publisher.get_subscription_count() > 0, 30, f"subscriber on {topic}")

    def send(self, msg, sec: int, nanosec: int = 0) -> Time:
        msg.header = Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id="camera_optical")
        self.publisher.publish(msg)
        return msg.header.stamp


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `condition` until it is truthy; fail the test with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s: {what}")
