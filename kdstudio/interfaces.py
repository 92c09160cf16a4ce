"""What a plugin registers: small classes with a `name`, a docstring (its first line is shown by
`kdstudio plugins`) and typed `options`. The core only ever talks to these interfaces."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pyarrow as pa

# Re-exported, so that a plugin finds every base it registers in this one module.
from kdstudio.component import Component as Component
from kdstudio.component import Option as Option
from kdstudio.engine import Engine as Engine
from kdstudio.errors import KdError


@dataclass
class Selection:
    """What a selector chose: pool positions, each with the score that made it chosen (higher = more wanted)."""

    positions: list[int]
    scores: list[float]
    scored: int = 0  # candidates whose student probabilities had to be computed
    info: dict[str, Any] = field(default_factory=dict)


class SelectionContext(Protocol):
    """The view of the pool a selector gets. `score` runs the student on pool positions and counts the work."""

    n_pool: int
    n_classes: int
    labels: list[str]
    round: int
    rng: np.random.Generator
    has_student: bool

    def score(self, positions: np.ndarray) -> np.ndarray: ...

    def score_stream(self, chunks: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions, probabilities) per chunk, in order, scored lazily: on an engine the next chunks are being
        scored while the caller looks at this one; stopping early leaves the rest of the pool unscored."""
        ...

    def stream_pool(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions, probabilities) for every pool position, a bounded chunk at a time, in order: what a selector
        that ranks the whole pool reads, keeping only its top candidates. There is no whole-pool matrix of vectors
        or probabilities to ask for."""
        ...

    def top_uncertain(self, measure: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most uncertain pool positions by `measure` (kdstudio.uncertainty.MEASURES), most uncertain first, and
        their uncertainty; ties broken at random by the view's generator. Ranked a chunk at a time here, or on an
        engine's workers, which return their top candidates only: the same picks either way."""
        ...

    def vectors_at(self, positions: np.ndarray) -> np.ndarray:
        """The embeddings of some pool positions only (what a streaming selector reads)."""
        ...

    def labelled_vectors(self) -> np.ndarray: ...

    def teacher_answers(self) -> TeacherAnswers:
        """What the teacher has answered in this run so far (training and validation documents)."""
        ...


@dataclass
class TeacherAnswers:
    """The teacher's answers bought so far: document vectors, the class it said, and its confidence (NaN where it
    gave none). What a selector learns the teacher's reliability from."""

    vectors: np.ndarray
    y: np.ndarray
    confidence: np.ndarray


class Selector(Component):
    """Chooses which pool documents to send to the teacher next."""

    @abstractmethod
    def select(self, context: SelectionContext, k: int) -> Selection:
        raise NotImplementedError

    def training_weights(self, labelled: LabelledSet) -> np.ndarray | None:
        """Per-sample weights for training (LLKD); None means uniform."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What must survive a resume (e.g. adaptive thresholds)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass
class LabelledSet:
    """The training set of a round: class indices, teacher confidences, and the score each had when selected."""

    y: np.ndarray
    confidence: np.ndarray
    selection_score: np.ndarray
    human: np.ndarray
    probs: np.ndarray | None = None


@dataclass(frozen=True)
class Doc:
    id: str
    text: str


@dataclass
class TeacherLabel:
    """One teacher answer. `label` is None when the teacher failed or abstained; `error` then says why."""

    doc_id: str
    label: str | None
    confidence: float | None = None
    probs: dict[str, float] | None = None
    response: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float = 0.0
    latency_s: float | None = None
    error: str | None = None
    # A transient failure (timeout, rate limit, server error) is logged but never served from the cache: a later
    # run asks again. A bad answer (garbage, a label outside the set) was paid for and is cached as an error.
    transient: bool = False
    attempts: int = 1  # requests sent for this answer, retries and re-asks included
    retries: dict[str, int] = field(default_factory=dict)  # tries that failed and were sent again, by cause
    unusable: int = 0  # answers that came back unusable (bad JSON, a label outside the set) and were asked again
    unusable_usd: float = 0.0  # what those cost (part of cost_usd)


class SpendGate(Protocol):
    """Asked by a teacher before every request it sends: money is reserved first, settled once the answer is
    priced, so that concurrent requests can never overrun the USD budget together."""

    def reserve(self, usd: float) -> bool: ...

    def fits_later(self, usd: float) -> bool:
        """True when a refused reservation may fit once the requests in flight are settled (wait, then ask again)."""
        ...

    def settle(self, reserved: float, actual: float) -> None: ...


class OpenGate:
    """No USD budget: every reservation succeeds."""

    def reserve(self, usd: float) -> bool:
        return True

    def fits_later(self, usd: float) -> bool:
        return False

    def settle(self, reserved: float, actual: float) -> None:
        pass


@dataclass
class TeachContext:
    """What a teacher may know beyond the documents. `gold` is given to simulated teachers only;
    `difficulty` is the current student's uncertainty per document id, where a student exists; `examples` are
    labelled pool documents (id, text, label), human labels first, for few-shot prompts or calibration;
    `vectors` returns the stored embeddings of documents by id and `encode` embeds texts, both with the
    project's `embedding_model` (for teachers that work in the embedding space)."""

    labels: list[str]
    descriptions: dict[str, str] = field(default_factory=dict)
    gold: Mapping[str, str] = field(default_factory=dict)
    difficulty: dict[str, float] = field(default_factory=dict)
    examples: list[tuple[str, str, str]] = field(default_factory=list)
    # People's labels on pool documents (document id, label): never the check sample's, which grades the student.
    people: list[tuple[str, str]] = field(default_factory=list)
    gate: SpendGate = field(default_factory=OpenGate)
    vectors: Callable[[list[str]], np.ndarray] | None = None
    encode: Callable[[list[str]], np.ndarray] | None = None
    embedding_model: str | None = None
    # For teachers made of teachers (committee, cascade): ask a member through the ledger (its answers cached,
    # recorded under its own model and paid through the same gate) and get its answer per document id.
    consult: Callable[[Teacher, Sequence[Doc]], dict[str, TeacherLabel]] | None = None
    # For pricing before a run: the project's documents whose first N characters take the fewest and the most UTF-8
    # bytes (what the cheapest and the dearest request of any run would send).
    extreme_docs: Callable[[int], list[Doc]] | None = None


@dataclass
class GenerationRequest:
    """PGKD: what the teacher is shown to write new training samples aimed at the student's weaknesses.
    Sample lists hold (text, label) pairs; hard negatives are (text, true label, label the student chose
    with high confidence). `report` holds per-class validation metrics only, never validation samples."""

    n: int
    few_shot: list[tuple[str, str]]
    correct: list[tuple[str, str]]
    misclassified: list[tuple[str, str, str]]
    hard_negatives: list[tuple[str, str, str]]
    report: dict[str, dict[str, float]] | None


@dataclass
class GeneratedSamples:
    """A generation call's outcome: valid samples, and how many the teacher wrote that were unusable."""

    samples: list[tuple[str, str]]
    rejected: int = 0
    response: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float = 0.0
    latency_s: float | None = None
    error: str | None = None
    transient: bool = False
    attempts: int = 1
    retries: dict[str, int] = field(default_factory=dict)
    unusable: int = 0
    unusable_usd: float = 0.0


@dataclass
class CostEstimate:
    """What labelling `n_docs` documents would cost, from the prompts alone; nothing is sent."""

    n_docs: int
    tokens_in_per_doc: float
    tokens_out_per_doc: float
    usd_per_doc: float
    price_source: str
    priced: bool = True  # False: the price is unknown, so a USD budget cannot be enforced
    # What the USD gate reserves before a request is sent (its worst case: every prompt byte a token, the answer at
    # max_tokens), for the cheapest and the dearest document, and the requests a document may take at most (unusable
    # answers are asked again, and paid). The run's true bound is n_docs x reserve_max_usd x tries_max.
    reserve_min_usd: float = 0.0
    reserve_max_usd: float = 0.0
    tries_max: int = 1

    @property
    def usd(self) -> float:
        return self.usd_per_doc * self.n_docs

    @property
    def bound_usd(self) -> float:
        """At most this, whatever the answers: the worst case the USD gate reserves, for every try."""
        return self.reserve_max_usd * self.tries_max * self.n_docs


class Teacher(Component):
    """Labels documents; may also generate new ones (PGKD)."""

    simulated: ClassVar[bool] = False
    # A teacher made of teachers asks its members through TeachContext.consult; its own answers are verdicts that
    # cost nothing themselves (the members' calls carry the cost) and are not counted as calls.
    consults: ClassVar[bool] = False
    # Whether the ledger keeps each request (the prompt) beside its answer; a teacher whose request is just the
    # document says no, since the ledger knows the document by its id.
    log_prompts: ClassVar[bool] = True
    # Answers computed here, free and in an instant (a simulated or an offline teacher): a batch's answers are written
    # in one transaction, since a kill that loses them loses nothing that was paid for. Anything sent over the network
    # is written the moment it arrives.
    local: ClassVar[bool] = False

    @property
    def model_name(self) -> str:
        return self.name

    @property
    def wants_difficulty(self) -> bool:
        """True if the teacher reads TeachContext.difficulty (the loop only computes it then)."""
        return False

    @property
    def examples_wanted(self) -> int:
        """How many labelled examples the teacher reads from TeachContext.examples (the loop draws them once per
        run, balanced over the classes, so that prompts and thus cache keys stay the same on resume)."""
        return 0

    @property
    def examples_per_document(self) -> bool:
        """Whether the teacher chooses its examples for each document itself, from every labelled example (then
        TeachContext.examples holds them all, and `vectors` compares them)."""
        return False

    def caveats(self, context: TeachContext) -> list[str]:
        """What a person should know about how this teacher will answer with this project's settings (e.g. labels it
        only knows by name), said before a run buys anything."""
        return []

    def check_ready(self) -> None:
        """Raise KdError if the teacher cannot work at all (no key, unknown model): called before a run spends
        anything, so that it stops with one line instead of failing call after call."""

    def access(self) -> str:
        """How the teacher is reached, for a plan: where its key comes from, or that it needs none."""
        return "it runs in this process and needs no key"

    def request(self, doc: Doc, context: TeachContext) -> dict[str, Any]:
        """Everything that determines the answer: its hash is the cache key in the ledger."""
        options = {o.name: getattr(self, o.name) for o in self.options}
        return {"teacher": self.name, "options": options, "labels": context.labels, "text": doc.text}

    @abstractmethod
    def label(self, docs: Sequence[Doc], context: TeachContext) -> Iterator[TeacherLabel]:
        """Yield one answer per document as soon as it is known (in any order). A document the teacher did not
        send (its gate refused the money) gets no answer at all."""
        raise NotImplementedError

    def estimate(self, docs: Sequence[Doc], context: TeachContext, n_docs: int) -> CostEstimate:
        """The cost of labelling `n_docs` documents like `docs` (a sample of them), without sending anything."""
        return CostEstimate(n_docs, 0.0, 0.0, 0.0, "free (no paid calls)")

    def estimate_generation(self, request: GenerationRequest, context: TeachContext, n_calls: int) -> CostEstimate:
        """The cost of `n_calls` generation calls like `request`, without sending anything."""
        return CostEstimate(n_calls, 0.0, 0.0, 0.0, "free (no paid calls)")


class SampleWriter(ABC):
    """A teacher that also writes new labelled samples aimed at the student's weaknesses (PGKD). A teacher class
    implements this beside `Teacher`; the loop asks `isinstance(teacher, SampleWriter)`."""

    @abstractmethod
    def generation_request(self, request: GenerationRequest, context: TeachContext) -> dict[str, Any]:
        """The cache key of a generation call (like `Teacher.request` for a label)."""

    @abstractmethod
    def generate(self, request: GenerationRequest, context: TeachContext) -> GeneratedSamples | None:
        """Write new labelled samples; None when the gate refused the money."""

    @abstractmethod
    def estimate_generation(self, request: GenerationRequest, context: TeachContext, n_calls: int) -> CostEstimate:
        """The cost of `n_calls` generation calls like `request`, without sending anything."""


class Student(Component):
    """A small classifier trained on teacher (and human) labels. `input` says what it reads."""

    input: ClassVar[str] = "embeddings"  # or "texts"

    @abstractmethod
    def fit(self, X: Any, y: np.ndarray, n_classes: int, sample_weight: np.ndarray | None = None,
            soft_labels: np.ndarray | None = None) -> None:
        raise NotImplementedError

    @abstractmethod
    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, n_classes) probabilities over the whole label set, classes never seen included."""
        raise NotImplementedError

    @abstractmethod
    def save(self, directory: Path) -> None:
        raise NotImplementedError

    @classmethod
    @abstractmethod
    def load(cls, directory: Path) -> Student:
        raise NotImplementedError

    def onnx_graph(self, opset: int) -> Any:
        """This student as an `onnx.ModelProto` whose output "probabilities" (float [N, n_classes]) covers the
        whole label set. Its input is "embedding" (float [N, dim]) for an embeddings student, or "input_ids" and
        "attention_mask" (int64 [N, T]) for a texts student, which also implements `save_tokenizer`."""
        raise ExportUnsupported(f"student {self.name} cannot be exported to ONNX",
                                "distill with an exportable student: logreg, svm, lda, rf, gbdt or finetune")

    def save_tokenizer(self, directory: Path) -> int:
        """A texts student writes its `tokenizer.json` into `directory` and returns its maximum length."""
        raise ExportUnsupported(f"student {self.name} has no tokenizer to export")


@dataclass
class EncoderGraph:
    """An encoder as ONNX, for export: `model` maps "input_ids" and "attention_mask" (int64 [N, T]) to "embedding"
    (float [N, dim], unit length); `tokenizer` is the tokenizer.json that makes its ids. The rest tells the runtime
    how to tokenize exactly as `Encoder.encode` does."""

    model: Any
    tokenizer: Path
    max_length: int  # tokens kept per text
    max_positions: int | None = None  # the encoder's own limit (None: any length)
    special_tokens: bool = True  # whether the tokenizer adds [CLS]/[SEP]
    char_limit: int | None = None  # texts cut to this many characters before tokenizing
    batch_size: int = 16  # texts per onnxruntime call that run fastest on a CPU
    batch_tokens: int | None = None  # or: as many length-sorted texts as fit this many (padded) tokens
    details: dict[str, Any] = field(default_factory=dict)  # for the model card


class Encoder(Component):
    """Turns texts into unit-length vectors that students learn from. `key` names its vectors in the project's store:
    two encoders with the same key must give the same vectors, and vectors of different keys coexist."""

    device: str = "cpu"  # where it runs: an engine's GPU worker sets "cuda"

    def __init__(self, model: str, max_length: int, batch_size: int, **options: Any) -> None:
        super().__init__(**options)
        self.model, self.max_length, self.batch_size = model, max_length, batch_size

    @property
    @abstractmethod
    def key(self) -> str:
        raise NotImplementedError

    def load(self, on_progress: Callable[[str, int, int], None] | None = None) -> Any:
        """Make the encoder ready (loading, or building it once); `on_progress(step, done, total)` hears about slow
        steps. Called before timing or sending work to an engine."""
        return None

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32 unit-length vectors, in the order given."""
        raise NotImplementedError

    def onnx_graph(self, work: Path, opset: int) -> EncoderGraph:
        raise ExportUnsupported(f"encoder {self.name} cannot be exported to ONNX")


class ExportUnsupported(KdError):
    """The student (or the exporter) cannot produce this artifact."""


@dataclass
class ExportContext:
    """What an exporter needs besides the student: the label set, the encoder (for students that read embeddings)
    and the quantization asked for."""

    labels: list[str]
    encoder: Encoder  # the one whose vectors the student learned from
    quantize: str | None = None


@dataclass
class ExportedModel:
    """What an exporter wrote: the folder, and a description of the graph for the model card."""

    directory: Path
    files: list[str]
    details: dict[str, Any] = field(default_factory=dict)


class Exporter(Component):
    """Writes a trained student to a deployable artifact that `kdstudio.runtime` can load."""

    @abstractmethod
    def export(self, student: Student, out_dir: Path, context: ExportContext) -> ExportedModel:
        raise NotImplementedError


@dataclass
class ReviewItem:
    """A teacher label sent to people: the document, what the teacher said and how sure it was; a document of the
    check sample goes without a label (None), so that people label it blind."""

    doc_id: str
    text: str
    label: str | None
    confidence: float | None
    model: str | None


@dataclass
class HumanLabel:
    """A person's label for a document, as the review backend recorded it. `ref` is the backend's own id of the
    annotation and version, so that pulling the same annotation twice adds it once."""

    doc_id: str
    label: str
    annotator: str | None
    annotated_at: Any
    ref: str


@dataclass
class PushResult:
    project_ref: str  # the backend's id of its project, remembered by kdstudio for the next push and pull
    created: bool
    sent: int
    already_there: int


@dataclass
class PullResult:
    labels: list[HumanLabel]
    ignored: int  # skipped, cancelled, or naming a label outside the set
    # Every ref this review project can have given starts with `scope`; `present` holds the ref prefixes of the
    # annotations it holds now (see ReviewEvent), so that labels whose annotation is gone are withdrawn.
    scope: str | None = None
    present: set[str] = field(default_factory=set)


@dataclass
class ReviewEvent:
    """What a review tool reports as it happens: labels given or edited, and annotations taken back (deleted, or
    turned into a skip) as ref prefixes: every human label stored with a ref that starts with one is withdrawn."""

    labels: list[HumanLabel] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)


@dataclass
class Prediction:
    """The kept student's answer for a document, as a review tool shows it beside the text."""

    label: str
    score: float
    model_version: str


@dataclass
class ConnectResult:
    project_ref: str
    model_backend: bool  # registered now (False: it already was)
    webhook: bool


class LiveSession(Protocol):
    """What a review backend's live server calls (kdstudio.live_review.LiveLoop): the kept student's predictions,
    people's labels as they come, and its state for a health check."""

    def predict(self, texts: Sequence[str]) -> list[Prediction | None]: ...

    def receive(self, event: ReviewEvent) -> None: ...

    def state(self) -> dict[str, Any]: ...


class ReviewBackend(Component):
    """Sends teacher labels to people and brings their corrections back. Its connection comes from the
    environment; `location` says where it points (never a secret)."""

    @property
    @abstractmethod
    def location(self) -> str:
        raise NotImplementedError

    @abstractmethod
    def push(self, title: str, labels: list[str], descriptions: dict[str, str], items: Sequence[ReviewItem],
             project_ref: str | None) -> PushResult:
        """Create the review project (or reuse `project_ref`) and add the items that are not in it yet."""
        raise NotImplementedError

    @abstractmethod
    def pull(self, project_ref: str, labels: list[str]) -> PullResult:
        """Every current human label in the review project (one per document: its newest annotation)."""
        raise NotImplementedError

    # A live loop (`kdstudio review serve`) is optional: a backend that offers one sets `live` and overrides these.
    live: ClassVar[bool] = False

    def no_live_loop(self) -> KdError:
        """The refusal of a backend without a live loop, wherever one is asked for."""
        return KdError(f"the {self.name} review backend has no live loop",
                       "review with `kdstudio review push` and `pull`")

    def connect(self, project_ref: str, url: str) -> ConnectResult:
        """Register the live server at `url` with the review project: predictions from it, events to it."""
        raise self.no_live_loop()

    def live_app(self, project_ref: str, labels: list[str], session: LiveSession) -> Any:
        """The ASGI application the review tool calls: predictions, and people's labels as they are given."""
        raise self.no_live_loop()

    def documents(self, project_ref: str) -> set[str]:
        """The documents the review project holds (answered or not)."""
        raise self.no_live_loop()

    def predict_open_tasks(self, project_ref: str, predict: Callable[[Sequence[str]], list[Prediction | None]],
                           model_version: str) -> int:
        """Give every task no person has answered the student's prediction (`model_version`); returns how many."""
        raise self.no_live_loop()


@dataclass
class Doubts:
    """A judgement of training labels: `suspicion` in [0, 1] per label (higher: more likely wrong), and `flagged`,
    the labels judged wrong."""

    suspicion: np.ndarray
    flagged: np.ndarray


class LabelDoubt(Component):
    """Judges which teacher labels look wrong, from the student's out-of-fold probabilities (each label judged by a
    student that never saw it) and the teacher's own confidence. Every label doubt has the `action` option (put
    `LabelDoubt.ACTION` in its options): what training does with a label that looks wrong."""

    ACTION: ClassVar[Option] = Option("action", str, "drop", "what training does with a doubted label: drop (hold it "
                                                             "out) or weight (scale it by 1 - suspicion)",
                                      ("drop", "weight"))
    action: str = "drop"

    @abstractmethod
    def judge(self, y: np.ndarray, oof_probs: np.ndarray, confidence: np.ndarray) -> Doubts:
        """`y` class indices, `oof_probs` (n, n_classes), `confidence` the teacher's (NaN where it gave none)."""
        raise NotImplementedError


@dataclass
class FreeLabelTask:
    """A round's training data as a free labeller sees it. `pool` holds the vectors of the run's pool sample (the same
    rows every round), `pool_y` the class of each that is labelled (-1: unlabelled); `X, y, weight` are what the
    student trains on; `val_X, val_y` the labelled documents thresholds are chosen on, never trained on (the
    teacher's validation labels; with method auto, people's and gold labels where the run has them); `fit` returns a
    fresh student of the run's kind fitted on (X, y, weight)."""

    X: np.ndarray
    y: np.ndarray
    weight: np.ndarray
    n_classes: int
    pool: np.ndarray
    pool_y: np.ndarray
    val_X: np.ndarray
    val_y: np.ndarray
    fit: Callable[[np.ndarray, np.ndarray, np.ndarray], Any]


@dataclass
class FreeLabels:
    """Pseudo-labels for unlabelled pool rows (`rows` index `FreeLabelTask.pool`), each with its training weight, and a
    line saying what was added and why (shown in the round's line)."""

    rows: np.ndarray
    y: np.ndarray
    weight: np.ndarray
    note: str

    @classmethod
    def none(cls, note: str) -> FreeLabels:
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0), note)


class FreeLabeller(Component):
    """Lets the unlabelled pool teach the student for free: it proposes pseudo-labels for pool documents no teacher
    was asked about. They are training data of one round only: never stored, never counted as labels, never paid.
    Every free labeller has the `pool_sample` option (put `FreeLabeller.POOL_SAMPLE` in its options): the pool
    documents it reads, drawn once per run, so that a round's cost stops growing with the corpus."""

    POOL_SAMPLE: ClassVar[Option] = Option("pool_sample", int, 20000, "pool documents read for free labels (a "
                                                                      "random sample drawn once per run)", low=1)
    pool_sample: int = 20000

    @abstractmethod
    def pseudo_labels(self, task: FreeLabelTask) -> FreeLabels:
        raise NotImplementedError


@dataclass
class DatasetTable:
    """A dataset as one Arrow table plus how to read it: column names and the label set in order."""

    table: pa.Table
    labels: list[str]
    text_column: str = "text"
    label_column: str = "label"
    id_column: str | None = "id"
    split_column: str | None = None
    descriptions: dict[str, str] = field(default_factory=dict)  # label -> what it means, for teachers


class Dataset(Component):
    """A labelled corpus that ships inside an installed package."""

    package: ClassVar[str] = ""
    install_hint: ClassVar[str] = ""

    @abstractmethod
    def load(self) -> DatasetTable:
        raise NotImplementedError


KINDS: dict[str, type[Component]] = {
    "selector": Selector,
    "teacher": Teacher,
    "student": Student,
    "exporter": Exporter,
    "review_backend": ReviewBackend,
    "dataset": Dataset,
    "engine": Engine,
    "doubt": LabelDoubt,
    "free_labels": FreeLabeller,
    "encoder": Encoder,
}
