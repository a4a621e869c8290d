"""Structured output: recognisers of JSON prefixes and the token mask built from them.

Shared by serving (``jobs.inference``) and training (``jobs.train``); imports neither,
and nothing here imports ``service``.

Modules:
    json_prefix      JsonPrefix: is this text still the start of one JSON object?
    schema           compile_schema + SchemaPrefix: ... of one object valid under a schema
                     (the supported JSON Schema subset is in its docstring)
    response_format  parse_response_format: a job's response_format -> recogniser factory
                     (torch-free; the API process validates with it)
    logits           ConstrainedSampling: the LogitsProcessor that masks disallowed tokens
                     (imports torch)
"""
