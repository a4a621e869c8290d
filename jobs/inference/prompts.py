"""From a request to the rows a backend runs: prompt tokens, token caps, sampling values."""

from __future__ import annotations

from .errors import ContextLengthExceeded, InvalidRequest
from .loader import LoadedModel
from .protocol import ChatCompletionRequest, SamplingFields
from .work import RowParams


def chat_prompt_ids(model: LoadedModel, body: ChatCompletionRequest) -> tuple[int, ...]:
    """Render the messages with the model's chat template, ending with the assistant's
    turn opened, and tokenise them."""
    tok = model.tokenizer
    if not tok.chat_template:
        raise InvalidRequest(f"model {body.model} has no chat template; use /v1/completions",
                             param="model")
    text = tok.apply_chat_template(body.chat_messages(), add_generation_prompt=True, tokenize=False)
    # The template already wrote the special tokens it wants.
    return tuple(tok(text, add_special_tokens=False).input_ids)


def completion_prompt_ids(model: LoadedModel, prompt: str) -> tuple[int, ...]:
    """Tokenise a raw prompt the way the model was trained to see text (BOS included
    where the tokenizer adds one)."""
    return tuple(model.tokenizer(prompt).input_ids)


def rows_for(model: LoadedModel, body: SamplingFields, prompts: list[tuple[int, ...]]) -> list[RowParams]:
    """``body.n`` rows per prompt, prompt-major (OpenAI's choice order for list prompts).

    A prompt that leaves no room in the context, or a max_tokens that does not fit
    after it, is a 400 like OpenAI's; without max_tokens a row may run to the context end.
    """
    requested = body.requested_max_tokens()
    rows = []
    for ids in prompts:
        room = model.context_length - len(ids)
        if room <= 0:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {model.context_length} tokens; "
                f"the prompt has {len(ids)} tokens. Shorten the prompt.",
                param="messages" if isinstance(body, ChatCompletionRequest) else "prompt")
        if requested is not None and requested > room:
            param = body.max_tokens_param()
            raise ContextLengthExceeded(
                f"This model's maximum context length is {model.context_length} tokens; "
                f"the prompt has {len(ids)} tokens and {param} asks for {requested}. "
                f"Ask for at most {room}.", param=param)
        for choice in range(body.n):
            rows.append(RowParams(
                prompt_ids=ids,
                max_tokens=requested if requested is not None else room,
                temperature=body.temperature if body.temperature is not None else model.defaults.temperature,
                top_p=body.top_p if body.top_p is not None else model.defaults.top_p,
                top_k=model.defaults.top_k,
                # Choice k of a seeded request uses seed + k: reproducible, yet the n
                # choices differ from one another.
                seed=None if body.seed is None else body.seed + choice,
                stop=body.stop_list(),
                json_object=body.wants_json(),
            ))
    return rows
