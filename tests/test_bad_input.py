"""Bad input: one line naming what is wrong and what is allowed, exit code 2, before any work, nothing stored.

One row per case: (id, the command line, what the line must say). `{q}` is the quickstart sweep file, `{tmp}` a
scratch folder holding the files below. Every case also checks that no store was created and no password shown.
"""

import os
import shlex

import pytest

from mta_ablate.cli import main

Q = "sweeps/quickstart.yaml"
PG = "postgresql+psycopg://postgres:s3cret@127.0.0.1"
CASES = [
    ("yaml-syntax", "sweep {tmp}/bad.yaml --dry-run", "not valid YAML (line 2"),
    ("yaml-binary", "sweep {tmp}/binary.yaml --dry-run", "not a text YAML file"),
    ("yaml-folder", "sweep {tmp}/folder.yaml --dry-run", "is a folder"),
    ("yaml-missing", "sweep {tmp}/nope.yaml --dry-run", "does not exist"),
    ("yaml-oc-env", "sweep {tmp}/env.yaml --dry-run", "oc.env"),
    ("override-unterminated", f"sweep {Q} --dry-run sweep.seeds=[1,2", "not valid YAML"),
    ("objective-not-logged", f"sweep {Q} --dry-run sweep.objective.metric=val/nope", "does not log it; allowed"),
    ("sequence-too-long", f"sweep {Q} --dry-run task.n_blocks=200", "longer than model.max_seq_len=512"),
    ("kernel-too-wide", f"sweep {Q} --dry-run attention.qk_pre=[2,99]", "wider than the task's"),
    ("seeds-rule", f"sweep {Q} --dry-run sweep.seeds.initial=1", "2 <= initial <= max"),
    ("seeds-rule-name", f"sweep {Q} --dry-run sweep.seeds.rule=pocock", "allowed: calibrated, bonferroni"),
    ("pg-refused", f"status x --storage {PG}:1/db", "cannot connect"),
    ("pg-no-role", "status x --storage postgresql+psycopg://nobody:s3cret@127.0.0.1:5432/x", "cannot connect"),
    ("mysql-no-driver", "status x --storage mysql://root:s3cret@127.0.0.1/test", "driver is not installed"),
    ("url-malformed", "status x --storage not-a-url", "not a database URL"),
    ("url-unsupported", "status x --storage oracle://u:s3cret@h/db", "not a supported storage"),
    ("sqlite-missing-store", "status x --storage sqlite:///{tmp}/none/o.db", "no store at"),
    ("sqlite-missing-folder", f"sweep {Q} --storage sqlite:///{{tmp}}/none/o.db", "does not exist"),
    ("sqlite-proc", f"sweep {Q} --storage sqlite:////proc/o.db", "kernel filesystem"),
    ("sqlite-folder", f"sweep {Q} --storage sqlite:///{{tmp}}", "is a folder"),
    ("tracking-scheme", f"sweep {Q} --tracking-uri gopher://x", "unknown scheme"),
    ("tracking-down", f"sweep {Q} --tracking-uri http://127.0.0.1:1", "does not answer"),
    ("home-is-file", "train model=toy task=find_block MTA_HOME={tmp}/afile", "is a file"),
    ("home-in-proc", "train model=toy task=find_block MTA_HOME=/proc/mta", "kernel filesystem"),
    ("override-oc-env", "train model=toy task=find_block train.lr=${{oc.env:SECRET}}", "not allowed"),
    ("arm-name-climbs", "sweep {tmp}/climb.yaml --dry-run", "not a safe name"),
    ("run-name-climbs", "train model=toy task=find_block tracking.run_name=../../x", "not a safe name"),
    ("status-no-store", "status x", "no store at"),
    ("report-no-store", "report x", "no store at"),
    ("report-out-file", "report x --out {tmp}/afile", "is a file"),
    ("batch-not-divisible", "train model=toy task=find_block train.batch_size=30 train.devices=4", "multiple of 4"),
    ("strategy-unknown", "train model=toy task=find_block train.strategy=deepspeed", "one of 'auto', 'ddp', 'fsdp'"),
    ("fsdp-on-cpu", "train model=toy task=find_block train.devices=2 train.strategy=fsdp", "allowed on CPU: ddp"),
    ("nodes-without-cluster", "train model=toy task=find_block train.num_nodes=2", "started by the cluster"),
    ("devices-over-owned", f"sweep {Q} train.devices=2 --devices-per-trial 1", "allowed: --devices-per-trial >= 2"),
    ("devices-per-trial-0", f"sweep {Q} --devices-per-trial 0", "--devices-per-trial=0: expected an integer >= 1"),
    ("objective-misspelt", f"sweep {Q} --dry-run sweep.objective.metric=toy/eror", "task find_block does not log it"),
    ("objective-key-misspelt", f"sweep {Q} --dry-run sweep.objective.directon=maximize", "directon: unknown key"),
    ("pruner-key-misspelt", f"sweep {Q} --dry-run sweep.pruner.kind=median sweep.pruner.warmup=5", "warmup: unknown"),
    (
        "pruner-value-not-an-integer",
        f"sweep {Q} --dry-run sweep.pruner.kind=median sweep.pruner.warmup_steps=soon",
        "sweep.pruner.warmup_steps='soon': expected an integer",
    ),
    ("budget-key-misspelt", f"sweep {Q} --dry-run sweep.budget.max_trial=5", "max_trial: unknown key"),
    ("lr-nan", "train model=toy task=find_block train.lr=nan", "expected a positive finite number"),
    ("lr-inf", "train model=toy task=find_block train.lr=inf", "expected a positive finite number"),
    ("grad-clip-nan", "train model=toy task=find_block train.grad_clip=nan", "expected a finite number >= 0"),
    ("rope-theta-inf", "train model=toy task=find_block model.rope_theta=inf", "positive finite number"),
    ("seed-beyond-2-64", "train model=toy task=find_block seed=18446744073709551617", "in [0, 4294967295]"),
    ("micro-batch", "train model=toy task=find_block train.batch_size=16 train.micro_batch=5", "allowed: 1, 2, 4, 8"),
    ("storage-port-text", "status x --storage postgresql+psycopg://u:s3cret@127.0.0.1:abc/db", "port is not a number"),
    ("name-too-long", "train model=toy task=find_block tracking.run_name=" + "a" * 201, "at most 200"),
    ("ui-port-range", "ui --port 70000", "between 1 and 65535"),
    ("corpus-dir-missing", "train model=toy task=lm task.corpora=[dir:/nonexistent]", "is not a directory"),
]


@pytest.fixture
def scratch(workspace, tmp_path):
    (tmp_path / "bad.yaml").write_text("name: x\n  bad: [\n")
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "env.yaml").write_text("name: x\nbase: {train.lr: '${oc.env:SECRET_LR}'}\n")
    (tmp_path / "afile").write_text("a file")
    climb = "name: climb\ndefaults: [{model: toy}, {task: find_block}]\nobjective: {metric: toy/error}\n"
    (tmp_path / "climb.yaml").write_text(climb + "design: {kind: arms, arms: [{name: ../../x, overrides: {}}]}\n")
    return tmp_path


@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_stores_nothing(scratch, workspace, monkeypatch, capsys, argv, expected):
    words = shlex.split(argv.format(tmp=scratch))
    for word in [w for w in words if w.startswith("MTA_HOME=")]:
        monkeypatch.setenv("MTA_HOME", word.split("=", 1)[1])
        words.remove(word)
    before = set(os.listdir(scratch))
    assert main(words) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    assert expected in err, err
    assert "s3cret" not in err
    assert not workspace.exists() or not any(workspace.glob("*.db")), "a store was created"
    assert set(os.listdir(scratch)) == before


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://user:pw@host:5432/db", "postgresql+psycopg://user:***@host:5432/db"),
        ("postgresql://:pw@host/db", "postgresql://:***@host/db"),
        (
            "postgresql://host/db?user=u&password=pw&sslmode=require",
            "postgresql://host/db?user=u&password=***&sslmode=require",
        ),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("sqlite:////tmp/o.db", "sqlite:////tmp/o.db"),
    ],
)
def test_redact_hides_every_password_form(url, shown):
    from mta_ablate.preflight import redact

    assert redact(url) == shown


def test_report_text_is_escaped_and_csv_cells_cannot_be_formulas():
    from dashboards.export import _csv_safe
    from dashboards.render import to_markdown

    md = to_markdown([("p", "RuntimeError: <script>alert(1)</script>"), ("table", ["a"], [["<b>x</b>"]])])
    assert "<script>" not in md and "&lt;script&gt;" in md and "&lt;b&gt;" in md
    assert [_csv_safe(c) for c in ("=1+1", "+x", "-cmd", "@SUM(A1)", "mta_full", None)] == [
        "'=1+1",
        "'+x",
        "'-cmd",
        "'@SUM(A1)",
        "mta_full",
        None,
    ]
