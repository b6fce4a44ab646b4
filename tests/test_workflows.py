"""The delivery workflows: stack lists and empty matrices, the plan-diff comment's target, permissions.

The comment step's shell script is run for real, with a stand-in `gh` that answers from fixtures
(filtered by the real jq, as `gh api --jq` does) and records every call.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tools import stacks as stacks_mod

WORKFLOWS = ROOT / ".github" / "workflows"
MARKER = "<!-- mqtt-cluster-plan-diff -->"


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


# -- stack lists and empty matrices ---------------------------------------------------------------


def _stack(dir_: Path, name: str, config: dict) -> None:
    (dir_ / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump({"config": config}))


def test_no_cluster_with_gives_an_empty_primary_list_flagged_false(tmp_path):
    _stack(tmp_path, "dev", {"aws:region": "eu-west-1"})
    _stack(tmp_path, "staging", {"mqtt-cluster:brokers": {"count": 3}})
    _stack(tmp_path, "local", {"mqtt-cluster:role": "local"})
    lists = stacks_mod.stacks(tmp_path)
    assert lists == {"primary": [], "regional": ["dev", "staging"], "global": []}
    out = dict(line.split("=", 1) for line in stacks_mod.github_output(lists).splitlines())
    assert out == {
        "primary": "[]",
        "has_primary": "false",
        "regional": '["dev","staging"]',
        "has_regional": "true",
        "global": "[]",
        "has_global": "false",
    }


def test_a_cluster_with_target_becomes_primary(tmp_path):
    _stack(tmp_path, "eu", {})
    _stack(tmp_path, "us", {"mqtt-cluster:brokers": {"cluster_with": "eu"}})
    _stack(tmp_path, "world", {"mqtt-cluster:role": "global"})
    lists = stacks_mod.stacks(tmp_path)
    assert lists == {"primary": ["eu"], "regional": ["us"], "global": ["world"]}
    assert "has_primary=true" in stacks_mod.github_output(lists).splitlines()


def test_the_cli_prints_github_output_lines():
    proc = subprocess.run(["venv/bin/python", "-m", "tools.stacks", "--github-output"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    keys = [line.split("=", 1)[0] for line in proc.stdout.splitlines()]
    assert keys == ["primary", "has_primary", "regional", "has_regional", "global", "has_global"]


MATRIX_JOBS = {"primary": "primary", "regional": "regional", "linking": "global"}


@pytest.mark.parametrize("name", ["deploy.yml", "preview.yml"])
def test_every_matrix_job_is_guarded_by_its_list_flag(name):
    wf = workflow(name)
    jobs = wf["jobs"]
    assert jobs["stacks"]["outputs"][f"has_{'primary'}"] == "${{ steps.list.outputs.has_primary }}"
    (step,) = [s for s in jobs["stacks"]["steps"] if s.get("id") == "list"]
    assert 'python -m tools.stacks --github-output >> "$GITHUB_OUTPUT"' in step["run"]
    for job, key in MATRIX_JOBS.items():
        matrix = jobs[job]["strategy"]["matrix"]["stack"]
        assert matrix == f"${{{{ fromJSON(needs.stacks.outputs.{key}) }}}}"
        assert f"needs.stacks.outputs.has_{key} == 'true'" in jobs[job]["if"], (name, job)
        assert "has_" + key in jobs["stacks"]["outputs"]


@pytest.mark.parametrize("name", ["deploy.yml", "preview.yml"])
def test_a_job_after_an_empty_list_still_runs_but_never_after_a_failure(name):
    jobs = workflow(name)["jobs"]
    # the linking stacks wait for both earlier groups, and run when each succeeded or was skipped
    assert set(jobs["linking"]["needs"]) == {"stacks", "primary", "regional"}
    cond = jobs["linking"]["if"]
    assert "!cancelled()" in cond
    for dep in ("primary", "regional"):
        assert f"""contains(fromJSON('["success","skipped"]'), needs.{dep}.result)""" in cond
    if name == "deploy.yml":  # deploy: the other regional stacks after the primaries
        assert set(jobs["regional"]["needs"]) == {"stacks", "primary"}
        assert """contains(fromJSON('["success","skipped"]'), needs.primary.result)""" in jobs["regional"]["if"]


# -- permissions and stack creation ---------------------------------------------------------------


def test_deploy_grants_no_pull_request_write_and_the_called_workflow_asks_for_nothing_more():
    assert workflow("deploy.yml")["permissions"] == {"contents": "read", "id-token": "write"}
    # a called workflow can only keep or lower its caller's token: no own block, it inherits
    assert "permissions" not in workflow("pulumi-stack.yml")
    for job in workflow("pulumi-stack.yml")["jobs"].values():
        assert "permissions" not in job


def test_ci_creates_a_missing_stack():
    steps = workflow("pulumi-stack.yml")["jobs"]["run"]["steps"]
    (action,) = [s for s in steps if str(s.get("uses", "")).startswith("pulumi/actions@")]
    assert action["with"]["upsert"] is True


# -- the plan-diff comment ------------------------------------------------------------------------


def _comment_script() -> str:
    steps = workflow("plan-diff-comment.yml")["jobs"]["comment"]["steps"]
    (step,) = [s for s in steps if "run" in s]
    env = step["env"]
    assert env["MARKER"] == MARKER and env["RUN_HEAD_SHA"] == "${{ github.event.workflow_run.head_sha }}"
    assert "--edit-last" not in step["run"]
    return step["run"]


FAKE_GH = textwrap.dedent(
    """\
    #!/usr/bin/env python3
    # Stand-in for `gh api`: answers from $FIXTURES, applies --jq with the real jq, records calls.
    import json, os, subprocess, sys
    args = sys.argv[1:]
    with open(os.environ["GH_LOG"], "a") as log:
        log.write(json.dumps(args) + "\\n")
    fx = json.load(open(os.environ["FIXTURES"]))
    assert args[0] == "api", args
    rest = [a for a in args[1:] if a != "--paginate"]
    jq = None
    if "--jq" in rest:
        i = rest.index("--jq"); jq = rest[i + 1]; del rest[i : i + 2]
    method = "GET"
    if "-X" in rest:
        i = rest.index("-X"); method = rest[i + 1]; del rest[i : i + 2]
    path = rest[0]
    if "-F" in rest:
        method = "POST" if method == "GET" else method
        body = rest[rest.index("-F") + 1]
        assert body.startswith("body=@"), body
        with open(os.environ["GH_LOG"] + ".bodies", "a") as b:
            b.write(json.dumps([method, path, open(body[len("body=@"):]).read()]) + "\\n")
        print("{}")
        sys.exit(0)
    doc = fx[path]
    if jq:
        sys.stdout.write(subprocess.run(["jq", "-r", jq], input=json.dumps(doc), capture_output=True, text=True, check=True).stdout)
    else:
        print(json.dumps(doc))
    """
)


def run_comment(tmp_path, *, pr_number="42", pr_head="abc123", run_head="abc123", comments=()):
    work = tmp_path / "work"
    work.mkdir()
    (work / "pr-number").write_text(pr_number + "\n")
    (work / "comment.md").write_text("### plan diff\n**dev**: no changes\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    gh = bindir / "gh"
    gh.write_text(FAKE_GH)
    gh.chmod(gh.stat().st_mode | stat.S_IXUSR)
    fixtures = {
        "repos/o/r/pulls/42": {"number": 42, "head": {"sha": pr_head}},
        "repos/o/r/issues/42/comments": list(comments),
    }
    (tmp_path / "fx.json").write_text(json.dumps(fixtures))
    log = tmp_path / "gh.log"
    env = {
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "GH_LOG": str(log),
        "FIXTURES": str(tmp_path / "fx.json"),
        "GH_TOKEN": "x",
        "REPO": "o/r",
        "RUN_HEAD_SHA": run_head,
        "MARKER": MARKER,
    }
    proc = subprocess.run(["bash", "-e", "-c", _comment_script()], cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    bodies = tmp_path / "gh.log.bodies"
    writes = [json.loads(line) for line in bodies.read_text().splitlines()] if bodies.exists() else []
    return writes, proc.stdout


def _c(id_, login, body):
    return {"id": id_, "user": {"login": login}, "body": body}


def test_a_pull_request_at_another_commit_gets_no_comment(tmp_path):
    writes, out = run_comment(tmp_path, pr_head="fff999", run_head="abc123", comments=[_c(7, "github-actions[bot]", MARKER + "\nold")])
    assert writes == []
    assert "not commenting" in out


def test_the_marked_bot_comment_is_updated_and_nothing_else(tmp_path):
    comments = [
        _c(5, "github-actions[bot]", "## Pulumi preview\nsome other bot comment"),  # what --edit-last would hit
        _c(6, "mallory", MARKER + "\nplanted by a user"),
        _c(7, "github-actions[bot]", MARKER + "\nprevious plan diff"),
        _c(8, "github-actions[bot]", "a later, unrelated bot comment"),
    ]
    writes = run_comment(tmp_path, comments=comments)[0]
    ((method, path, body),) = writes
    assert (method, path) == ("PATCH", "repos/o/r/issues/comments/7")
    assert body.startswith(MARKER + "\n### plan diff")


def test_without_a_marked_comment_a_new_one_is_created(tmp_path):
    comments = [_c(5, "github-actions[bot]", "## Pulumi preview"), _c(6, "mallory", MARKER)]
    ((method, path, body),) = run_comment(tmp_path, comments=comments)[0]
    assert (method, path) == ("POST", "repos/o/r/issues/42/comments")
    assert body.startswith(MARKER)


def test_a_non_numeric_pr_number_posts_nothing(tmp_path):
    writes, out = run_comment(tmp_path, pr_number="../../x")
    assert writes == [] and "no pull request number" in out


def test_readme_documents_the_oidc_subject_of_every_deploy_environment():
    # GitHub Docs, OpenID Connect reference: a job with an environment gets
    # sub = repo:<owner>/<repo>:environment:<name>; a pull_request job repo:<owner>/<repo>:pull_request
    readme = (ROOT / "README.md").read_text()
    job = workflow("deploy.yml")["jobs"]["primary"]["with"]["environment"]
    assert job == "${{ startsWith(matrix.stack, 'prod') && 'prod' || matrix.stack }}"
    lists = stacks_mod.stacks()
    envs = {"prod" if s.startswith("prod") else s for key in stacks_mod.KEYS for s in lists[key]}
    for env in envs:
        assert f'"repo:<owner>/<repo>:environment:{env}"' in readme, env
    assert "repo:<owner>/<repo>:pull_request" in readme
    assert "pull-requests" not in workflow("deploy.yml")["permissions"]
