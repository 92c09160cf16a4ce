"""The LLM teacher: any model litellm can reach, labelling with a JSON answer constrained to the label set and
generating PGKD samples."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from kdstudio.errors import KdError
from kdstudio.interfaces import (
    CostEstimate,
    Doc,
    GeneratedSamples,
    GenerationRequest,
    Option,
    SampleWriter,
    SpendGate,
    TeachContext,
    Teacher,
    TeacherLabel,
)
from kdstudio_plugins.teachers import answers, prompts
from kdstudio_plugins.teachers.prompt_template import PromptTemplate
from kdstudio_plugins.teachers.shots import NearestExamples
from kdstudio_plugins.teachers.transport import (
    BudgetRefused,
    CallFailed,
    Completion,
    Limits,
    Pricing,
    Transport,
    litellm_module,
    run_all,
)


class LLMTeacher(Teacher, SampleWriter):
    """Any LLM through litellm (--model PROVIDER/MODEL, --api-base for local servers); JSON answers, priced calls."""

    name = "llm"
    options = (
        Option("model", str, "", "a litellm model string, e.g. openai/gpt-4o-mini or ollama/llama3.1"),
        Option("api_base", str, "", "base URL of an OpenAI-compatible server (Ollama, vLLM, llama.cpp)"),
        Option("api_key_env", str, "", "environment variable holding the API key (default: the provider's own)"),
        Option("price_in", float, None, "USD per million prompt tokens, for models litellm has no price for", low=0.0),
        Option("price_out", float, None, "USD per million completion tokens", low=0.0),
        Option("confidence", str, "auto", "where confidence comes from: auto (logprobs if the provider has "
                                          "them, else stated), logprobs, samples (k votes), verbalized",
               ("auto", "logprobs", "samples", "verbalized")),
        Option("samples", int, 5, "k answers sampled per document when confidence=samples", low=1),
        Option("temperature", float, 0.0, "sampling temperature (0.7 is used for confidence=samples if left 0)",
               low=0.0, high=2.0),
        Option("few_shot", int, 0, "labelled examples shown before each document: people's labels (and gold where "
                                   "the corpus has it), never the teacher's", low=0),
        Option("shots_by", str, "similar", "how few-shot examples are chosen: similar (for each document, the "
                                           "labelled documents nearest to it in the embedding space) or class (drawn "
                                           "once per run, balanced over the classes)", ("similar", "class")),
        Option("prompt", str, "", "a Jinja2 template of the message that asks about a document (`distill "
                                  "--prompt-file` puts a file's text here): document, labels, taxonomy, examples"),
        Option("json_mode", str, "schema", "constrain the answer: schema (JSON schema), object (any JSON), none",
               ("schema", "object", "none")),
        Option("max_tokens", int, 64, "completion tokens at most per label answer", low=1),
        Option("doc_chars", int, 4000, "characters of each document sent", low=1),
        Option("example_chars", int, 600, "characters of each few-shot example sent", low=1),
        Option("concurrency", int, 8, "requests in flight at once", low=1),
        Option("rpm", float, 0.0, "requests per minute at most (0: no limit)", low=0.0),
        Option("timeout", float, 60.0, "seconds per request", low=0.1),
        Option("max_retries", int, 5, "retries of a request after 429, 5xx, a timeout or a dropped connection",
               low=0),
        Option("parse_retries", int, 2, "new requests after an unusable answer (bad JSON, label outside the set)",
               low=0),
        Option("backoff", float, 1.0, "first backoff in seconds, doubled per retry, with jitter", low=0.0),
        Option("generate_max_tokens", int, 4096, "completion tokens at most per PGKD generation call", low=1),
        Option("generate_temperature", float, 0.8, "temperature of PGKD generation", low=0.0, high=2.0),
        Option("sample_chars", int, 600, "characters of each sample shown in a PGKD prompt", low=1),
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        if not self.model:
            raise KdError("the llm teacher needs a model", "give --model PROVIDER/MODEL, e.g. openai/gpt-4o-mini")
        if self.confidence == "samples" and self.samples < 2:
            raise KdError("confidence=samples needs samples >= 2")
        self._pricing: Pricing | None = None
        self._transport: Transport | None = None
        self._resolved_mode: str | None = None
        self._nearest: tuple[list[tuple[str, str, str]], NearestExamples | None] | None = None
        self.template = PromptTemplate(self.prompt) if self.prompt else None

    @property
    def model_name(self) -> str:
        return self.model

    # -- what is sent ----------------------------------------------------------------------------------

    @property
    def pricing(self) -> Pricing:
        if self._pricing is None:
            self._pricing = Pricing.resolve(self.model, self.price_in, self.price_out)
        return self._pricing

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            limits = Limits(concurrency=max(1, self.concurrency), rpm=self.rpm or None, timeout_s=self.timeout,
                            max_retries=self.max_retries, backoff_s=self.backoff)
            self._transport = Transport(self.model, self.api_base, self.api_key_env, limits, self.pricing)
        return self._transport

    def check_ready(self) -> None:
        self.transport.check_ready()

    def access(self) -> str:
        return self.transport.access()

    def _mode(self) -> str:
        if self._resolved_mode is None:
            mode = self.confidence
            if mode == "auto":
                supported = litellm_module().get_supported_openai_params(model=self.model) or []
                mode = "logprobs" if "logprobs" in supported else "verbalized"
            self._resolved_mode = mode
        return self._resolved_mode

    @property
    def examples_wanted(self) -> int:
        return self.few_shot

    @property
    def examples_per_document(self) -> bool:
        return self.shots_by == "similar" and self.few_shot > 0

    def _examples(self, doc: Doc, context: TeachContext) -> list[tuple[str, str]]:
        if not self.few_shot:
            return []
        if self.examples_per_document:
            if self._nearest is None or self._nearest[0] is not context.examples:
                self._nearest = (context.examples, NearestExamples.of(context))
            if self._nearest[1] is not None:
                return self._nearest[1].nearest(doc, context, self.few_shot)
        return [(text, label) for _, text, label in context.examples[:self.few_shot]]

    def _messages(self, doc: Doc, context: TeachContext, mode: str) -> list[dict[str, str]]:
        return prompts.label_messages(doc.text, context.labels, context.descriptions, self._examples(doc, context),
                                      stated_confidence=mode == "verbalized", doc_chars=self.doc_chars,
                                      example_chars=self.example_chars, template=self.template)

    def _params(self, labels: list[str], mode: str) -> dict[str, Any]:
        params: dict[str, Any] = {"max_tokens": self.max_tokens, "temperature": self.temperature}
        if self.json_mode == "schema":
            params["response_format"] = prompts.label_schema(labels, mode == "verbalized")
        elif self.json_mode == "object":
            params["response_format"] = {"type": "json_object"}
        if mode == "logprobs":
            params.update(logprobs=True, top_logprobs=min(20, max(5, len(labels))))
        if mode == "samples":
            params.update(n=self.samples, temperature=self.temperature or 0.7)
        return params

    def request(self, doc: Doc, context: TeachContext) -> dict[str, Any]:
        # What changes the answer is the cache key; how it is fetched (server, limits, timeouts) is not.
        mode = self._mode()
        return {"model": self.model, "messages": self._messages(doc, context, mode),
                "params": self._params(context.labels, mode)}

    # -- labelling -------------------------------------------------------------------------------------

    def label(self, docs: Sequence[Doc], context: TeachContext) -> Iterator[TeacherLabel]:
        mode = self._mode()
        params = self._params(context.labels, mode)

        async def one(doc: Doc) -> TeacherLabel | None:
            return await self._label_one(doc, self._messages(doc, context, mode), params, mode, context)

        for answer in run_all(list(docs), one):
            if answer is not None:
                yield answer

    async def _label_one(self, doc: Doc, messages: list[dict[str, str]], params: dict[str, Any], mode: str,
                         context: TeachContext) -> TeacherLabel | None:
        asked = await self._ask(messages, params, context.gate, lambda got: self._read(got, mode, context.labels))
        if asked is None:
            return None  # never sent: no answer, no ledger row
        paid = asked.paid
        label, probs = asked.value if asked.value is not None else (None, None)
        return TeacherLabel(doc.id, label, probs[label] if probs and label else None, probs,
                            response="\n".join(paid.contents) if paid.contents else None, tokens_in=paid.tokens_in,
                            tokens_out=paid.tokens_out, cost_usd=paid.cost_usd, latency_s=paid.latency_s,
                            error=asked.error, transient=asked.transient, attempts=max(1, paid.attempts),
                            retries=paid.retries, unusable=asked.unusable, unusable_usd=asked.unusable_usd)

    async def _ask(self, messages: list[dict[str, str]], params: dict[str, Any], gate: SpendGate,
                   read: Callable[[Completion], Any]) -> _Asked | None:
        """One request, asked again (a bounded number of times) while the answer is unusable; every try is paid
        for and counted. None when the gate refused the first request, so nothing was sent."""
        paid = Completion([], [], 0, 0, 0.0, 0, 0.0)
        asked = _Asked(None, paid, None, False)
        last = ""
        for _ in range(self.parse_retries + 1):
            try:
                got = await self.transport.complete(messages, params, gate)
            except BudgetRefused:
                if not paid.attempts:
                    return None
                # Transient: a later run with more budget asks again.
                return asked.failed(f"budget reached before a usable answer; last: {last}", True)
            except CallFailed as exc:
                paid.attempts += exc.attempts
                _add(paid.retries, exc.retries)
                return asked.failed(str(exc), exc.transient)
            paid.tokens_in += got.tokens_in
            paid.tokens_out += got.tokens_out
            paid.cost_usd += got.cost_usd
            paid.attempts += got.attempts
            paid.latency_s += got.latency_s
            paid.contents = got.contents
            _add(paid.retries, got.retries)
            try:
                asked.value = read(got)
                return asked
            except answers.BadAnswer as exc:
                last = str(exc)
                asked.unusable += 1
                asked.unusable_usd += got.cost_usd
        return asked.failed(f"unusable answer after {self.parse_retries + 1} tries: {last}", False)

    @staticmethod
    def _read(got: Completion, mode: str, labels: list[str]) -> tuple[str, dict[str, float] | None]:
        probs: dict[str, float] | None = None
        if mode == "samples":
            votes = []
            for content in got.contents:
                try:
                    votes.append(answers.parse_label(content, labels).label)
                except answers.BadAnswer:
                    continue
            if not votes:
                raise answers.BadAnswer(f"none of {len(got.contents)} sampled answers is usable")
            label = Counter(votes).most_common(1)[0][0]
            probs = answers.probs_from_votes(votes, labels)
        else:
            parsed = answers.parse_label(got.contents[0], labels)
            label = parsed.label
            if got.logprobs and got.logprobs[0]:
                probs = answers.probs_from_logprobs(got.contents[0], got.logprobs[0], labels, label)
            if probs is None and parsed.stated_confidence is not None:
                probs = answers.probs_from_stated(label, parsed.stated_confidence, labels)
        return label, probs

    # -- PGKD generation -------------------------------------------------------------------------------

    def _generation(self, request: GenerationRequest, context: TeachContext) -> tuple[list[dict[str, str]],
                                                                                        dict[str, Any]]:
        messages = prompts.generation_messages(request, context.labels, context.descriptions,
                                               sample_chars=self.sample_chars)
        params: dict[str, Any] = {"max_tokens": self.generate_max_tokens, "temperature": self.generate_temperature}
        if self.json_mode == "schema":
            params["response_format"] = prompts.generation_schema(context.labels, request.n)
        elif self.json_mode == "object":
            params["response_format"] = {"type": "json_object"}
        return messages, params

    def generation_request(self, request: GenerationRequest, context: TeachContext) -> dict[str, Any]:
        messages, params = self._generation(request, context)
        return {"model": self.model, "messages": messages, "params": params, "purpose": "generate"}

    def generate(self, request: GenerationRequest, context: TeachContext) -> GeneratedSamples | None:
        messages, params = self._generation(request, context)

        async def one(_: int) -> GeneratedSamples | None:
            asked = await self._ask(messages, params, context.gate, lambda got: answers.parse_samples(
                got.contents[0] if got.contents else "", context.labels, self.doc_chars))
            if asked is None:
                return None
            paid = asked.paid
            samples, rejected = asked.value if asked.value is not None else ([], 0)
            return GeneratedSamples(samples, rejected, paid.contents[0] if paid.contents else None, paid.tokens_in,
                                    paid.tokens_out, paid.cost_usd, paid.latency_s, asked.error, asked.transient,
                                    max(1, paid.attempts), paid.retries, asked.unusable, asked.unusable_usd)

        return next(run_all([0], one))

    # -- planning --------------------------------------------------------------------------------------

    def estimate(self, docs: Sequence[Doc], context: TeachContext, n_docs: int) -> CostEstimate:
        mode = self._mode()
        counts = [self.transport.count_tokens(self._messages(d, context, mode)) for d in docs] or [0]
        longest = max(context.labels, key=len) if context.labels else ""
        answer = json.dumps({"label": longest, **({"confidence": 0.95} if mode == "verbalized" else {})})
        tokens_out = litellm_module().token_counter(model=self.model, text=answer) * (
            self.samples if mode == "samples" else 1)
        tokens_in = sum(counts) / len(counts)
        pricing = self.pricing
        # What the gate reserves per request, exactly as transport.complete computes it, for the documents sampled
        # and for the project's shortest and longest (the least and the most any run of it can send).
        params = self._params(context.labels, mode)
        extremes = context.extreme_docs(self.doc_chars) if context.extreme_docs else []
        reserves = [self.transport.worst_case_usd(self._messages(d, context, mode), params)
                    for d in [*docs, *extremes]] or [0.0]
        return CostEstimate(n_docs, tokens_in, float(tokens_out), pricing.cost(tokens_in, tokens_out),
                            pricing.source, pricing.known, min(reserves), max(reserves), self.parse_retries + 1)

    def estimate_generation(self, request: GenerationRequest, context: TeachContext, n_calls: int) -> CostEstimate:
        messages, params = self._generation(request, context)
        tokens_in = self.transport.count_tokens(messages)
        shown = [t for t, _ in request.few_shot] or [""]
        per_sample = sum(litellm_module().token_counter(model=self.model, text=t[:self.doc_chars]) for t in shown)
        tokens_out = min(self.generate_max_tokens, request.n * (per_sample / len(shown) + 12))
        pricing = self.pricing
        reserve = self.transport.worst_case_usd(messages, params)
        return CostEstimate(n_calls, float(tokens_in), float(tokens_out), pricing.cost(tokens_in, tokens_out),
                            pricing.source, pricing.known, reserve, reserve, self.parse_retries + 1)



@dataclass
class _Asked:
    value: Any
    paid: Completion
    error: str | None
    transient: bool
    unusable: int = 0  # answers that could not be read and were asked again
    unusable_usd: float = 0.0

    def failed(self, error: str, transient: bool) -> _Asked:
        self.value, self.error, self.transient = None, error, transient
        return self


def _add(into: dict[str, int], more: dict[str, int]) -> None:
    for cause, n in more.items():
        into[cause] = into.get(cause, 0) + n
