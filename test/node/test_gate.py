"""node.gate: ~/enable pauses every camera; max_rate limits each camera on its own."""
from __future__ import annotations

from std_srvs.srv import SetBool

from tagclip_ros.node.gate import FrameGate


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def arrivals(gate: FrameGate, clock: Clock, cameras: tuple[str, ...], rate_hz: float, seconds: float
             ) -> dict[str, int]:
    """Each camera sends at `rate_hz` for `seconds`: how many frames of each the gate admits."""
    admitted = dict.fromkeys(cameras, 0)
    for i in range(int(rate_hz * seconds)):
        clock.now = i / rate_hz
        for camera in cameras:
            admitted[camera] += gate.admit(camera)
    return admitted


def test_max_rate_limits_each_camera_on_its_own():
    clock, logged = Clock(), []
    gate = FrameGate(5.0, logged.append, clock)
    admitted = arrivals(gate, clock, ("front", "left", "right"), 30.0, 10.0)
    assert all(49 <= n <= 52 for n in admitted.values()), admitted  # 5 Hz each, not 5 Hz in all
    assert gate.rate_limited == 3 * 300 - sum(admitted.values())


def test_a_new_rate_applies_to_every_camera_and_pausing_pauses_all():
    clock, logged = Clock(), []
    gate = FrameGate(0.0, logged.append, clock)
    assert arrivals(gate, clock, ("front", "left"), 30.0, 1.0) == {"front": 30, "left": 30}
    gate.set_rate(10.0)
    admitted = arrivals(gate, clock, ("front", "left"), 30.0, 10.0)
    assert all(99 <= n <= 102 for n in admitted.values()), admitted
    response = gate.on_enable(SetBool.Request(data=False), SetBool.Response())
    assert response.success and not gate.admit("front") and not gate.admit("left")
    assert gate.paused_frames == 2 and logged[-1].startswith("paused")
    assert gate.diagnostics()["paused"] == "true"
