"""The output-declaration grammar, and how the table types what no model declared."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from orchestrator.dataset.schema import TypeSyntaxError, evolve, format_type, infer_type, merge_types, parse_type
from orchestrator.declarations import ModelDeclarations
from orchestrator.errors import ConfigError

DESCRIBED = {"class": "Embedder", "conda_env_name": "ocr", "weights_names": [], "id_file_mapping": {},
             "num_gpus": 0.0, "batched": False, "split_window": None}


@pytest.mark.parametrize(("text", "arrow"), [
    ("float32", pa.float32()),
    ("list<string>", pa.list_(pa.string())),
    ("fixed_size_list<float32>[768]", pa.list_(pa.float32(), 768)),
    ("list<struct<text: string, score: float32>>", pa.list_(pa.struct([("text", pa.string()),
                                                                       ("score", pa.float32())]))),
    ("struct<box: fixed_size_list<int32>[4], tags: list<list<bool>>>",
     pa.struct([("box", pa.list_(pa.int32(), 4)), ("tags", pa.list_(pa.list_(pa.bool_())))])),
])
def test_declarations_read_as_arrow_types_and_write_back_the_same(text: str, arrow: pa.DataType) -> None:
    assert parse_type(text) == arrow and format_type(arrow) == text
    assert parse_type(text.replace(" ", "  ").replace("<", " < ")) == arrow


@pytest.mark.parametrize(("text", "message"), [
    ("float", "'float' is not a type (known: string, bool"),
    ("list<int32", "expected '>' at the end"),
    ("fixed_size_list<float32>", "needs its length as [n]"),
    ("fixed_size_list<float32>[0]", "needs its length as [n]"),
    ("struct<: int32>", "a struct field needs a name"),
    ("int32 int64", "has 'int64' after a complete type"),
    ("list<int32>!", "has characters the type grammar does not use"),
])
def test_a_declaration_the_grammar_does_not_read_says_where(text: str, message: str) -> None:
    with pytest.raises(TypeSyntaxError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_type(text)


def test_a_model_declaring_a_bad_output_type_is_named_with_the_field() -> None:
    declared = ModelDeclarations.from_dict({**DESCRIBED, "outputs": {"embedding": "fixed_size_list<float32>[8]"}})
    assert declared.outputs == {"embedding": "fixed_size_list<float32>[8]"}
    assert ModelDeclarations.from_dict(DESCRIBED).outputs is None
    with pytest.raises(ConfigError, match=r"model Embedder declares outputs\['embedding'\] = 'vector<float32>', "
                                          r"which is not a type: 'vector<float32>': 'vector' is not a type"):
        ModelDeclarations.from_dict({**DESCRIBED, "outputs": {"embedding": "vector<float32>"}})
    with pytest.raises(ConfigError, match="declares outputs = .*which is not a mapping of result field names"):
        ModelDeclarations.from_dict({**DESCRIBED, "outputs": ["embedding"]})


def test_an_embedding_is_a_fixed_size_float32_list_and_an_empty_list_stays_unknown_until_filled() -> None:
    assert infer_type(np.zeros(768, np.float32)) == pa.list_(pa.float32(), 768)
    empty = infer_type({"boxes": [], "n": 1})
    assert empty == pa.struct([("boxes", pa.list_(pa.null())), ("n", pa.int64())])
    full = infer_type({"boxes": [{"x": 1.5}], "n": 2})
    assert merge_types(empty, full) == merge_types(full, empty) == full
    assert merge_types(pa.int64(), pa.float64()) == pa.float64()
    assert merge_types(pa.list_(pa.float32(), 4), pa.list_(pa.float32(), 8)) == pa.list_(pa.float32())
    assert merge_types(pa.int64(), pa.string()) == pa.string()  # held as JSON text
    # read back from JSON, an embedding is a list of doubles: it fills nothing in, it changes nothing
    assert merge_types(pa.list_(pa.float32(), 4), infer_type([1.0, 2.0, 3.0, 4.0]), widen=False) == \
        pa.list_(pa.float32(), 4)


def test_declared_fields_keep_their_types_and_undeclared_ones_are_inferred_after_them() -> None:
    declared = {"det": {"score": pa.float32()}}
    schema = evolve(pa.schema([]), [{"det": {"extra": [], "score": 1.0}}], declared)
    schema = evolve(schema, [{"det": {"extra": ["a"], "score": 2}}, {"other": None}], declared)
    assert format_type(schema.field("det").type) == "struct<score: float32, extra: list<string>>"
    assert schema.names[-2:] == ["det", "other"] and schema.field("other").type == pa.null()
    assert schema.field("kept").type == pa.bool_()
