"""Shared fixtures: tiny real models (built in code, no network) and a temporary SQLite database."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# One intra-op thread: tests that train several runs in threads otherwise oversubscribe 2 cores 10-30x.
torch.set_num_threads(1)


@pytest.fixture
def tiny_models():
    """(teacher, tokenizer): a 4-layer tiny llama teacher and its character-level tokenizer."""
    from minillm_dash import tiny

    tok = tiny.tiny_tokenizer()
    teacher = tiny.tiny_model(0, tiny.TEACHER_LAYERS, tok)
    teacher.requires_grad_(False)
    return teacher, tok


@pytest.fixture
def tmp_db(tmp_path):
    from minillm_dash.db import Database

    db = Database(f"sqlite:///{tmp_path / 'test.sqlite'}")
    yield db
    db.close()
