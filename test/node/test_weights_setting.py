"""The tagger's weights when `model.weights` is not set, as a real process over DDS: offline
with nothing cached, configure fails at once saying to restart with the parameter (it is
read-only); with TAGCLIP_WEIGHTS set, that file is the one loaded."""
from __future__ import annotations

from lifecycle_msgs.srv import GetState

from tagclip_ros.node.harness import TaggerProcess, wait_until

STARTUP_S = 240


def start_unset(ros, tmp_path_factory, text_cache_dir, namespace: str, monkeypatch,
                environment: dict[str, str | None]) -> TaggerProcess:
    """A tagger in `namespace` with config/tagger.yaml's model.weights (unset), started in this
    environment with `environment`'s changes (None: unset), once it has logged its configure
    failure."""
    for name, value in environment.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    log = str(tmp_path_factory.mktemp("logs") / f"{namespace.strip('/')}.log")
    process = TaggerProcess(namespace, log, {"device": "cpu", "text_cache_dir": text_cache_dir})
    wait_until(lambda: "configure failed" in process.log() or process.process.poll() is not None,
               STARTUP_S, "configure error")
    return process


def configure_failures(process: TaggerProcess) -> list[str]:
    return [line for line in process.log().splitlines() if "configure failed: " in line]


def state(ros, namespace: str) -> str:
    request = GetState.Request()
    return ros.call(GetState, f"{namespace}/tagclip_tagger/get_state", request).current_state.label


def test_offline_without_weights_configure_fails_at_once_saying_to_restart(
        ros, tmp_path_factory, text_cache_dir, offline_hub, monkeypatch):
    process = start_unset(ros, tmp_path_factory, text_cache_dir, "/offline", monkeypatch, offline_hub)
    try:
        failures, log = configure_failures(process), process.log()
        assert len(failures) == 1, log
        assert "could not get pretrained weights ViT-B-16/openai: " in failures[0]
        assert "for the node, restart it with -p model.weights:=PATH" in failures[0]
        # one attempt, no retries logged (huggingface_hub's warnings), no torch advice
        assert "Retry" not in log and "thrown while requesting" not in log, log
        assert "weights_only" not in log and "Traceback" not in log
        assert state(ros, "/offline") == "unconfigured" and process.process.poll() is None
    finally:
        process.stop()


def test_tagclip_weights_is_the_weights_file_when_none_is_set(
        ros, tmp_path_factory, text_cache_dir, offline_hub, monkeypatch):
    environment = {**offline_hub, "TAGCLIP_WEIGHTS": "/nonexistent/from-the-environment.pt"}
    process = start_unset(ros, tmp_path_factory, text_cache_dir, "/from_env", monkeypatch, environment)
    try:
        failures = configure_failures(process)
        assert len(failures) == 1, process.log()
        assert "weights file '/nonexistent/from-the-environment.pt' does not exist" in failures[0]
    finally:
        process.stop()
