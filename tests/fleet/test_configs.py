"""fleet.configs (BATCH-002's domain half): redaction, changed paths, history rows and the
org chart, from the captured ``config.get`` / ``agents.list`` payloads and hand-made bad ones."""

from __future__ import annotations

import copy
import json

import pytest

from fleet import configs
from fleet.configs import REDACTED, changed_paths, org_parents, redact
from fleet.models import Agent, ConfigHistory
from tests.support.factories import make_gateway
from tests.support.frames import load_frame

CONFIG_GET = load_frame("30-config.get.json")["response"]["payload"]
AGENTS_LIST = load_frame("31-agents.list.json")["response"]["payload"]
SECRET = "configs-test-secret-5be0d1"


@pytest.fixture
def gateway(db):
    return make_gateway("alpha", token=SECRET)


def payload(hash_: str, mutate=None) -> dict:
    data = copy.deepcopy(CONFIG_GET)
    data["hash"] = hash_
    if mutate:
        mutate(data["sourceConfig"])
    return data


def set_emoji(emoji: str):
    def mutate(config):
        config["agents"]["entries"]["writer"]["identity"]["emoji"] = emoji

    return mutate


# --- changed_paths --------------------------------------------------------------------------------


def test_it_lists_the_dotted_paths_that_differ():
    old = {"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2], "f": True}
    new = {"a": {"b": 2, "c": {"d": "x"}}, "e": [1, 2, 3], "g": None}
    assert changed_paths(old, new) == ["a.b", "e", "f", "g"]


def test_equal_configs_have_no_changed_paths():
    config = CONFIG_GET["sourceConfig"]
    assert changed_paths(config, copy.deepcopy(config)) == []


def test_a_type_change_is_reported_at_its_path():
    assert changed_paths({"a": {"b": {"c": 1}}}, {"a": {"b": "flat"}}) == ["a.b"]
    assert changed_paths({"a": 1}, {"a": 1.5}) == ["a"]


def test_a_changed_root_scalar_has_a_root_path():
    assert changed_paths(1, 2) == ["(root)"]
    assert changed_paths({}, []) == ["(root)"]


def test_it_copes_with_non_string_keys():
    assert changed_paths({1: "a", "x": 1}, {1: "b", "x": 1}) == ["1"]


# --- redact ---------------------------------------------------------------------------------------


def test_it_redacts_secret_looking_keys_at_any_depth():
    config = {
        "gateway": {"auth": {"mode": "token", "token": SECRET}},
        "models": {"providers": {"x": {"apiKey": SECRET, "api_key": SECRET, "baseUrl": "http://h"}}},
        "channels": [{"botToken": SECRET, "name": "ops"}, {"Password": SECRET}],
        "secrets": {"privateKey": SECRET, "clientSecret": SECRET, "cookie": SECRET, "credential": SECRET},
    }
    redacted = redact(config)
    assert SECRET not in json.dumps(redacted)
    assert redacted["gateway"]["auth"] == {"mode": "token", "token": REDACTED}
    assert redacted["models"]["providers"]["x"]["baseUrl"] == "http://h"
    assert redacted["channels"][0] == {"botToken": REDACTED, "name": "ops"}
    assert config["gateway"]["auth"]["token"] == SECRET  # the input is not modified


def test_it_redacts_secret_lists():
    redacted = redact({"auth": {"tokens": [SECRET, SECRET + "2"], "apiKeys": [{"apiKey": SECRET}, ""]}})
    assert SECRET not in json.dumps(redacted)


def test_it_keeps_empty_values_and_token_counts():
    config = {"auth": {"token": ""}, "model": {"maxTokens": 4096, "contextTokens": 128000}}
    assert redact(config) == config


def test_the_gateways_own_redaction_marker_is_kept_redacted():
    redacted = redact(CONFIG_GET["sourceConfig"])
    assert redacted["gateway"]["auth"]["token"] in (REDACTED, "__OPENCLAW_REDACTED__")
    assert redacted["models"]["providers"]["stub"]["models"][0]["maxTokens"] == 4096
    assert redacted["agents"] == CONFIG_GET["sourceConfig"]["agents"]


# --- record_config --------------------------------------------------------------------------------


def test_the_first_config_is_stored_without_a_diff(gateway):
    result = configs.record_config(gateway, payload("h1"))
    assert result.changed
    row = ConfigHistory.objects.get()
    assert result.row == row
    assert (row.hash, row.changed_paths, row.diff) == ("h1", [], "")
    assert row.config["agents"]["entries"]["writer"]["name"] == "Writer"


def test_an_unchanged_hash_stores_nothing(gateway):
    configs.record_config(gateway, payload("h1"))
    result = configs.record_config(gateway, payload("h1", set_emoji("🆕")))  # the hash decides
    assert not result.changed and result.row is None
    assert ConfigHistory.objects.count() == 1


def test_a_new_hash_stores_one_row_with_its_changed_paths_and_diff(gateway):
    configs.record_config(gateway, payload("h1"))
    result = configs.record_config(gateway, payload("h2", set_emoji("🖋")))
    assert ConfigHistory.objects.count() == 2
    assert result.row.changed_paths == ["agents.entries.writer.identity.emoji"]
    lines = result.row.diff.splitlines()
    assert '-          "emoji": "✍️",' in lines
    assert '+          "emoji": "🖋",' in lines
    assert result.row.diff.startswith("--- previous\n+++ current")


def test_a_secret_the_gateway_forgot_to_redact_never_reaches_the_database(gateway):
    def leak(config):
        config["gateway"]["auth"]["token"] = SECRET
        config["models"]["providers"]["stub"]["apiKey"] = SECRET

    configs.record_config(gateway, payload("h1"))
    configs.record_config(gateway, payload("h2", leak))
    for row in ConfigHistory.objects.all():
        assert SECRET not in json.dumps(row.config)
        assert SECRET not in row.diff


def test_the_history_is_per_gateway(gateway):
    other = make_gateway("beta")
    configs.record_config(gateway, payload("h1"))
    assert configs.record_config(other, payload("h1")).changed


@pytest.mark.parametrize("bad", [None, [], "config", {}, {"hash": None}, {"hash": 42}])
def test_a_payload_without_a_hash_raises_a_clear_error_and_keeps_the_history(gateway, bad):
    configs.record_config(gateway, payload("h1"))
    with pytest.raises(ValueError, match="no hash"):
        configs.record_config(gateway, bad)
    assert list(ConfigHistory.objects.values_list("hash", flat=True)) == ["h1"]


def test_odd_config_shapes_are_stored_as_what_they_are(gateway):
    configs.record_config(gateway, {"hash": "h1", "sourceConfig": ["not", "an", "object"]})
    configs.record_config(gateway, {"hash": "h2", "parsed": {"big": "x" * (1024 * 1024), "extra": [1, {}]}})
    first, second = ConfigHistory.objects.order_by("id")
    assert first.config == {}
    assert len(second.config["big"]) == 1024 * 1024
    assert second.changed_paths == ["big", "extra"]


# --- org_parents ----------------------------------------------------------------------------------


def test_without_a_known_default_agent_everyone_is_under_the_gateway():
    assert org_parents(["a", "b"], None, {}) == {"a": None, "b": None}
    assert org_parents(["a", "b"], "ghost", {"ghost": {"subagents": {"allowAgents": ["a"]}}}) == {
        "a": None,
        "b": None,
    }


def test_agents_a_boss_may_spawn_sit_under_it_the_rest_under_the_gateway():
    entries = {"main": {"subagents": {"allowAgents": ["researcher"]}}}
    assert org_parents(["main", "researcher", "writer"], "main", entries) == {
        "main": None,
        "researcher": "main",
        "writer": None,
    }


def test_the_chart_follows_chains_breadth_first_and_survives_cycles():
    entries = {
        "main": {"subagents": {"allowAgents": ["a"]}},
        "a": {"subagents": {"allowAgents": ["b", "main", "ghost"]}},
        "b": {"subagents": {"allowAgents": ["a"]}},
    }
    assert org_parents(["main", "a", "b"], "main", entries) == {"main": None, "a": "main", "b": "a"}


def test_a_wildcard_puts_every_other_agent_under_the_boss():
    entries = {"main": {"subagents": {"allowAgents": ["*"]}}, "a": {"subagents": {"allowAgents": ["b"]}}}
    assert org_parents(["main", "a", "b"], "main", entries) == {"main": None, "a": "main", "b": "main"}


def test_odd_entries_are_ignored():
    entries = {"main": {"subagents": {"allowAgents": "researcher"}}, "researcher": "junk"}
    assert org_parents(["main", "researcher"], "main", entries) == {"main": None, "researcher": None}
    entries = {"main": {"subagents": ["researcher"]}}
    assert org_parents(["main", "researcher"], "main", entries) == {"main": None, "researcher": None}
    entries = {"main": {"subagents": {"allowAgents": [None, 3, {"id": "researcher"}]}}}
    assert org_parents(["main", "researcher"], "main", entries) == {"main": None, "researcher": None}


# --- rebuild_roster -------------------------------------------------------------------------------


def test_it_builds_the_roster_and_org_chart_from_agents_list(gateway):
    config = copy.deepcopy(CONFIG_GET["sourceConfig"])
    writes = configs.rebuild_roster(gateway, AGENTS_LIST, config)
    assert writes == 3
    agents = {a.agent_id: a for a in Agent.objects.filter(gateway=gateway)}
    assert set(agents) == {"main", "researcher", "writer"}
    assert agents["main"].is_default and not agents["writer"].is_default
    assert (agents["writer"].name, agents["writer"].emoji, agents["writer"].model) == (
        "Writer",
        "✍️",
        "stub/stub-model",
    )
    assert all(a.parent is None for a in agents.values())
    assert configs.rebuild_roster(gateway, AGENTS_LIST, config) == 0


def test_allow_agents_moves_an_agent_under_its_boss_and_back(gateway):
    config = copy.deepcopy(CONFIG_GET["sourceConfig"])
    configs.rebuild_roster(gateway, AGENTS_LIST, config)
    config["agents"]["entries"]["main"]["subagents"] = {"allowAgents": ["researcher"]}
    assert configs.rebuild_roster(gateway, AGENTS_LIST, config) == 1
    researcher = Agent.objects.get(agent_id="researcher")
    assert researcher.parent.agent_id == "main"
    assert Agent.objects.get(agent_id="writer").parent is None

    del config["agents"]["entries"]["main"]["subagents"]
    configs.rebuild_roster(gateway, AGENTS_LIST, config)
    assert Agent.objects.get(agent_id="researcher").parent is None


def test_the_default_agent_falls_back_to_the_configs_system_agent(gateway):
    roster = {"agents": [{"id": "main"}, {"id": "ops", "name": "Ops"}]}
    configs.rebuild_roster(gateway, roster, {"agents": {"defaults": {"systemAgent": {"agentId": "ops"}}}})
    assert Agent.objects.get(is_default=True).agent_id == "ops"
    assert Agent.objects.get(agent_id="main").name == "main"  # no name: the id


def test_malformed_agents_are_skipped_and_odd_fields_coerced(gateway):
    roster = {
        "defaultId": 7,
        "agents": [
            None,
            "main",
            {"name": "no id"},
            {"id": ""},
            {"id": 12},
            {"id": "ok", "name": "n" * 1000, "identity": {"emoji": "🦀" * 50}, "model": "m", "extra": [1]},
            {"id": "odd", "identity": "not-a-dict", "model": {"fallbacks": ["x"]}, "name": None},
        ],
        "unexpected": {"fields": True},
    }
    assert configs.rebuild_roster(gateway, roster, None) == 2
    ok = Agent.objects.get(agent_id="ok")
    assert (len(ok.name), len(ok.emoji), ok.model) == (200, 32, "m")
    odd = Agent.objects.get(agent_id="odd")
    assert (odd.name, odd.emoji, odd.model, odd.is_default) == ("odd", "", "", False)


@pytest.mark.parametrize("bad", [None, [], {"agents": None}, {"agents": "main"}, {"defaultId": "main"}])
def test_a_roster_without_an_agents_list_raises_a_clear_error_and_keeps_the_roster(gateway, bad):
    configs.rebuild_roster(gateway, AGENTS_LIST, CONFIG_GET["sourceConfig"])
    before = list(Agent.objects.values_list("agent_id", "name", "is_default", "parent_id"))
    with pytest.raises(ValueError, match="no agents list"):
        configs.rebuild_roster(gateway, bad, CONFIG_GET["sourceConfig"])
    assert list(Agent.objects.values_list("agent_id", "name", "is_default", "parent_id")) == before


def test_agents_no_longer_listed_are_kept(gateway):
    configs.rebuild_roster(gateway, AGENTS_LIST, CONFIG_GET["sourceConfig"])
    configs.rebuild_roster(gateway, {"defaultId": "main", "agents": [{"id": "main"}]}, {})
    assert Agent.objects.filter(gateway=gateway).count() == 3


def test_an_agent_that_left_the_roster_no_longer_claims_the_top(gateway):
    configs.rebuild_roster(gateway, AGENTS_LIST, CONFIG_GET["sourceConfig"])
    others = [a for a in AGENTS_LIST["agents"] if a["id"] != "main"]
    configs.rebuild_roster(gateway, {"defaultId": "writer", "agents": others}, {})
    defaults = list(Agent.objects.filter(gateway=gateway, is_default=True).values_list("agent_id", flat=True))
    assert defaults == ["writer"]
    assert Agent.objects.filter(gateway=gateway, agent_id="main").exists()
