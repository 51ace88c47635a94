"""Model loading: sources, pruning, vocabulary checks, saving and friendly errors (tiny models, no network)."""

from __future__ import annotations

import time

import pytest
import torch

from minillm_dash import modeling, tiny
from minillm_dash.errors import ModelLoadError, VocabularyMismatchError
from minillm_dash.modeling import ModelSource


@pytest.fixture()
def models_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILLM_DASH_MODELS", str(tmp_path / "models"))
    return tmp_path / "models"


@pytest.fixture(scope="module")
def teacher():
    model, tok = modeling.load_teacher(ModelSource.parse("tiny:0"), "cpu", torch.float32)
    return model, tok


def test_parse_sources(tmp_path):
    assert ModelSource.parse("default") == ModelSource("default")
    assert ModelSource.parse("") == ModelSource("default")
    assert ModelSource.parse("hub:HuggingFaceTB/SmolLM2-135M") == ModelSource("hub", "HuggingFaceTB/SmolLM2-135M")
    assert ModelSource.parse("HuggingFaceTB/SmolLM2-135M").kind == "hub"
    assert ModelSource.parse(str(tmp_path)) == ModelSource("local", str(tmp_path))
    assert ModelSource.parse("tiny") == ModelSource("tiny", "0")
    assert ModelSource.parse("tiny:7") == ModelSource("tiny", "7")
    assert ModelSource.parse("pruned:6") == ModelSource("pruned", keep_layers=6)
    assert ModelSource.parse("/no/such/folder").kind == "local"
    for text in ("default", "hub:a/b", "tiny:3", "pruned:2"):
        assert ModelSource.parse(ModelSource.parse(text).to_text()) == ModelSource.parse(text)
    with pytest.raises(ModelLoadError, match="whole number"):
        ModelSource.parse("pruned:six")
    with pytest.raises(ModelLoadError):
        ModelSource("nonsense")


def test_device_and_dtype():
    assert modeling.resolve_device("cpu") == torch.device("cpu")
    assert modeling.resolve_device(None).type in ("cpu", "cuda")
    assert modeling.default_dtype("cpu") == torch.float32
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            modeling.resolve_device("cuda")


def test_teacher_is_frozen(teacher):
    model, tok = teacher
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert tok.pad_token_id is not None


def test_evenly_spaced_keeps_first_and_last():
    assert modeling.evenly_spaced(30, 6) == [0, 6, 12, 17, 23, 29]
    assert modeling.evenly_spaced(4, 2) == [0, 3]
    assert modeling.evenly_spaced(4, 4) == [0, 1, 2, 3]
    assert modeling.evenly_spaced(5, 1) == [0]
    with pytest.raises(ModelLoadError, match="cannot keep 7 layers"):
        modeling.evenly_spaced(4, 7)


def test_pruned_student_copies_the_kept_layers_and_generates(teacher):
    model, tok = teacher
    student, s_tok = modeling.load_student(ModelSource.parse("pruned:2"), model, tok, "cpu", torch.float32)
    assert s_tok is tok and student.training
    assert all(p.requires_grad for p in student.parameters())
    assert student.config.num_hidden_layers == 2 and len(student.model.layers) == 2
    assert model.config.num_hidden_layers == 4 and len(model.model.layers) == 4  # teacher untouched
    for new_i, old_i in enumerate([0, 3]):
        assert student.model.layers[new_i].self_attn.layer_idx == new_i
        old_w, new_w = model.model.layers[old_i].mlp.up_proj.weight, student.model.layers[new_i].mlp.up_proj.weight
        assert torch.equal(old_w, new_w) and old_w.data_ptr() != new_w.data_ptr()
    assert torch.equal(student.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert student.lm_head.weight.data_ptr() == student.model.embed_tokens.weight.data_ptr()  # still tied
    prompt = tok(["hello"], return_tensors="pt")
    with torch.no_grad():
        out = student.generate(**prompt, max_new_tokens=8, do_sample=False, use_cache=True)
        no_cache = student.generate(**prompt, max_new_tokens=8, do_sample=False, use_cache=False)
    assert out.shape[1] > prompt.input_ids.shape[1]
    assert torch.equal(out, no_cache)


def test_tiny_student_from_another_seed(teacher):
    model, tok = teacher
    student, _ = modeling.load_student(ModelSource.parse("tiny:5"), model, tok, "cpu", torch.float32)
    assert student.config.num_hidden_layers == tiny.STUDENT_LAYERS and student.training


def test_check_compatible_refuses_other_vocabularies(teacher):
    model, tok = teacher
    other_tok = tiny.tiny_tokenizer()
    other_tok.add_tokens(["<extra>"])
    other = tiny.tiny_model(1, 2, other_tok)
    with pytest.raises(VocabularyMismatchError) as err:
        modeling.check_compatible(model, tok, other, other_tok)
    message = str(err.value)
    assert "output layer sizes differ (teacher 103, student 104)" in message
    assert "tokenizer vocabularies differ" in message and "<extra>" in message
    modeling.check_compatible(model, tok, tiny.tiny_model(2, 2), tiny.tiny_tokenizer())  # same vocab: fine


def test_check_compatible_names_special_tokens(teacher):
    model, tok = teacher
    other_tok = tiny.tiny_tokenizer()
    other_tok.eos_token = "<s>"
    with pytest.raises(VocabularyMismatchError, match="eos tokens differ"):
        modeling.check_compatible(model, tok, tiny.tiny_model(1, 2), other_tok)


def test_save_student_round_trip_as_local(teacher, models_dir):
    model, tok = teacher
    student, s_tok = modeling.load_student(ModelSource.parse("pruned:2"), model, tok, "cpu", torch.float32)
    folder = modeling.save_student(student, s_tok, "my run / #3")
    assert folder.parent == models_dir / "students" and folder.name == "my-run-3"
    assert modeling.is_complete_model_dir(folder)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folders left
    loaded, loaded_tok = modeling.load_student(ModelSource.parse(str(folder)), model, tok, "cpu", torch.float32)
    assert loaded_tok.get_vocab() == tok.get_vocab() and loaded_tok.chat_template == tok.chat_template
    ids = tok(["abc"], return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(ids).logits, student.eval()(ids).logits)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    modeling.save_student(student, s_tok, "my run / #3")  # saving again replaces the folder
    assert modeling.is_complete_model_dir(folder)


def test_missing_local_folder_names_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelLoadError, match="model folder not found") as err:
        modeling.load_teacher(ModelSource("local", str(missing)), "cpu", torch.float32)
    assert str(missing) in str(err.value)


def test_hub_id_offline_fails_quickly_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="could not load 'no-such-org/no-such-model' from the hub") as err:
        modeling.load_teacher(ModelSource.parse("no-such-org/no-such-model"), "cpu", torch.float32)
    assert "are you offline?" in str(err.value)
    assert time.perf_counter() - start < 10


def test_trust_remote_code_is_false_unless_asked(monkeypatch):
    seen: list[bool] = []

    def fake(name, **kwargs):
        seen.append(kwargs["trust_remote_code"])
        raise OSError("stop here")

    monkeypatch.setattr(modeling.AutoTokenizer, "from_pretrained", fake)
    monkeypatch.setattr(modeling.AutoModelForCausalLM, "from_pretrained", fake)
    with pytest.raises(ModelLoadError):
        modeling.load_teacher(ModelSource.parse("org/model"), "cpu", torch.float32)
    with pytest.raises(ModelLoadError):
        modeling.load_teacher(ModelSource.parse("org/model", trust_remote_code=True), "cpu", torch.float32)
    assert seen == [False, True]


def test_pruned_is_not_a_teacher():
    with pytest.raises(ModelLoadError, match="student"):
        modeling.load_teacher(ModelSource.parse("pruned:2"), "cpu", torch.float32)


def test_tiny_models_are_fast_and_deterministic():
    start = time.perf_counter()
    tok = tiny.tiny_tokenizer()
    a, b = tiny.tiny_model(3, tokenizer=tok), tiny.tiny_model(3, tokenizer=tok)
    assert time.perf_counter() - start < 1.0
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = tiny.tiny_model(4, tokenizer=tok)
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    state = torch.random.get_rng_state()
    tiny.tiny_model(5)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    text = "Hello, world!\n\tok"
    assert tok.decode(tok(text).input_ids) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id == 0 and len(tok) == a.config.vocab_size


def test_a_failed_save_leaves_nothing_behind(teacher, models_dir):
    model, tok = teacher

    class Broken:
        def save_pretrained(self, folder):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        modeling.save_student(model, Broken(), "half")
    students = models_dir / "students"
    assert list(students.iterdir()) == []  # neither the target nor a temp folder
