"""The API layer: LMI, OpenAI and TGI requests in, engine requests out, responses rendered.

It knows no transport (no FastAPI, no Starlette, no DJL worker protocol) and
no torch. Both transports sit on top of it, the HTTP server
(``djl_python.serving``) and the DJL handler (``djl_python.transformers_neuronx``);
below it is the engine (``djl_python.engine``), which knows no API.

Plan of the layer (one concept per module):

=================  ===================================================================
``errors``         ``ApiError(status, message, param)``: the one error type; each
                   transport renders it (HTTP bodies per API, DJL per-request records);
                   ``to_api_error`` maps engine refusals and server conditions onto it.
``body``           bytes -> JSON object -> pydantic model; schema errors become
                   ``InvalidRequest(<the user's field path>)``.
``chat``           THE chat message schema, THE flattener and ``render_chat`` (the
                   tokenizer's template); every chat route uses them.
``prompt``         ``PromptBuilder``: the one way from a prompt (text, token ids or
                   chat messages) to token ids; ``EngineRequest`` (ids + params + text).
``lmi``            LMI request schemas and ``parse_request`` -> ``LmiRequest`` ->
                   ``to_engine``; the chat body is ``openai.ChatCompletionRequest``.
``lmi_render``     LMI output formats: json, jsonlines, sse, tgi_compat, json_chat,
                   jsonlines_chat (via ``openai_render``), none.
``openai``         OpenAI completion / chat schemas and their translation.
``openai_render``  The one builder of OpenAI objects and chunks (usage, logprobs).
``tgi``            TGI schema, translation and renderer (tokens, details, events).
``finish``         Each API's words for the engine's ``FinishReason``.
``names``          ``served_model_name``: one rule for HTTP and DJL.
``render``         The ``Renderer`` contract every renderer keeps (feed / fail / end /
                   whole), so a transport drives all APIs with one loop.
=================  ===================================================================

Path of one request (no step goes back up a layer): transport reads bytes ->
``api`` parses and validates (4xx) -> ``PromptBuilder`` makes token ids ->
transport submits ``EngineRequest`` to the engine -> engine outputs
(``RequestOutput`` with text deltas and per-token texts) -> ``api`` renderer ->
transport writes the fragments.

Rules about what a request may contain go here, once, for both transports;
rules about a transport (HTTP limits, DJL's batch bookkeeping and record
codes) stay in that transport. Errors are raised as ``InvalidRequest`` (a
field) or ``ApiError`` (a status) and rendered by the transport.
"""
