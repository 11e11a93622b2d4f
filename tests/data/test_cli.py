import json

import pytest

from mta_ablate.cli import main
from mta_ablate.data import task_config
from mta_ablate.errors import ConfigError


def test_data_sample_prints_json_lines(capsys):
    assert main(["data", "sample", "find_block", "n_blocks=5", "--n", "3", "--seed", "4", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3
    for s in lines:
        assert s["task"] == "find_block" and s["input"].count(".") == 4
        assert s["target"] == s["blocks"][s["target_block"]] and set(s["query"]) <= set(s["target"])


def test_data_sample_needle_has_metadata(capsys):
    assert main(["data", "sample", "needle", "haystack=code", "n_needles=2", "--n", "1", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert {"input", "target", "depths", "keys", "query"} <= set(s)


def test_bad_input_is_exit_code_2_with_a_message_naming_the_key():
    assert main(["data", "sample", "find_block", "n_blocks=zero"]) == 2
    assert main(["data", "sample", "find_block", "colour=red"]) == 2
    assert main(["data", "sample", "nope"]) == 2
    with pytest.raises(ConfigError, match=r"task.n_blocks='zero': expected int"):
        task_config("find_block", n_blocks="zero")
    with pytest.raises(ConfigError, match=r"task.colour: unknown key .* allowed: \['alphabet'"):
        task_config("find_block", colour="red")


def test_data_info_lists_every_corpus(capsys):
    assert main(["data", "info", "--json"]) == 0
    rows = {r["corpus"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"code", "books", "wiki", "tex"} <= set(rows)
    assert rows["code"]["validation"]["docs"] > 0
