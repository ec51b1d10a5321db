"""The takeover config: a good one loads; every bad one in bad-configs/ is refused with one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from kolabmon.takeover.config import ConfigError, load

BAD = sorted((Path(__file__).parent / "bad-configs").glob("*.toml"))
GOOD = """
cluster = "kolab-cluster"
hosts = ["kolab-cluster", "node1", "node2"]
group = "kolab"
cooldown = 300
soft_attempt = 2
state_dir = "{state}"
[nodes.node1]
prefix = "lab/on {{node}}"
[nodes.node2]
prefix = "lab/on {{node}}"
[services.imap]
reprobe = ["check_kolab_imap", "-H", "10.99.0.100", "-u", "user1@example.org", "--password-file", "/etc/pw"]
[services.storage]
reprobe = "check_kolab_storage --path /srv/kolab --fstype ext4"
on = "active"
"""


def test_good_config(tmp_path: Path) -> None:
    path = tmp_path / "takeover.toml"
    path.write_text(GOOD.format(state=tmp_path))
    config = load(path)
    assert config.nodes == {"node1": "lab/on {node}", "node2": "lab/on {node}"}
    assert config.rules.services == {"imap", "storage"} and config.rules.soft_attempt == 2
    assert config.rules.cooldown == 300 and config.audit == tmp_path / "audit.jsonl"
    assert config.probes["storage"].argv == ("check_kolab_storage", "--path", "/srv/kolab", "--fstype", "ext4")
    assert config.probes["storage"].on_active_node and not config.probes["imap"].on_active_node


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_configs_are_refused_in_one_line(path: Path) -> None:
    """Each bad config's first line, `# refused: TEXT`, says what the error must contain: for an
    unknown key, the key and the dotted path of its table."""
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert "\n" not in str(caught.value) and str(caught.value)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# refused: "), f"{path.name}: first line must say what is refused"
    assert first.removeprefix("# refused: ") in str(caught.value)


def test_every_table_refuses_unknown_keys() -> None:
    """One misspelt-key config per table the config has."""
    refused = [p.read_text().splitlines()[0] for p in BAD]
    for where in ("at the top level", "in [nodes.", "in [services.", "in [commands]"):
        assert any("unknown key '" in line and where in line for line in refused), where


def test_missing_config() -> None:
    with pytest.raises(ConfigError, match="cannot read config /nonexistent.toml: No such file"):
        load("/nonexistent.toml")


def test_a_config_that_is_not_utf8_is_one_line(tmp_path) -> None:
    path = tmp_path / "takeover.toml"
    path.write_bytes(b'cluster = "k\xe9"\n')
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load(path)
