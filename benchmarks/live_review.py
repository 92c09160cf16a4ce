"""The live review loop as a person meets it: how long an annotation takes to reach DuckDB, and how long a new
student takes to reach Label Studio's tasks, against a real Label Studio on this machine.

    .venv/bin/python benchmarks/live_review.py                 # bbc-news, 60 annotations, a student every 10
    .venv/bin/python benchmarks/live_review.py --labels 20     # a quick look

A bbc-news project embedded with the static encoder gets a first student from the simulated teacher (50 labels);
20 of its documents are pushed to a Label Studio started for the run (the tests' set-up: its own virtualenv,
127.0.0.1, SSRF protection off); `kdstudio review serve --every E --batch 10` runs as a child process and is
connected. Then a scripted person labels the open task the student is least sure of (Label Studio's sort by
prediction score), one at a time, with the document's gold label, through the SDK as the web page does. Measured per
annotation: from the API call's return to the label being readable in the project's DuckDB file (polled every
20 ms). Per round: from the annotation that completes a round's batch until every open task carries the new
student's prediction. Also: the new student's accuracy against gold on the rest of the pool, round by round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
OUT = ROOT / "benchmarks" / "out" / "live-review"


def make_project(directory: Path) -> list[str]:
    from kdstudio.loop import DistillConfig
    from kdstudio.project import Project

    project, _ = Project.from_dataset("bbc-news", directory)
    with project:
        project.embed(encoder="static")
        project.distill(DistillConfig(teacher="oracle", seed_size=20, batch=10, budget_labels=50, val_limit=0))
        return project.labels


def human_count(directory: Path) -> int:
    from kdstudio.errors import ProjectLocked
    from kdstudio.project import Project

    try:
        with Project.open(directory, read_only=True) as project:
            return int(project.store.con.execute("SELECT count(*) FROM labels WHERE source = 'human'"
                                                 ).fetchall()[0][0])
    except ProjectLocked:
        return -1


def health(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
        return json.loads(response.read())


def open_tasks(client, project_id: int) -> list:
    return [t for t in client.tasks.list(project=project_id, fields="all") if not t.annotations]


def least_sure(tasks: list, version: str):
    def score(task) -> float:
        mine = [p.score for p in task.predictions or [] if p.model_version == version and p.score is not None]
        return mine[0] if mine else 2.0
    return min(tasks, key=score)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=int, default=60, help="annotations the scripted person makes")
    parser.add_argument("--every", type=int, default=10)
    args = parser.parse_args()
    from label_studio_sdk import LabelStudio as Client
    from labelstudio_server import TOKEN, LabelStudio, free_port

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    directory = OUT / "bbc"
    labels = make_project(directory)
    server = LabelStudio(OUT / "label-studio").start()
    env = {"LABEL_STUDIO_URL": server.url, "LABEL_STUDIO_API_KEY": TOKEN}
    serve = None
    try:
        def run(*command: str) -> None:
            subprocess.run([sys.executable, "-m", "kdstudio", *command], env={**os.environ, **env},
                           capture_output=True, text=True, check=True)

        run("review", "push", "-p", str(directory), "--filter", "all", "--limit", "20")
        port = free_port()
        log = (OUT / "serve.log").open("w")
        serve = subprocess.Popen([sys.executable, "-m", "kdstudio", "review", "serve", "-p", str(directory), "--port",
                                  str(port), "--every", str(args.every), "--batch", "10"],
                                 env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                state = health(url)
                break
            except OSError:
                time.sleep(0.2)
        run("review", "connect", "-p", str(directory), "--url", url)
        report = person(Client(base_url=server.url, api_key=TOKEN), directory, url, labels, args, state)
    finally:
        if serve is not None:
            serve.terminate()
            serve.wait(60)
        server.stop()
    (ROOT / "benchmarks" / "out" / "live_review.json").write_text(json.dumps(report, indent=2))


def person(client, directory: Path, url: str, labels: list[str], args, state: dict) -> dict:
    from kdstudio.project import Project

    with Project.open(directory, read_only=True) as project:
        project_id = int(project.store.con.execute("SELECT external_id FROM review_projects").fetchall()[0][0])
        gold = dict(project.store.con.execute("SELECT doc_id, label FROM gold").fetchall())
    latencies, rounds, version = [], [], state["model_version"]
    for n in range(1, args.labels + 1):
        task = least_sure(open_tasks(client, project_id), version)
        answer = gold[task.data["kd_doc_id"]]
        client.annotations.create(id=task.id, result=[{"from_name": "label", "to_name": "text", "type": "choices",
                                                       "value": {"choices": [answer]}}])
        sent = time.perf_counter()
        while human_count(directory) < n:
            time.sleep(0.02)
        latencies.append(time.perf_counter() - sent)
        if n % args.every == 0:
            version, took = wait_for_round(client, project_id, url, version, sent)
            rounds.append({"labels": n, "seconds": took, "model_version": version})
            print(f"{n} labels: {version} on every open task {took:.1f} s after the {n}th annotation", flush=True)
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    waits = ", ".join(f"{r['seconds']:.1f}" for r in rounds)
    print(f"annotation -> DuckDB: median {statistics.median(latencies):.2f} s, p95 {p95:.2f} s, "
          f"max {max(latencies):.2f} s over {len(latencies)} annotations; a new student on every open task: {waits} s")
    return {"latency_s": latencies, "median_s": statistics.median(latencies), "p95_s": p95, "rounds": rounds}


def wait_for_round(client, project_id: int, url: str, version: str, since: float) -> tuple[str, float]:
    while True:
        state = health(url)
        new = state["model_version"]
        if new != version and not state["training"]:
            tasks = open_tasks(client, project_id)
            if all(any(p.model_version == new for p in t.predictions or []) for t in tasks):
                return new, time.perf_counter() - since
        time.sleep(0.1)


if __name__ == "__main__":
    main()
