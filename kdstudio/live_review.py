"""The live review loop behind `kdstudio review serve`: a review tool asks for the kept student's predictions and
reports people's labels as they are given; every `every` new labels a new student is trained in the background and
the documents its selector wants next join the review project.

The project is opened only for each write and each round, never held, so that other kdstudio commands can use it
between them; people's labels wait in memory while another process holds it. Nothing depends on that memory: a
label that never reached the project is caught up from the review tool when the server starts again."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdstudio.errors import KdError, ProjectLocked
from kdstudio.interfaces import Encoder, Prediction, ReviewBackend, ReviewEvent, ReviewItem, Student
from kdstudio.live_round import LiveRound, model_version
from kdstudio.secrets import redact

# Between tries while another process holds the project: a reader (a `kdstudio` command, a test polling the file)
# holds it for tens of milliseconds, and people's labels should not wait a second behind each such glimpse.
WAIT_S = 0.1


@dataclass
class LiveSettings:
    every: int = 10  # new human labels between two students
    batch: int = 10  # documents added to the review project after each round
    backend: str = "labelstudio"


@dataclass
class Predictor:
    """A kept student with the encoder that reads texts for it: what answers the review tool's predict calls."""

    student: Student
    encoder: Encoder
    labels: list[str]
    version: str

    def predict(self, texts: Sequence[str]) -> list[Prediction | None]:
        if not texts:
            return []
        probs = self.student.predict_proba(np.asarray(self.encoder.encode(list(texts)), dtype=np.float32))
        return [Prediction(self.labels[int(p.argmax())], float(p.max()), self.version) for p in probs]


@dataclass
class LiveCounts:
    received: int = 0  # human labels that reached the project
    withdrawn: int = 0
    rounds: int = 0
    since_round: int = 0
    failures: list[str] = field(default_factory=list)


class LiveLoop:
    """One review project, served live. `start` catches up with the review tool and loads the kept student; `receive`
    (from the server's event handler) returns at once; `stop` writes what is waiting."""

    def __init__(self, directory: Path, settings: LiveSettings, say: Callable[[str], None],
                 opener: Callable[[Path], Any]) -> None:
        if settings.every < 1 or settings.batch < 0:
            raise KdError("--every must be 1 or more and --batch 0 or more")
        self.directory = directory
        self._open = opener  # Project.open: the façade, handed down so that this module sits below it
        self.settings = settings
        self.say = say
        self.counts = LiveCounts()
        self.backend: ReviewBackend | None = None
        self.project_ref = ""
        self.labels: list[str] = []
        self._events: queue.Queue[ReviewEvent] = queue.Queue()
        self._db = threading.Lock()  # one opening of the project at a time in this process
        self._predict_lock = threading.Lock()  # encoders are not promised to be thread-safe
        self._round_lock = threading.Lock()
        self._round_thread: threading.Thread | None = None
        self._round_again = False
        self._predictor: Predictor | None = None
        self._encoder: Encoder | None = None
        self._run_id: int | None = None
        self._stopping = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="kdstudio-live-writer", daemon=True)

    # -- the review tool's calls -------------------------------------------------------------------------------

    def predict(self, texts: Sequence[str]) -> list[Prediction | None]:
        predictor = self._predictor  # swapped whole by a round: a call uses one student throughout
        if predictor is None:
            return [None] * len(texts)
        with self._predict_lock:
            return predictor.predict(texts)

    def receive(self, event: ReviewEvent) -> None:
        self._events.put(event)

    def state(self) -> dict[str, Any]:
        predictor = self._predictor
        return {"status": "UP", "model_version": predictor.version if predictor else None,
                "labels_received": self.counts.received, "labels_withdrawn": self.counts.withdrawn,
                "rounds": self.counts.rounds, "waiting": self._events.qsize(),
                "training": bool(self._round_thread and self._round_thread.is_alive())}

    def app(self) -> Any:
        """The review tool's server for this session (an ASGI application), from the review backend."""
        assert self.backend is not None, "start() first"
        return self.backend.live_app(self.project_ref, self.labels, self)

    @property
    def model_version(self) -> str | None:
        return self._predictor.version if self._predictor else None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> str:
        """Catch up with the review tool (labels given or taken back while no server ran; the review project is made
        if nothing was pushed yet), load the kept student, and start the writer; a project with labels but no
        student trains its first one now. Returns what happened, in one line."""
        with self._session() as project:
            backend = project.live_reviewer(self.settings.backend)
            self.project_ref = project.review_project_ref(backend, create=True)
            self.backend, self.labels = backend, project.labels
            pulled = project.review_pull(backend=self.settings.backend)
            self._encoder = project.embedder
            self._predictor = self._kept(project)
            empty = not backend.documents(self.project_ref)
            seeded = self._cold_start(project) if empty and self._predictor is None else 0
        self._writer.start()
        first_student = self._predictor is None and not seeded  # from the labels the project has
        first_tasks = self._predictor is not None and empty  # the selector's, for an empty review project
        if first_student or first_tasks:
            self._start_round()
        return (f"caught up: {pulled.added} new labels from {pulled.location}, {pulled.withdrawn} withdrawn; "
                f"predictions from {self.model_version or 'no student yet'}"
                + (f"; {seeded} documents spread over the corpus sent to start with" if seeded else ""))

    def _cold_start(self, project: Any) -> int:
        """An empty review project and no student: people start on documents spread over the embedding space
        (Triage's cold start), blind; the first student follows their first labels."""
        items = project.triage_queue("diverse", limit=self.settings.batch)
        sent = project.review_send([ReviewItem(x.doc_id, x.text, None, None, None) for x in items],
                                   backend=self.settings.backend)
        return sent.sent

    def stop(self, wait_s: float = 30.0) -> None:
        """Stop taking events, write those waiting (once: what cannot be written is caught up at the next start)
        and let a running round finish."""
        self._stopping.set()
        if self._writer.is_alive():
            self._writer.join(wait_s)
        thread = self._round_thread
        if thread is not None:
            thread.join(wait_s)

    def _kept(self, project: Any) -> Predictor | None:
        try:
            student, record = project.load_student()
        except KdError as exc:
            self.say(f"no student to predict with yet ({exc.message})")
            return None
        if student.input != "embeddings":
            self.say(f"student {record['id']} reads texts, not vectors: predictions wait for the first live round")
            return None
        assert self._encoder is not None
        return Predictor(student, self._encoder, project.labels, model_version(record["id"], record["kind"]))

    @contextlib.contextmanager
    def _session(self, patient: bool = False) -> Iterator[Any]:
        """The project, opened for one piece of work; `patient` waits while another process holds it."""
        with self._db:
            said = False
            while True:
                try:
                    project = self._open(self.directory)
                    break
                except ProjectLocked as exc:
                    if not patient or self._stopping.is_set():
                        raise
                    if not said:
                        self.say(f"waiting for the project: {exc.message}")
                        said = True
                    time.sleep(WAIT_S)
            try:
                yield project
            finally:
                project.close()

    # -- people's labels ---------------------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            try:
                first = self._events.get(timeout=0.2)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                continue
            events = [first]
            while not self._events.empty():
                events.append(self._events.get_nowait())
            merged = ReviewEvent([x for e in events for x in e.labels], [x for e in events for x in e.withdrawn])
            try:
                with self._session(patient=True) as project:
                    added, withdrawn = project.review_receive(merged)
            except Exception as exc:  # the server stays up; the next start catches up from the tool
                self._fail(f"{len(merged.labels)} labels not written ({_reason(exc)}); the next start catches up")
                continue
            self.counts.received += added
            self.counts.withdrawn += withdrawn
            self.counts.since_round += added
            if self.counts.since_round >= self.settings.every and not self._stopping.is_set():
                self._start_round()

    def _fail(self, line: str) -> None:
        self.counts.failures.append(line)
        self.say(line)

    # -- rounds ------------------------------------------------------------------------------------------------

    def _start_round(self) -> None:
        """A round in the background; one that is asked for while another runs follows it."""
        with self._round_lock:
            self.counts.since_round = 0
            if self._round_thread is not None and self._round_thread.is_alive():
                self._round_again = True
                return
            self._round_thread = threading.Thread(target=self._rounds, name="kdstudio-live-round", daemon=True)
            self._round_thread.start()

    def _rounds(self) -> None:
        while True:
            try:
                self._round()
            except Exception as exc:  # a failed round leaves the last student serving
                self._fail(f"no new student this round: {_reason(exc)}")
            with self._round_lock:
                if not self._round_again or self._stopping.is_set():
                    return
                self._round_again = False

    def _round(self) -> LiveRound:
        backend = self.backend
        assert backend is not None and self._encoder is not None
        in_review = backend.documents(self.project_ref)
        with self._session(patient=True) as project:
            done = project.live_round(self._run_id, self.settings.batch, in_review, backend.name)
            pushed = project.review_send(done.picked, backend=self.settings.backend)
        self._run_id = done.run_id
        self._predictor = Predictor(done.student, self._encoder, self.labels, done.model_version)
        predicted = backend.predict_open_tasks(self.project_ref, self.predict, done.model_version)
        # Counted once the review tool holds the new student's predictions: health() says a round is done only then.
        self.counts.rounds += 1
        self.say(f"round {done.round}: {done.model_version} trained on {done.n_train} labels "
                 f"({done.by_source['human']} people's, {done.by_source['teacher']} the teacher's); "
                 f"{pushed.sent} new tasks, {predicted} tasks predicted")
        return done


def _reason(exc: Exception) -> str:
    """One line for a failure in a background thread: kdstudio's own message and fix, or the exception's type."""
    if isinstance(exc, KdError):
        return exc.message + (f"; {exc.fix}" if exc.fix else "")
    return redact(f"{type(exc).__name__}: {exc}".splitlines()[0]) or type(exc).__name__
