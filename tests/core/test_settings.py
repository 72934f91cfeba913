from pathlib import Path

import pytest
from pydantic import ValidationError

from core.errors import SettingsError
from core.settings import Settings, load_settings


def test_defaults_are_a_single_local_machine(tmp_path: Path) -> None:
    settings = load_settings(environ={}, cwd=tmp_path)
    assert settings.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert settings.broker.embedded
    assert settings.paths.home == tmp_path / ".neurolake"
    assert settings.paths.lake_root == tmp_path / "lake"
    assert settings.topics.partitions_for("eeg.raw") == 4
    assert settings.mlflow.effective_tracking_uri == "http://127.0.0.1:15000"


def test_env_overrides_toml_which_overrides_defaults(tmp_path: Path) -> None:
    (tmp_path / "neurolake.toml").write_text(
        '[kafka]\nbootstrap_servers = "toml:9092"\nlinger_ms = 20\n[topics.partitions]\n"eeg.raw" = 8\n'
    )
    env = {"NEUROLAKE_KAFKA__BOOTSTRAP_SERVERS": "env:9092"}
    settings = load_settings(environ=env, cwd=tmp_path)
    assert settings.kafka.bootstrap_servers == "env:9092"
    assert settings.kafka.linger_ms == 20
    assert settings.topics.partitions_for("eeg.raw") == 8


def test_env_overrides_toml_within_a_section_and_keeps_the_rest(tmp_path: Path) -> None:
    # pydantic-settings merges the sources key by key: one variable must not reset its section.
    (tmp_path / "neurolake.toml").write_text("[lake]\nband_low_hz = 2.0\nband_high_hz = 30.0\n")
    settings = load_settings(environ={"NEUROLAKE_LAKE__BAND_HIGH_HZ": "35"}, cwd=tmp_path)
    assert (settings.lake.band_low_hz, settings.lake.band_high_hz) == (2.0, 35.0)


def test_a_bare_settings_object_is_the_defaults_and_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEUROLAKE_KAFKA__BOOTSTRAP_SERVERS", "elsewhere:9092")
    assert Settings().kafka.bootstrap_servers == "127.0.0.1:19092"


def test_partitions_from_env(tmp_path: Path) -> None:
    env = {"NEUROLAKE_TOPICS__PARTITIONS": "eeg.raw=6, markers=2"}
    settings = load_settings(environ=env, cwd=tmp_path)
    assert settings.topics.partitions_for("eeg.raw") == 6
    assert settings.topics.partitions_for("markers") == 2


def test_mapping_settings_from_env(tmp_path: Path) -> None:
    env = {"NEUROLAKE_EDGE__STIMULUS__CLASSES": "left=7.5, right=11"}
    settings = load_settings(environ=env, cwd=tmp_path)
    assert settings.edge.stimulus.classes == {"left": 7.5, "right": 11.0}


def test_edge_board_needs_its_inputs(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="edge.board=cyton needs edge.serial_port"):
        load_settings(environ={"NEUROLAKE_EDGE__BOARD": "cyton"}, cwd=tmp_path)
    with pytest.raises(SettingsError, match="Input should be 'simulated'"):
        load_settings(environ={"NEUROLAKE_EDGE__BOARD": "muse"}, cwd=tmp_path)
    settings = load_settings(environ={"NEUROLAKE_EDGE__SPOOL__DIRECTORY": "sp"}, cwd=tmp_path)
    assert settings.edge.spool.directory == tmp_path / ".neurolake" / "sp"


def test_lake_settings(tmp_path: Path) -> None:
    settings = load_settings(environ={"NEUROLAKE_LAKE__NOTCH_HZ": "0", "NEUROLAKE_LAKE__WINDOW_S": "4"}, cwd=tmp_path)
    assert settings.lake.notch_hz is None and settings.lake.window_s == 4
    with pytest.raises(SettingsError, match="lake.band_low_hz"):
        load_settings(environ={"NEUROLAKE_LAKE__BAND_LOW_HZ": "70"}, cwd=tmp_path)


def test_retrain_cron(tmp_path: Path) -> None:
    assert load_settings(environ={}, cwd=tmp_path).airflow.retrain_cron == "0 3 * * *"
    assert load_settings(environ={"NEUROLAKE_AIRFLOW__RETRAIN_CRON": ""}, cwd=tmp_path).airflow.retrain_cron == ""
    with pytest.raises(SettingsError, match=r"airflow\.retrain_cron.*give five fields"):
        load_settings(environ={"NEUROLAKE_AIRFLOW__RETRAIN_CRON": "daily at 3"}, cwd=tmp_path)


def test_real_cluster_by_configuration_alone(tmp_path: Path) -> None:
    env = {
        "NEUROLAKE_BROKER__EMBEDDED": "false",
        "NEUROLAKE_KAFKA__BOOTSTRAP_SERVERS": "k1:9093,k2:9093",
        "NEUROLAKE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "NEUROLAKE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "NEUROLAKE_KAFKA__SASL_USERNAME": "lab",
        "NEUROLAKE_KAFKA__SASL_PASSWORD": "secret",
        "NEUROLAKE_KAFKA__SSL_CA_LOCATION": "/etc/ssl/ca.pem",
        "NEUROLAKE_KAFKA__ENABLE_IDEMPOTENCE": "true",
    }
    settings = load_settings(environ=env, cwd=tmp_path)
    config = settings.kafka.producer_config()
    assert config["bootstrap.servers"] == "k1:9093,k2:9093"
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.password"] == "secret"
    assert config["ssl.ca.location"] == "/etc/ssl/ca.pem"
    assert config["enable.idempotence"] is True
    assert "secret" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"NEUROLAKE_KAFKA__BOOTSTRAP_SERVER": "x"}, "did you mean kafka.bootstrap_servers"),
        ({"NEUROLAKE_NOPE": "x"}, "unknown setting nope"),
        ({"NEUROLAKE_BROKER__PORT": "99999"}, "broker.port / NEUROLAKE_BROKER__PORT"),
        ({"NEUROLAKE_BROKER__PORT": "abc"}, "NEUROLAKE_BROKER__PORT"),
        ({"NEUROLAKE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL"}, "needs kafka.sasl_mechanism"),
        ({"NEUROLAKE_TOPICS__PARTITIONS": "eeg.rawx=2"}, "unknown topic 'eeg.rawx'"),
        ({"NEUROLAKE_TOPICS__PARTITIONS": "eeg.raw"}, "is not NAME=VALUE"),
        ({"NEUROLAKE_MLFLOW__PORT": "19092"}, "are both 19092"),
        ({"NEUROLAKE_DASHBOARD__PORT": "15000"}, "dashboard.port and mlflow.port are both 15000"),
        (
            {"NEUROLAKE_EDGE__STIMULUS__PRESENTER_PORT": "15006"},
            "edge.stimulus.presenter_port and dashboard.port are both 15006",
        ),
        ({"NEUROLAKE_EDGE__STIMULUS__LAYOUT": "grid"}, "edge.stimulus.layout"),
        ({"NEUROLAKE_EDGE__SIMULATION__PACKET_LOSS": "0.9"}, "edge.simulation.packet_loss"),
        ({"NEUROLAKE_EDGE__STIMULUS__CUE_S": "-1"}, "edge.stimulus.cue_s"),
    ],
)
def test_bad_settings_name_the_field_and_fix(tmp_path: Path, env: dict, expected: str) -> None:
    with pytest.raises(SettingsError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        load_settings(environ=env, cwd=tmp_path)


def test_malformed_toml_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka\nbootstrap_servers = ")
    with pytest.raises(SettingsError, match="is not valid TOML"):
        load_settings(config_file=bad, environ={}, cwd=tmp_path)


def test_unknown_key_in_toml(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[spark]\nmastr = 'local[1]'\n")
    with pytest.raises(SettingsError, match=r"unknown setting spark\.mastr .*did you mean spark\.master"):
        load_settings(config_file=path, environ={}, cwd=tmp_path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(environ={"NEUROLAKE_CONFIG": str(tmp_path / "none.toml")}, cwd=tmp_path)


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings(environ={}, cwd=tmp_path)
    with pytest.raises(ValidationError):
        settings.kafka.linger_ms = 1  # type: ignore[misc]


def test_web_uis_and_the_broker_stay_on_loopback_unless_the_lan_is_explicitly_trusted() -> None:
    for name in ("DASHBOARD", "MLFLOW", "AIRFLOW", "BROKER"):
        with pytest.raises(SettingsError, match=f"{name.lower()}.host='0.0.0.0' would serve the lab network"):
            load_settings(environ={f"NEUROLAKE_{name}__HOST": "0.0.0.0"})
    trusted = load_settings(
        environ={"NEUROLAKE_DASHBOARD__HOST": "0.0.0.0", "NEUROLAKE_SECURITY__ALLOW_UNAUTHENTICATED_LAN": "true"}
    )
    assert trusted.dashboard.host == "0.0.0.0"
    assert load_settings(environ={"NEUROLAKE_DASHBOARD__HOST": "::1"}).dashboard.host == "::1"
    # The stimulus page reports the frames that become signed markers: loopback too.
    with pytest.raises(SettingsError, match="edge.stimulus.presenter_host='0.0.0.0' would serve the lab network"):
        load_settings(environ={"NEUROLAKE_EDGE__STIMULUS__PRESENTER_HOST": "0.0.0.0"})


def test_the_lakes_line_filter_is_a_setting_and_describes_the_same_filter_as_the_processor(tmp_path: Path) -> None:
    import typing

    from dsp.filters import LINE_FILTERS, FilterSpec
    from dsp.session import ProcessorConfig

    env = {"NEUROLAKE_LAKE__LINE_FILTER": "bandstop", "NEUROLAKE_LAKE__BANDSTOP_ORDER": "2"}
    lake = load_settings(environ=env, cwd=tmp_path).lake
    assert typing.get_args(type(lake).model_fields["line_filter"].annotation) == LINE_FILTERS
    spec = FilterSpec.of(lake, 250.0)
    assert spec.bandstop_edges_hz == (59.0, 61.0) and spec.bandstop_order == 2
    assert ProcessorConfig(line_filter="bandstop").filter_spec(250.0) == spec
    with pytest.raises(SettingsError, match="lake.bandstop_width_hz"):
        load_settings(environ={**env, "NEUROLAKE_LAKE__BANDSTOP_WIDTH_HZ": "130"}, cwd=tmp_path)
    with pytest.raises(SettingsError, match="lake.bandstop_order"):
        load_settings(environ={**env, "NEUROLAKE_LAKE__BANDSTOP_ORDER": "12"}, cwd=tmp_path)
    with pytest.raises(SettingsError, match="lake.line_filter"):
        load_settings(environ={"NEUROLAKE_LAKE__LINE_FILTER": "comb"}, cwd=tmp_path)
