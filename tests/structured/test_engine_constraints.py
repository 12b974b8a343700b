"""Constrained decoding in the engine, on a tiny model and on the default SmolLM2: every output
matches its constraint, alone and in batches mixed with free requests; free requests are untouched."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import jsonschema
import pytest
from transformers import AutoTokenizer

from djl_python.backends.pytorch.backend import PyTorchBackend
from djl_python.engine import Engine, SamplingParams
from djl_python.engine.constraint import Constraint
from djl_python.engine.grammar import GrammarViolation
from djl_python.engine.request import InvalidRequest
from tests.structured.schemas import CHOICES, FLOAT_SCHEMA, MAX_NEW_TOKENS, REGEX, SCHEMAS


@pytest.fixture(scope="module")
def engine(tiny_llama_512: Path) -> Engine:
    backend = PyTorchBackend.load(tiny_llama_512, max_slots=8, n_positions=512)
    return Engine(backend, AutoTokenizer.from_pretrained(str(tiny_llama_512)))


def constrained(kind_value, seed: int, n: int = MAX_NEW_TOKENS, **kw) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, do_sample=True, temperature=1.0, seed=seed, constraint=kind_value, **kw)


def test_every_schema_validates_in_a_batch_mixed_with_free_requests(engine: Engine) -> None:
    params, expect = [], []
    for i, (name, schema) in enumerate(SCHEMAS.items()):
        params.append(constrained(Constraint.json_schema(schema, name), seed=i))
        expect.append(("json", schema))
    params.append(constrained(Constraint("regex", REGEX, "regex"), seed=1))
    expect.append(("regex", REGEX))
    params.append(constrained(Constraint.choice(CHOICES, "choice"), seed=2))
    expect.append(("choice", CHOICES))
    free = SamplingParams(max_new_tokens=12, ignore_eos=True)
    alone = engine.generate(["Hello world!"], free)[0].token_ids
    prompts = ["Hello world!"] + ["Paris is the capital"] * len(params)
    results = engine.generate(prompts, [free] + params)
    assert results[0].token_ids == alone  # a free greedy request is untouched by its constrained neighbours
    for (kind, spec), result in zip(expect, results[1:]):
        assert result.finish_reason == "eos_token", (kind, result.text)
        if kind == "json":
            jsonschema.validate(json.loads(result.text), spec)
        elif kind == "regex":
            assert re.fullmatch(spec, result.text)
        else:
            assert result.text in spec


def test_greedy_constrained_request_is_deterministic_and_cached(engine: Engine) -> None:
    c = Constraint.json_schema(SCHEMAS["bounded_numbers"], "x")
    before = engine.grammars.hits
    runs = [engine.generate(["The quick brown fox"], SamplingParams(max_new_tokens=MAX_NEW_TOKENS, constraint=c))[0]
            for _ in range(2)]
    assert runs[0].token_ids == runs[1].token_ids
    jsonschema.validate(json.loads(runs[0].text), SCHEMAS["bounded_numbers"])
    assert engine.grammars.hits >= before + 1  # the second request reused the compiled grammar


def test_a_complete_grammar_ends_the_request_even_with_ignore_eos(engine: Engine) -> None:
    c = Constraint.choice(CHOICES, "choice")
    result = engine.generate(["Hello"], SamplingParams(max_new_tokens=50, ignore_eos=True, constraint=c))[0]
    assert result.text in CHOICES and result.finish_reason == "eos_token"


def test_a_schema_that_cannot_compile_names_its_field_and_queues_nothing(engine: Engine) -> None:
    for constraint in (Constraint("regex", "a(b", "structured_outputs.regex"),
                       Constraint.json_schema({"type": "nonsense"}, "response_format.json_schema.schema"),
                       Constraint("grammar", "start: ???", "structured_outputs.grammar")):
        with pytest.raises(InvalidRequest) as refused:
            engine.add_request([1, 2, 3], SamplingParams(constraint=constraint))
        assert refused.value.field == constraint.field
    assert not engine.has_unfinished()


def test_a_token_the_grammar_refuses_fails_only_its_request(engine: Engine, monkeypatch) -> None:
    """If the mask were not applied (a backend bug), the matcher refuses the token: that request ends
    with an error naming the violation, its neighbour completes."""
    original = engine._allowed
    monkeypatch.setattr(engine, "_allowed", lambda seqs, logits: None)  # no masks: the model picks freely
    ids = [engine.add_request(engine.tokenizer.encode("Hello"), SamplingParams(
        max_new_tokens=8, constraint=Constraint("regex", "[0-9]{3}", "r"))),
           engine.add_request(engine.tokenizer.encode("Hello"), SamplingParams(max_new_tokens=4, ignore_eos=True))]
    finals = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                finals[out.request_id] = out
    monkeypatch.setattr(engine, "_allowed", original)
    assert finals[ids[0]].finish_reason == "error" and GrammarViolation.__name__ in finals[ids[0]].error
    assert finals[ids[1]].finish_reason == "length" and finals[ids[1]].generated_tokens == 4


def test_constrained_requests_never_speculate() -> None:
    from djl_python.engine.speculation import speculable

    plain = SamplingParams()
    assert speculable(plain)
    assert not speculable(dataclasses.replace(plain, constraint=Constraint.choice(["a"], "c")))


def test_smollm2_outputs_validate_for_every_schema(smollm2_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir))
    engine = Engine(PyTorchBackend.load(smollm2_dir, max_slots=8, n_positions=512), tokenizer)
    prompts, params = [], []
    schemas = {**SCHEMAS, "float": FLOAT_SCHEMA}
    for i, (name, schema) in enumerate(schemas.items()):
        messages = [{"role": "user", "content": f"Reply with JSON matching this schema: {json.dumps(schema)}"}]
        prompts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        params.append(SamplingParams(max_new_tokens=160, do_sample=bool(i % 2), temperature=0.7, seed=i,
                                     constraint=Constraint.json_schema(schema, name)))
    prompts.append("Is Paris in France? Answer yes, no or maybe:")
    params.append(SamplingParams(max_new_tokens=8, constraint=Constraint.choice(CHOICES, "choice")))
    prompts.append("The capital of France is")  # a free request in the same batch
    params.append(SamplingParams(max_new_tokens=8))
    free_alone = engine.generate(prompts[-1:], params[-1:])[0].token_ids
    results = engine.generate(prompts, params)
    for (name, schema), result in zip(schemas.items(), results):
        assert result.finish_reason == "eos_token", (name, result.text)
        jsonschema.validate(json.loads(result.text), schema)
    assert results[-2].text in CHOICES
    assert results[-1].token_ids == free_alone


def test_greedy_rows_skip_the_mask_only_when_it_changes_nothing(engine: Engine, monkeypatch) -> None:
    """A plain greedy row whose argmax the grammar accepts is not masked; the tokens are the same as
    with every row masked (on a random model the argmax is often refused, so both paths run)."""
    from djl_python.engine import engine as engine_module

    params = [SamplingParams(max_new_tokens=MAX_NEW_TOKENS, constraint=Constraint.json_schema(schema, name))
              for name, schema in SCHEMAS.items()]
    params.append(SamplingParams(max_new_tokens=MAX_NEW_TOKENS, do_sample=True, seed=5,
                                 constraint=Constraint.json_schema(SCHEMAS["nested"], "sampled")))
    prompts = ["The quick brown fox"] * len(params)
    masked_rows = []
    fill = engine.grammars.fill_masks
    monkeypatch.setattr(engine.grammars, "fill_masks", lambda ms: masked_rows.append(len(ms)) or fill(ms))
    fast = [r.token_ids for r in engine.generate(prompts, params)]
    skipped_some = sum(masked_rows)
    monkeypatch.setattr(engine_module, "plain_greedy", lambda p: False)  # every constrained row masked
    masked_rows.clear()
    slow = [r.token_ids for r in engine.generate(prompts, params)]
    assert fast == slow
    assert skipped_some < sum(masked_rows)  # the fast path computed fewer masks


def test_a_grammar_that_fails_mid_output_ends_in_error_not_stop(engine: Engine) -> None:
    """llguidance does not raise when a grammar fails while decoding: its matcher enters an error
    state whose mask allows only EOS. That must end the request as an error, not as a match."""
    # Compiles, then errors at the first mask (llguidance's internal error on an empty class).
    result = engine.generate(["Hello"], SamplingParams(max_new_tokens=10, constraint=Constraint(
        "regex", r"[^\x00-\x{10FFFF}]", "regex")))[0]
    assert result.finish_reason == "error" and result.text == ""


def test_min_tokens_with_a_constraint_is_refused_by_name() -> None:
    with pytest.raises(InvalidRequest) as refused:
        SamplingParams(min_tokens=3, max_new_tokens=10, constraint=Constraint.choice(["a"], "c"))
    assert refused.value.field == "min_tokens"


def test_every_eos_id_ends_a_grammar_where_llguidance_takes_one(tiny_llama_512: Path, monkeypatch) -> None:
    """llguidance 1.3 (Python 3.9) takes a single EOS id: the engine's other EOS ids get the same
    mask bit and are consumed as that one."""
    import llguidance.hf

    from djl_python.engine.grammar import GrammarCompiler

    real = llguidance.hf.from_tokenizer

    def one_eos(tokenizer, n_vocab=None, eos_token=None, slices=None):
        if isinstance(eos_token, list):
            raise TypeError("argument 'eos_token': 'list' object cannot be interpreted as an integer")
        return real(tokenizer, n_vocab=n_vocab, eos_token=eos_token)

    monkeypatch.setattr(llguidance.hf, "from_tokenizer", one_eos)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_512))
    compiler = GrammarCompiler(tokenizer, 512, [5, tokenizer.eos_token_id])  # the tokenizer's own EOS is primary
    matcher = compiler.matcher(Constraint("regex", "[0-9]+", "r"))
    matcher.consume(tokenizer.encode("7", add_special_tokens=False)[0])
    bits = compiler.fill_masks([matcher])[0]
    allowed = {t for t in range(512) if (int(bits[t // 32]) >> (t % 32)) & 1}
    assert {5, tokenizer.eos_token_id} <= allowed
    assert matcher.accepts(5)
    matcher.consume(5)
    assert matcher.done


def test_a_greedy_row_takes_no_shortcut_where_the_grammar_forces_bytes(smollm2_dir: Path) -> None:
    """After ``{"`` of an object whose only property is required, the grammar forces ``name"``: the mask
    allows its canonical first token alone, so only that token may skip the mask."""
    from djl_python.engine.grammar import GrammarCompiler

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir))
    compiler = GrammarCompiler(tokenizer, len(tokenizer), [tokenizer.eos_token_id])
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
              "additionalProperties": False}
    matcher = compiler.matcher(Constraint.json_schema(schema, "s", whitespace=""))
    for token in tokenizer.encode('{"', add_special_tokens=False):
        matcher.consume(token)
    bits = compiler.fill_masks([matcher])[0]
    allowed = [t for t in range(len(tokenizer)) if (int(bits[t // 32]) >> (t % 32)) & 1]
    prefix = tokenizer.convert_tokens_to_ids("n")
    assert len(allowed) == 1 and prefix not in allowed
    assert matcher.accepts(allowed[0]) and not matcher.accepts(prefix)
