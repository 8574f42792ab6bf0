"""Configuration is validated at start-up with errors that name the key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gateway.tracing_setup import TracingSection, TracingUnavailable, make_tracer_provider
from node.config import ConfigError, Mode, load_config
from node.config_template import render_config
from node.pki import provision_province
from tests.support.cli import assert_one_line_error, govnode


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "govnode.toml"
    path.write_text(text, encoding="utf-8")
    return path


def province_toml(**overrides: str) -> str:
    text = render_config(
        mode=Mode.PROVINCE,
        region="350000",
        name="福建省",
        trust_domain="fujian.gov.cn",
        listen="127.0.0.1:7443",
        hosts=["127.0.0.1"],
    )
    for old, new in overrides.items():
        text = text.replace(old, new)
    return text


def test_the_generated_province_config_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, province_toml()))
    assert cfg.node.mode is Mode.PROVINCE
    assert cfg.path(cfg.tls.cert) == tmp_path / "tls" / "node.crt"
    assert cfg.database_url == f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"


def test_the_generated_city_config_loads(tmp_path: Path) -> None:
    text = render_config(
        mode=Mode.CITY,
        region="350100",
        name="福州市",
        trust_domain="fujian.gov.cn",
        listen="127.0.0.1:7444",
        hosts=["127.0.0.1"],
        province_region="350000",
        province_endpoint="127.0.0.1:7443",
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.federation.province_endpoint == "127.0.0.1:7443"


def test_a_county_may_not_run_a_node(tmp_path: Path) -> None:
    text = province_toml(
        **{
            'mode = "province"': 'mode = "city"',
            'region = "350000"': 'region = "350102"',
            'name = "福建省"': 'name = "鼓楼区"',
        }
    )
    with pytest.raises(ConfigError, match=r"node\.region: 350102 is a county-level.*第十九条"):
        load_config(write(tmp_path, text))


def test_a_city_outside_the_province_is_refused(tmp_path: Path) -> None:
    text = render_config(
        mode=Mode.CITY,
        region="330100",
        name="杭州市",
        trust_domain="fujian.gov.cn",
        listen="127.0.0.1:7444",
        hosts=["127.0.0.1"],
        province_region="350000",
        province_endpoint="127.0.0.1:7443",
    )
    with pytest.raises(ConfigError, match=r"node\.region: 330100 is not a city of province 350000"):
        load_config(write(tmp_path, text))


def test_a_city_needs_its_province_endpoint(tmp_path: Path) -> None:
    text = render_config(
        mode=Mode.CITY,
        region="350100",
        name="福州市",
        trust_domain="fujian.gov.cn",
        listen="127.0.0.1:7444",
        hosts=["127.0.0.1"],
        province_region="350000",
        province_endpoint="",
    ).replace('province_endpoint = ""\n', "")
    with pytest.raises(ConfigError, match=r"federation\.province_endpoint"):
        load_config(write(tmp_path, text))


def test_mode_and_region_must_agree(tmp_path: Path) -> None:
    text = province_toml(
        **{'region = "350000"': 'region = "350100"', 'name = "福建省"': 'name = "福州市"'}
    )
    with pytest.raises(ConfigError, match="mode is province but region 350100 is a city"):
        load_config(write(tmp_path, text))


def test_a_wrong_name_for_a_known_region_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"region 350000 is 福建省, but name says .浙江省."):
        load_config(write(tmp_path, province_toml(**{'name = "福建省"': 'name = "浙江省"'})))


def test_unknown_keys_and_bad_values_are_named(tmp_path: Path) -> None:
    text = province_toml(**{"[storage]": "[storage]\ncolour = 1"})
    with pytest.raises(ConfigError, match=r"storage\.colour: is not a known key"):
        load_config(write(tmp_path, text))
    text = province_toml(**{'listen = "127.0.0.1:7443"': 'listen = "nowhere"'})
    with pytest.raises(ConfigError, match=r"node\.listen: .*must be HOST:PORT"):
        load_config(write(tmp_path, text))
    text = province_toml(**{"sqlite+aiosqlite:///node.db": "mysql://x"})
    with pytest.raises(ConfigError, match=r"storage\.url"):
        load_config(write(tmp_path, text))
    # Below 2 MiB a Submit ack could no longer be sent (node.records._rejections).
    text = province_toml(**{"max_message_bytes = 4194304": "max_message_bytes = 1048576"})
    with pytest.raises(ConfigError, match=r"limits\.max_message_bytes"):
        load_config(write(tmp_path, text))


def test_invalid_toml_and_missing_file_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid TOML"):
        load_config(write(tmp_path, "[node\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")


def test_the_environment_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, province_toml())
    monkeypatch.setenv("GOVNODE_NODE__LISTEN", "127.0.0.1:9999")
    monkeypatch.setenv("GOVNODE_LOG__LEVEL", "debug")
    cfg = load_config(path)
    assert cfg.node.listen == "127.0.0.1:9999"
    assert cfg.log.level == "debug"
    monkeypatch.setenv("GOVNODE_NODE__REGION", "350102")
    with pytest.raises(ConfigError, match=r"node\.region"):
        load_config(path)


def test_audit_records_kept_less_than_three_years_is_refused(tmp_path: Path) -> None:
    text = province_toml(**{"retention_days = 1095": "retention_days = 365"})
    with pytest.raises(ConfigError, match=r"audit\.retention_days: .*365 days.*第三十九条"):
        load_config(write(tmp_path, text))
    kept = load_config(write(tmp_path, province_toml()))
    assert (kept.audit.retention_days, kept.audit.checkpoint_seconds) == (1095, 60.0)


def test_serve_refuses_a_short_retention_in_one_line(tmp_path: Path) -> None:
    made = provision_province(
        tmp_path / "p",
        region="350000",
        name="福建省",
        listen="127.0.0.1:0",
        trust_domain="fujian.gov.cn",
        hosts=["127.0.0.1"],
    )
    text = made.config_path.read_text(encoding="utf-8")
    made.config_path.write_text(
        text.replace("retention_days = 1095", "retention_days = 1000"), encoding="utf-8"
    )
    result = govnode("serve", "--config", made.config_path)
    assert_one_line_error(result, "audit.retention_days", "1000 days", "第三十九条")


def test_the_open_data_base_url_defaults_from_the_trust_domain_and_must_be_https(
    tmp_path: Path,
) -> None:
    cfg = load_config(write(tmp_path, province_toml()))
    assert cfg.open_data_base_url == "https://opendata.fujian.gov.cn"
    commented = '# base_url = "https://opendata.fujian.gov.cn"'
    assert commented in province_toml()
    given = load_config(
        write(tmp_path, province_toml(**{commented: 'base_url = "https://data.fj.cn/open/"'}))
    )
    assert given.open_data_base_url == "https://data.fj.cn/open"
    for bad in ("http://data.fj.cn", "https://", "https://data.fj.cn/?q=1", "https://a b.cn"):
        text = province_toml(**{commented: f'base_url = "{bad}"'})
        with pytest.raises(ConfigError, match=r"opendata\.base_url: .*must be an https URL"):
            load_config(write(tmp_path, text))


def test_quality_settings_are_checked_and_name_their_key(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, province_toml()))
    assert (cfg.quality.check_time, cfg.quality.window_days) == ("02:30", 30)
    own = '[quality.resources."350000-1-000001"]\nwarn_below = 95.0\n\n[opendata]'
    cfg = load_config(write(tmp_path, province_toml(**{"\n[opendata]": "\n" + own})))
    assert cfg.quality.resources["350000-1-000001"].warn_below == 95.0
    refused = [
        (
            'check_time = "02:30"',
            'check_time = "25:00"',
            r"quality\.check_time: '25:00' must be HH:MM",
        ),
        ("critical_below = 60.0", "critical_below = 90.0", r"quality: critical_below 90 is above"),
        ("window_days = 30", "window_days = 0", r"quality\.window_days"),
        (
            '# [quality.resources."350000-1-000001"]',
            '[quality.resources."nope"]',
            r"quality\.resources: 'nope' is not a resource code",
        ),
    ]
    for old, new, pattern in refused:
        with pytest.raises(ConfigError, match=pattern):
            load_config(write(tmp_path, province_toml(**{old: new})))


def test_tracing_is_off_by_default_and_its_keys_are_checked(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, province_toml()))
    assert (cfg.tracing.exporter, cfg.tracing.endpoint) == ("none", "127.0.0.1:4317")
    on = province_toml(**{'exporter = "none"': 'exporter = "otlp"\nsample_ratio = 0.25'})
    assert load_config(write(tmp_path, on)).tracing.sample_ratio == 0.25
    for old, new, named in (
        ('exporter = "none"', 'exporter = "jaeger"', r"tracing\.exporter: "),
        ('# endpoint = "127.0.0.1:4317"', 'endpoint = "collector"', r"tracing\.endpoint: .*HOST"),
        ("# sample_ratio = 1.0", "sample_ratio = 2", r"tracing\.sample_ratio: "),
    ):
        with pytest.raises(ConfigError, match=named):
            load_config(write(tmp_path, province_toml(**{old: new})))


def test_tracing_without_the_sdk_is_a_clear_start_up_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The `otel` extra not installed: its modules cannot be imported.
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    section = TracingSection(exporter="otlp")
    with pytest.raises(TracingUnavailable, match=r"pip install 'govnode\[otel\]'"):
        make_tracer_provider(section, "govnode-350000")
    assert make_tracer_provider(TracingSection(), "govnode-350000") is None
