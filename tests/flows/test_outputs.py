"""RunOutputs: the typed return value of the flows (what used to be string keys taken apart with split)."""

from linguaforge.flows.outputs import EvalUnitOutput, MindMergerOutputs, RunOutputs
from linguaforge.storage import ArtifactRef


def ref(kind: str, key: str) -> ArtifactRef:
    return ArtifactRef(kind=kind, key=key * 24, uri=f"/store/{kind}/{key * 24}", digest=key * 64)


def test_join_keeps_both_sides_and_the_right_one_wins_a_clash():
    left = RunOutputs(base_llm=ref("base_llm", "a"), deltas={"de": ref("delta", "b")})
    right = RunOutputs(deltas={"zh": ref("delta", "c")}, merged=ref("model", "d"),
                       mindmerger={"maet": MindMergerOutputs(mapping=ref("mindmerger", "e"),
                                                             augmentation=ref("mindmerger", "f"))})
    joined = left | right
    assert set(joined.deltas) == {"de", "zh"} and joined.base_llm == left.base_llm and joined.merged == right.merged
    assert left.deltas.keys() == {"de"}  # neither side is changed
    assert (joined | RunOutputs(base_llm=ref("base_llm", "g"))).base_llm.key == "g" * 24


def test_stages_list_every_output_once_and_evaluations_apart():
    outputs = RunOutputs(demo_world=ref("demo_world", "a"), corpora={"ability": ref("corpus", "b")},
                         merged=ref("model", "c"), report=ref("report", "d"),
                         mindmerger={"base": MindMergerOutputs(mapping=ref("mindmerger", "e"),
                                                               augmentation=ref("mindmerger", "f"))},
                         evaluations=[EvalUnitOutput(model="base", benchmark="mgsm", language="de",
                                                     ref=ref("eval", "g"))])
    labels = [label for label, _ in outputs.stages()]
    assert labels == ["demo_world", "corpus/ability", "merged", "mindmerger/base/mapping",
                      "mindmerger/base/augmentation", "report"]
    assert len(outputs.all_refs()) == len(labels) + 1
    back = RunOutputs.model_validate_json(outputs.model_dump_json())  # JSON in and out, no pickle
    assert [(label, r.key) for label, r in back.stages()] == [(label, r.key) for label, r in outputs.stages()]
