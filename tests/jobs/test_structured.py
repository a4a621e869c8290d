"""Structured output: the schema recogniser, response_format checks, and the token mask
on a tiny model built from a config."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from jobs.structured.json_prefix import JsonPrefix
from jobs.structured.logits import ConstrainedSampling, TokenMasks, stop_token_ids, token_texts
from jobs.structured.response_format import ResponseFormatError, parse_response_format
from jobs.structured.schema import SchemaPrefix, compile_schema
from jobs.train.evaluation import greedy_completions

SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "enum": ["a", "e", "i", "o"]},
        "n": {"type": "integer"},
        "score": {"type": ["number", "null"]},
        "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "size": {"enum": [1, 10, 1.5]},
        "sub": {"type": "object", "properties": {"x": {"type": "null"}}, "required": ["x"],
                "additionalProperties": False},
    },
    "required": ["answer", "n"],
    "additionalProperties": False,
}


def json_schema(schema: dict, **extra) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, **extra}}


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("repeated key")
    return dict(pairs)


def schema_valid(text: str, schema: dict = SCHEMA) -> bool:
    """The oracle: one JSON object, no repeated keys, valid under ``schema``."""
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates)
    except ValueError:
        return False
    return jsonschema.Draft202012Validator(schema).is_valid(value)


def complete(state, text: str) -> bool:
    after = state.accepts(text)
    return after is not None and after.complete


ACCEPTED = [
    '{"answer":"a","n":-12}',
    '{ "n" : 0 , "answer" : "e" }',
    '\n{"answer": "o", "n": 7, "score": null, "ok": false, "tags": ["x", "y"]}',
    '{"answer":"i","n":3,"score":-1.5e+3,"size":10,"sub":{"x":null}}',
    '{"answer":"i","n":3,"size":1,"tags":[]}',
]
REFUSED = [
    '{"answer":"u","n":1}',            # not in the enum
    '{"answer":"a"}',                  # n is required
    '{"answer":"a","n":1.5}',          # n is an integer
    '{"answer":"a","n":01}',           # no leading zeros
    '{"answer":"a","n":1,"extra":1}',  # additionalProperties false
    '{"answer":"a","answer":"e","n":1}',  # a repeated key
    '{"answer":"a","n":1,"tags":["a","b","c"]}',  # maxItems
    '{"answer":"a","n":1,"tags":[1]}',  # items are strings
    '{"answer":"a","n":1,"size":2}',   # not in the enum
    '{"answer":"a","n":1,"sub":{}}',   # sub.x is required
    '{"answer":"a","n":1,"ok":"yes"}',  # boolean
    '["a"]',                           # the root is an object
    '{"answer":"a","n":1} x',          # nothing after the object
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_schema_recogniser_accepts_valid_objects(text):
    assert complete(SchemaPrefix(compile_schema(SCHEMA)), text)
    assert schema_valid(text)


@pytest.mark.parametrize("text", REFUSED)
def test_schema_recogniser_refuses_invalid_objects(text):
    assert not complete(SchemaPrefix(compile_schema(SCHEMA)), text)
    assert not schema_valid(text)


def test_schema_recogniser_prefixes_and_free_text():
    state = SchemaPrefix(compile_schema(SCHEMA)).accepts('{"answer":"a","tags":["hel')
    assert state is not None and not state.complete and state.free_text
    assert state.accepts("lo wor") is not None and state.accepts("lo wor").key() == state.key()
    key_state = SchemaPrefix(compile_schema(SCHEMA)).accepts('{"ans')
    assert not key_state.free_text  # a key that may still spell a declared name
    assert key_state.accepts("x") is None and key_state.accepts('wer"') is not None


def test_additional_properties_allow_extra_keys_but_not_declared_names_twice():
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    root = compile_schema(schema)
    assert complete(SchemaPrefix(root), '{"name":"x","other":[1,{"a":null}],"nam":2}')
    assert not complete(SchemaPrefix(root), '{"name":"x","name":"y"}')
    assert not complete(SchemaPrefix(root), '{"name":1}')
    # An escape could spell a declared name another way: not while the key may still be one.
    assert SchemaPrefix(root).accepts('{"nam\\u0065') is None
    typed = compile_schema({"type": "object", "additionalProperties": {"type": "integer"}})
    assert complete(SchemaPrefix(typed), '{"a":1,"b":2}')
    assert not complete(SchemaPrefix(typed), '{"a":"x"}')


def test_json_prefix_key_is_stable_inside_strings():
    state = JsonPrefix().accepts('{"a": "b')
    assert state.free_text and state.accepts("cd ef").key() == state.key()
    assert not JsonPrefix().accepts('{"a": 1').free_text


@pytest.mark.parametrize("value", [None, {"type": "text"}])
def test_text_means_no_constraint(value):
    assert parse_response_format(value) is None


def test_json_object_and_schema_give_fresh_recognisers():
    assert isinstance(parse_response_format({"type": "json_object"})(), JsonPrefix)
    new = parse_response_format(json_schema(SCHEMA, strict=True))
    a, b = new(), new()
    assert a is not b and complete(a, ACCEPTED[0])


PROPS = "json_schema.schema.properties"
REFUSALS = [
    pytest.param("nope", None, id="not-an-object"),
    pytest.param({"type": "xml"}, "type", id="unknown-type"),
    pytest.param({"type": "json_object", "schema": {}}, "schema", id="json-object-extra-field"),
    pytest.param({"type": "json_schema"}, "json_schema", id="no-json-schema"),
    pytest.param({"type": "json_schema", "json_schema": {"schema": SCHEMA}}, "json_schema.name", id="no-name"),
    pytest.param(json_schema(SCHEMA, strict="yes"), "json_schema.strict", id="strict-not-bool"),
    pytest.param(json_schema(SCHEMA, colour=1), "json_schema.colour", id="unknown-json-schema-field"),
    pytest.param(json_schema({"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}}),
                 f"{PROPS}.age.minimum", id="minimum"),
    pytest.param(json_schema({"type": "object", "properties": {"s": {"type": "string", "pattern": "^a"}}}),
                 f"{PROPS}.s.pattern", id="pattern"),
    pytest.param(json_schema({"type": "object", "properties": {"s": {"type": "string", "format": "date"}}}),
                 f"{PROPS}.s.format", id="format"),
    pytest.param(json_schema({"type": "object", "properties": {"s": {"type": "string", "minLength": 2}}}),
                 f"{PROPS}.s.minLength", id="minLength"),
    pytest.param(json_schema({"type": "object", "properties": {"s": {"$ref": "#/$defs/x"}}}),
                 f"{PROPS}.s.$ref", id="ref"),
    pytest.param(json_schema({"type": "object", "properties": {"s": {"anyOf": [{"type": "string"}]}}}),
                 f"{PROPS}.s.anyOf", id="anyOf"),
    pytest.param(json_schema({"type": "object", "oneOf": [{"required": ["a"]}]}), "json_schema.schema.oneOf",
                 id="oneOf"),
    pytest.param(json_schema({"type": "object", "properties": {"s": {"type": "string", "x-colour": 1}}}),
                 f"{PROPS}.s.x-colour", id="unknown-keyword"),
    pytest.param(json_schema({"type": "object", "properties": {"s": {"type": "strin"}}}), f"{PROPS}.s.type",
                 id="meta-schema"),
    pytest.param(json_schema({"type": "array"}), "json_schema.schema.type", id="root-not-object"),
    pytest.param(json_schema({"type": "object", "required": ["a"], "additionalProperties": False}),
                 "json_schema.schema.required.0", id="required-undeclared"),
    pytest.param(json_schema({"type": "object", "properties": {"s": {"type": "string", "items": {}}}}),
                 f"{PROPS}.s.items", id="items-on-a-string"),
    pytest.param(json_schema({"type": "object", "properties": {"s": {"type": "string", "enum": [1]}}}),
                 f"{PROPS}.s.enum.0", id="enum-value-of-wrong-type"),
    pytest.param(json_schema({"type": "object", "properties": {"s": {"enum": [[1]]}}}), f"{PROPS}.s.enum.0",
                 id="enum-value-not-scalar"),
    pytest.param(json_schema({"type": "object", "properties": {'a"b': {}}}), f'{PROPS}.a"b', id="quote-in-name"),
]


@pytest.mark.parametrize("value, param", REFUSALS)
def test_unenforceable_response_formats_are_refused_by_path(value, param):
    with pytest.raises(ResponseFormatError) as err:
        parse_response_format(value)
    assert err.value.param == param
    assert str(err.value)


def test_refusal_message_names_the_keyword():
    with pytest.raises(ResponseFormatError) as err:
        parse_response_format(json_schema({"type": "object", "properties": {"age": {"minimum": 0}}}))
    assert "'minimum' cannot be enforced" in str(err.value)


# --- the token mask on a tiny model -------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def _sample(model, tokenizer, sampling, n: int, max_new_tokens: int, seed: int = 0):
    torch.manual_seed(seed)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Answer in JSON"}], tokenize=False,
                                           add_generation_prompt=True)
    batch = tokenizer([prompt] * n, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=True, temperature=1.0,
                         logits_processor=sampling.processors(), pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    new = out[:, batch["input_ids"].shape[1]:]
    ended = (new == tokenizer.eos_token_id).any(dim=1).tolist()
    return tokenizer.batch_decode(new, skip_special_tokens=True), ended


@pytest.mark.parametrize("value", [{"type": "json_object"}, json_schema(SCHEMA)], ids=["json_object", "json_schema"])
def test_sampled_completions_are_json_by_construction(tiny, value):
    model, tokenizer = tiny
    new_state = parse_response_format(value)
    sampling = ConstrainedSampling(tokenizer, new_state, stop_token_ids(model, tokenizer))
    # 96 samples of up to 40 tokens: enough for many to close (the schema's) object and
    # many to be cut off, in about a second on a CPU.
    texts, ended = _sample(model, tokenizer, sampling, n=96, max_new_tokens=40)
    for text, stopped in zip(texts, ended, strict=True):
        state = new_state().accepts(text)
        assert state is not None, text  # always a prefix of a valid object
        if stopped:  # EOS only comes once the object is complete
            assert state.complete, text
            assert isinstance(json.loads(text), dict)
            if value["type"] == "json_schema":
                assert schema_valid(text), text
        else:
            assert not state.complete and len(tokenizer(text, add_special_tokens=False).input_ids) == 40
    assert any(ended)


def test_processor_masks_and_never_picks(tiny):
    """Allowed tokens keep their scores exactly, so generate's draw is the model's
    distribution restricted to them; everything else is -inf."""
    model, tokenizer = tiny
    new_state = parse_response_format(json_schema(SCHEMA))
    sampling = ConstrainedSampling(tokenizer, new_state, stop_token_ids(model, tokenizer))
    processor = sampling.processors()[0]
    prompt = torch.tensor([tokenizer.encode("x", add_special_tokens=False)] * 2)
    scores = torch.randn(2, model.config.vocab_size)
    first = processor(prompt, scores.clone())
    texts = token_texts(tokenizer, model.config.vocab_size)
    allowed = {t for t, text in enumerate(texts) if text and new_state().accepts(text) is not None}
    assert allowed == {t for t in range(len(texts)) if torch.isfinite(first[0, t])}
    assert torch.equal(first[0, sorted(allowed)], scores[0, sorted(allowed)])
    assert tokenizer.eos_token_id not in allowed
    # Feed "{" on both rows: the next mask follows the new state.
    brace = tokenizer.convert_tokens_to_ids("{")
    second = processor(torch.cat([prompt, torch.tensor([[brace], [brace]])], dim=1), scores.clone())
    after = new_state().accepts("{")
    assert {t for t in range(len(texts)) if torch.isfinite(second[1, t])} == {
        t for t, text in enumerate(texts) if text and after.accepts(text) is not None}


def test_complete_object_forces_eos_and_dead_end_allows_it(tiny):
    model, tokenizer = tiny
    texts = token_texts(tokenizer, model.config.vocab_size)
    masks = TokenMasks(texts, set(tokenizer.all_special_ids), tokenizer.eos_token_id, torch.device("cpu"))
    done = JsonPrefix().accepts("{}")
    assert masks.allowed(done).nonzero().flatten().tolist() == [tokenizer.eos_token_id]
    # The char tokenizer cannot spell "é": the only way out is to end the row.
    stuck = SchemaPrefix(compile_schema({"type": "object", "properties": {"k": {"enum": ["é"]}},
                                         "required": ["k"]})).accepts('{"k":"')
    assert masks.allowed(stuck).nonzero().flatten().tolist() == [tokenizer.eos_token_id]


def test_token_texts_of_the_char_tokenizer(tiny):
    model, tokenizer = tiny
    texts = token_texts(tokenizer, model.config.vocab_size + 3)
    assert texts[tokenizer.convert_tokens_to_ids("{")] == "{"
    assert texts[tokenizer.convert_tokens_to_ids(" ")] == " "
    assert all(texts[i] == "" for i in tokenizer.all_special_ids)
    assert texts[-3:] == ["", "", ""]


def test_greedy_eval_uses_the_constraint(tiny):
    model, tokenizer = tiny
    new_state = parse_response_format(json_schema(SCHEMA))
    sampling = ConstrainedSampling(tokenizer, new_state, stop_token_ids(model, tokenizer))
    rows = [{"messages": [{"role": "user", "content": f"Say {w}"}]} for w in "aeio"]
    texts = greedy_completions(model, tokenizer, rows, 40, sampling=sampling)
    free = greedy_completions(model, tokenizer, rows, 40)
    assert all(new_state().accepts(t) is not None for t in texts), texts
    assert not any(t.lstrip().startswith("{") for t in free)  # the untrained model alone never would
